// Eviction and write-back of a region's pages. Runs on whichever thread needs the memory (a
// reclaimer call from any budget consumer, flush, DontNeed), always under page_mu_.
//
// The order for a dirty page, and why:
//   1. write-protect it (if not already): from here on a store faults and its thread waits
//      in the kernel; the handler cannot serve that fault before page_mu_ is released;
//   2. copy it to registered staging and write it back (batched with other victims);
//   3. only after the write completed: MADV_DONTNEED, then uncharge the budget.
// A thread whose WP fault waited meanwhile is woken by the handler, finds the page missing
// and faults it in again, reading the bytes just written. If the write-back fails the page
// stays resident, protected and dirty (nothing is dropped that far memory does not hold).
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "common/in_farmem.h"
#include "region/region.h"
#include "region/region_constants.h"
#include "region/runs.h"

namespace farmem {

using region::for_each_run;
using region::kPageSize;

namespace {

/// Counts a reclaim in progress for the lifetime of the guard (see Impl::~Impl).
class InFlight {
 public:
  explicit InFlight(std::atomic<int>& n) : n_(n) { n_.fetch_add(1, std::memory_order_acq_rel); }
  ~InFlight() { n_.fetch_sub(1, std::memory_order_acq_rel); }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

 private:
  std::atomic<int>& n_;
};

}  // namespace

std::uint64_t Region::Impl::reclaim(std::uint64_t bytes) {
  InFlight guard(reclaims_in_flight);
  InFarmemScope in_farmem;
  // At least half the reserve: an eviction pass costs a TLB shootdown whatever its size, so
  // a fault that had to evict inline leaves room for the next ones too.
  const std::size_t want = std::max({static_cast<std::size_t>((bytes + kPageSize - 1) / kPageSize),
                                     region::kMinReclaimPages,
                                     static_cast<std::size_t>(reserve_bytes() / kPageSize / 2)});
  std::lock_guard lock(page_mu_);
  // One pick and one drop for the whole request: MADV_DONTNEED costs a TLB shootdown (an IPI
  // to every CPU running this process's threads), so fewer, larger drops are much cheaper.
  // Write-back still goes in batches of kWriteBackBatchPages (write_back_locked).
  return evict_locked(want) * kPageSize;
}

std::size_t Region::Impl::evict_locked(std::size_t want) {
  victims.clear();
  table.pick_victims(
      want,
      [&](std::uint32_t p) {  // second chance: re-protect a dirty page to see its next write
        if (table.has(p, region::kDirty) && !table.has(p, region::kWriteProtected) &&
            uffd.write_protect(page_addr(p), kPageSize, true).ok()) {
          table.set(p, region::kWriteProtected);
        }
      },
      victims);
  std::sort(victims.begin(), victims.end());
  dirty_victims.clear();
  for (std::uint32_t p : victims) {
    if (table.has(p, region::kDirty)) dirty_victims.push_back(p);
  }
  if (!dirty_victims.empty()) {
    if (Status st = write_back_locked(dirty_victims); !st.ok()) {
      log().warn("region: eviction write-back of {} pages failed, they stay resident: {}",
                 dirty_victims.size(), st.to_string());
      for (std::uint32_t p : dirty_victims) table.enqueue(p);
      std::erase_if(victims, [&](std::uint32_t p) { return table.has(p, region::kDirty); });
    }
  }
  drop_locked(victims);
  return victims.size();
}

Status Region::Impl::protect_runs_locked(std::span<const std::uint32_t> sorted) {
  unprotected.clear();
  for (std::uint32_t p : sorted) {
    if (!table.has(p, region::kWriteProtected)) unprotected.push_back(p);
  }
  Status first;
  for_each_run(unprotected, [&](std::size_t i, std::size_t n) {
    Status st = uffd.write_protect(page_addr(unprotected[i]), n * kPageSize, true);
    if (!st.ok()) {
      if (first.ok()) first = st;
      return;
    }
    for (std::size_t k = i; k < i + n; ++k) table.set(unprotected[k], region::kWriteProtected);
  });
  return first;
}

Status Region::Impl::write_back_locked(std::span<const std::uint32_t> sorted_dirty) {
  for (std::size_t base = 0; base < sorted_dirty.size(); base += region::kWriteBackBatchPages) {
    auto chunk = sorted_dirty.subspan(
        base, std::min(region::kWriteBackBatchPages, sorted_dirty.size() - base));
    FARMEM_RETURN_IF_ERROR(protect_runs_locked(chunk));  // step 1: no store slips in now
    wb_batch.clear();
    std::uint64_t bytes = 0;
    for (std::size_t i = 0; i < chunk.size(); ++i) {
      std::memcpy(wb_staging.data() + i * kPageSize, page_addr(chunk[i]), page_bytes(chunk[i]));
      bytes += page_bytes(chunk[i]);
    }
    for_each_run(chunk, [&](std::size_t i, std::size_t n) {
      const std::size_t run_bytes = (n - 1) * kPageSize + page_bytes(chunk[i + n - 1]);
      wb_batch.write(page_far(chunk[i]), wb_staging.subspan(i * kPageSize, run_bytes));
    });
    Status st = io.submit(wb_batch);
    if (st.ok()) st = io.wait(wb_batch);
    if (!st.ok()) {
      counters.add(counters.writeback_errors);
      return st.with_context("writing back " + std::to_string(chunk.size()) + " dirty pages");
    }
    for (std::uint32_t p : chunk) table.clear(p, region::kDirty);  // clean, still protected
    counters.add(counters.writebacks, chunk.size());
    counters.add(counters.bytes_written, bytes);
  }
  return Status::Ok();
}

void Region::Impl::drop_locked(std::span<const std::uint32_t> sorted) {
  std::size_t dropped = 0;
  for_each_run(sorted, [&](std::size_t i, std::size_t n) {
    if (::madvise(page_addr(sorted[i]), n * kPageSize, MADV_DONTNEED) != 0) {
      log().error("region: MADV_DONTNEED of {} pages failed: {}", n, std::strerror(errno));
      for (std::size_t k = i; k < i + n; ++k) table.enqueue(sorted[k]);  // still resident
      return;
    }
    for (std::size_t k = i; k < i + n; ++k) {
      const std::uint8_t f = table.flags(sorted[k]);
      if (f & region::kPrefetched) {
        counters.add(counters.prefetches_wasted);
        if (f & region::kFromStream) {
          stream_wasted_pending.fetch_add(1, std::memory_order_relaxed);
        }
      }
      table.remove(sorted[k]);
    }
    dropped += n;
  });
  counters.add(counters.evictions, dropped);
  budget.uncharge(dropped * kPageSize);  // only now: the memory is really gone
}

}  // namespace farmem
