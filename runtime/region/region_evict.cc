// A region as a front end of the paging core: how its victims are isolated, staged and
// unmapped. The pager (paging/pager.h) picks them (CLOCK), writes the dirty ones back in
// batches and frees their frames; it calls these with page_mu_ held for the whole pass.
//
// The order for a dirty page, and why:
//   1. write-protect it (isolate, if not already): from here on a store faults and its
//      thread waits in the kernel; the handler cannot serve that fault before page_mu_ is
//      released;
//   2. copy it to registered staging (stage) and write it back (the pager, batched);
//   3. only after the write completed: MADV_DONTNEED (drop), then the pager uncharges.
// A thread whose WP fault waited meanwhile is woken by the handler, finds the page missing
// and faults it in again, reading the bytes just written. If the write-back fails the page
// stays resident, protected and dirty (nothing is dropped that far memory does not hold).
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/dcheck.h"
#include "common/log.h"
#include "common/sanitizers.h"
#include "region/region.h"
#include "region/region_constants.h"
#include "paging/runs.h"

namespace farmem {

using paging::for_each_run;
using region::kPageSize;

namespace {

// Debug builds, at the start of a pass (page_mu_ held): the pager's present frames and the
// table's resident pages are the same pages, each resident page in the frame keyed by it; and
// no frame is kLoading, since a region binds and installs a frame in one step under page_mu_
// (install_page_locked). O(frames), sampled by dcheck_due.
void check_pages_locked(const Region::Impl& r) {
  if constexpr (kDcheckOn) {
    static std::atomic<std::uint64_t> calls{0};
    if (!dcheck_due(calls, r.pager->frames())) return;
    std::size_t present = 0;
    for (std::uint32_t f = 0; f < r.pager->frames(); ++f) {
      const paging::FrameState s = r.pager->state(f);
      FARMEM_DCHECK_MSG(s != paging::FrameState::kLoading, "region frame {} is kLoading", f);
      if (s != paging::FrameState::kPresent) continue;
      ++present;
      const std::uint64_t page = r.pager->key_of(f);
      FARMEM_DCHECK_LT(page, r.pages);
      FARMEM_DCHECK_MSG(r.table.has(page, region::kResident) && r.table.frame(page) == f,
                        "frame {} holds page {}, which the table maps to frame {}", f, page,
                        r.table.frame(page));
    }
    FARMEM_DCHECK_EQ(present, r.table.resident_pages());
  }
}

}  // namespace

bool Region::Impl::charge_fault_page() {
  // One round of inline eviction at most: the fault path's own retry (with backoff) and the
  // background evictor take it from there.
  return pager->charge_pages(1, std::chrono::steady_clock::now()).ok();
}

void Region::Impl::install_page_locked(std::size_t page, bool dirty, bool referenced,
                                       std::uint32_t stream, bool write_protected) {
  const std::uint32_t frame = pager->install_charged(page, dirty, referenced, stream);
  table.install(page, frame, write_protected ? region::kWriteProtected : 0);
}

void Region::Impl::lock_pages() {
  page_mu_.lock();
  second_chances.clear();
}

void Region::Impl::on_second_chance(std::uint32_t frame, std::uint64_t page) {
  FARMEM_DCHECK_EQ(table.frame(page), frame);
  // A dirty page is re-protected so that its next write is seen as an access again; in runs,
  // at isolate(), because each protection change is a TLB shootdown.
  if (pager->dirty(frame) && !table.has(page, region::kWriteProtected)) {
    second_chances.push_back(static_cast<std::uint32_t>(page));
  }
}

void Region::Impl::isolate(std::span<paging::Victim> victims, bool /*for_flush*/) {
  check_pages_locked(*this);
  for (const paging::Victim& v : victims) {  // the pager's frame is the page's frame
    FARMEM_DCHECK_MSG(table.has(v.key, region::kResident) && table.frame(v.key) == v.frame,
                      "victim page {} in frame {}, the table says {}", v.key, v.frame,
                      table.frame(v.key));
  }
  if (!second_chances.empty()) {
    std::sort(second_chances.begin(), second_chances.end());
    (void)protect_runs_locked(second_chances);  // best effort: only loses access information
    second_chances.clear();
  }
  // Clean pages are write-protected already (mapped so, or protected by an earlier
  // write-back); dirty ones get protected now, so no store slips in during the copy.
  pass_pages.clear();
  for (const paging::Victim& v : victims) {
    if (pager->dirty(v.frame)) pass_pages.push_back(static_cast<std::uint32_t>(v.key));
  }
  if (pass_pages.empty()) return;
  if (Status st = protect_runs_locked(pass_pages); !st.ok()) {
    log().warn("region: write-protecting victims failed, they stay: {}", st.to_string());
    for (paging::Victim& v : victims) {
      if (!table.has(v.key, region::kWriteProtected)) v.keep = true;
    }
  }
}

void Region::Impl::stage(std::span<const paging::Victim> victims,
                         std::span<std::span<const std::byte>> sources) {
  FARMEM_DCHECK_LE(victims.size() * kPageSize, wb_staging.size());  // write_back_batch fits
  for (std::size_t i = 0; i < victims.size(); ++i) {
    const std::size_t p = victims[i].key;
    std::byte* dst = wb_staging.data() + i * kPageSize;
    {
      // The page is write-protected (isolate) and its stores happened before that in the
      // kernel's order; TSan sees no user-space synchronisation with the storing threads.
      TsanIgnoreAccesses ordered_by_write_protection;
      std::memcpy(dst, page_addr(p), page_bytes(p));
    }
    tsan_note_write(dst, page_bytes(p));  // the staging buffer is ours: its races still count
    sources[i] = {dst, page_bytes(p)};
    table.note_written(p);  // from its drop on, a fault reads it (before: zeros)
  }
}

void Region::Impl::drop(std::span<paging::Victim> victims) {
  // Victims come sorted by page: one MADV_DONTNEED a run. Each is a TLB shootdown (an IPI to
  // every CPU running this process's threads), so fewer, larger drops are much cheaper.
  pass_pages.clear();
  for (const paging::Victim& v : victims) {
    FARMEM_DCHECK_EQ(table.frame(v.key), v.frame);  // isolated, kept resident since
    pass_pages.push_back(static_cast<std::uint32_t>(v.key));
  }
  // The callback runs right here, under page_mu_; it reads the scratch through this span,
  // since the analysis checks a lambda as a function that holds nothing.
  const std::span<const std::uint32_t> run_pages = pass_pages;
  for_each_run(run_pages, [&](std::size_t i, std::size_t n) {
    // run_pages[i] is victims[i]: the run is victims[i .. i + n).
    if (::madvise(page_addr(run_pages[i]), n * kPageSize, MADV_DONTNEED) != 0) {
      log().error("region: MADV_DONTNEED of {} pages failed: {}", n, std::strerror(errno));
      for (std::size_t k = i; k < i + n; ++k) victims[k].keep = true;  // still resident
      return;
    }
    for (std::size_t k = i; k < i + n; ++k) table.remove(run_pages[k]);
  });
}

Status Region::Impl::protect_runs_locked(std::span<const std::uint32_t> sorted) {
  unprotected.clear();
  for (std::uint32_t p : sorted) {
    if (!table.has(p, region::kWriteProtected)) unprotected.push_back(p);
  }
  Status first;
  const std::span<const std::uint32_t> runs = unprotected;  // read under page_mu_, as in drop()
  for_each_run(runs, [&](std::size_t i, std::size_t n) {
    Status st = uffd.write_protect(page_addr(runs[i]), n * kPageSize, true);
    if (!st.ok()) {
      if (first.ok()) first = st;
      return;
    }
    for (std::size_t k = i; k < i + n; ++k) table.set(runs[k], region::kWriteProtected);
  });
  return first;
}

}  // namespace farmem
