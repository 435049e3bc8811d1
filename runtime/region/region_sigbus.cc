// Faulting-thread mode (FaultMode::kFaultingThread): the region's userfaultfd has
// UFFD_FEATURE_SIGBUS, so a fault raises SIGBUS on the faulting thread and region/sigbus.cc
// calls serve_sigbus() there, in signal context.
//
// The signal path allocates nothing (staging slots and their IoBatches are made and warmed
// at start) and takes only locks the interrupted code cannot hold: when that code is inside
// a farmem call (inside_farmem()), which may hold a transport's or pool's lock, the
// fault is handed to the region's helper (handler) thread through a fixed mailbox and the
// faulting thread waits on a futex in the handler. Region locks (page_mu_) are never held
// while a region page is touched, so a fault can never interrupt their holder.
//
// The signal path never evicts: it charges from free room (the reserve kept by the evictor)
// and hands the fault off when there is none; the helper may then evict inline.
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/dcheck.h"
#include "common/log.h"
#include "common/in_farmem.h"
#include "region/region.h"
#include "region/region_constants.h"
#include "paging/runs.h"

namespace farmem {

using region::Handoff;
using region::kPageSize;
using Clock = std::chrono::steady_clock;

namespace {

std::uint32_t* futex_word(std::atomic<std::uint32_t>& a) {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  return reinterpret_cast<std::uint32_t*>(&a);
}

void futex_wait(std::atomic<std::uint32_t>& a, std::uint32_t while_value) {
  ::syscall(SYS_futex, futex_word(a), FUTEX_WAIT_PRIVATE, while_value, nullptr, nullptr, 0);
}

void futex_wake_all(std::atomic<std::uint32_t>& a) {
  ::syscall(SYS_futex, futex_word(a), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
}

}  // namespace

Status Region::Impl::start_faulting_mode() {
  free_slots.store((1u << region::kFaulterSlots) - 1, std::memory_order_release);
  static_assert(region::kFaulterSlots <= 32, "free_slots is a 32-bit mask");
  // Warm each slot's batch with a real read, so its vectors have their capacity before the
  // signal path reuses them (the signal path must not allocate).
  // The read is as large as the slot's largest (demand + readahead), so that it splits into
  // as many transport ops as any later one.
  const std::size_t warm_bytes = std::min<std::size_t>(faulter_slots[0].staging.size(), far.bytes);
  for (region::FaulterSlot& slot : faulter_slots) {
    slot.batch.clear();
    slot.batch.read(page_far(0), slot.staging.first(warm_bytes));
    FARMEM_RETURN_IF_ERROR(io.submit(slot.batch).with_context("warming a faulter slot"));
    FARMEM_RETURN_IF_ERROR(io.wait(slot.batch).with_context("warming a faulter slot"));
    slot.batch.clear();
  }
  FARMEM_RETURN_IF_ERROR(region::register_sigbus_range(mem.data(), mem.size(), this));
  sigbus_registered = true;
  return Status::Ok();
}

region::FaulterSlot* Region::Impl::claim_slot() {
  std::uint32_t mask = free_slots.load(std::memory_order_acquire);
  while (mask != 0) {
    const int i = __builtin_ctz(mask);
    if (free_slots.compare_exchange_weak(mask, mask & ~(1u << i), std::memory_order_acq_rel)) {
      return &faulter_slots[static_cast<std::size_t>(i)];
    }
  }
  return nullptr;
}

void Region::Impl::release_slot(region::FaulterSlot* slot) {
  const auto i = static_cast<std::uint32_t>(slot - faulter_slots.data());
  FARMEM_DCHECK_LT(i, region::kFaulterSlots);
  [[maybe_unused]] const std::uint32_t was =
      free_slots.fetch_or(1u << i, std::memory_order_acq_rel);
  FARMEM_DCHECK_MSG((was & (1u << i)) == 0, "faulter slot {} released twice", i);
}

bool Region::Impl::serve_sigbus(std::uintptr_t addr, bool write) {
  if (inside_farmem()) return hand_off(addr, write);
  const std::size_t page = page_of(addr);
  const std::uint8_t f = table.flags(page);
  if (f & region::kResident) {
    // Resident yet faulting: a store to a write-protected page (or a race with a mapping
    // that just completed, then the retried access simply succeeds).
    if (f & region::kWriteProtected) unprotect_for_write(page);
    return true;
  }
  if (serve_on_faulter(page, write)) return true;
  return hand_off(addr, write);
}

bool Region::Impl::serve_on_faulter(std::size_t page, bool write) {
  const auto t0 = Clock::now();
  // No free room: evicting is the helper's job (the failed take woke the evictor too).
  if (!pager->try_charge_pages(1)) return false;
  region::FaulterSlot* slot = claim_slot();
  if (slot == nullptr) {
    pager->uncharge_pages(1);
    return false;
  }
  const bool streaming = options.prefetch && options.max_prefetch_pages > 0 &&
                         wanted_hint.load(std::memory_order_relaxed) != paging::Hint::kRandom;
  // A stream reaching the marker page of the window the helper fetched: only this page is
  // fetched here, and the next window is posted to the helper (pipelined readahead).
  const bool at_marker =
      streaming && ra_marker.load(std::memory_order_relaxed) == static_cast<std::int64_t>(page);
  // A stream starting (the previous fault ended just before this page): a window is fetched
  // here at once, and the next one posted.
  const bool starting = streaming && !at_marker &&
                        last_faulter_page.load(std::memory_order_relaxed) + 1 ==
                            static_cast<std::int64_t>(page);
  std::size_t ahead = 0;
  while (starting && ahead < options.max_prefetch_pages && page + ahead + 1 < pages &&
         !table.has(page + ahead + 1, region::kResident) && pager->try_charge_pages(1)) {
    ++ahead;
  }
  const Status st = fetch_install(slot->staging, slot->batch, page, ahead, write);
  release_slot(slot);
  if (!st.ok()) return false;  // the helper retries it with backoff
  last_faulter_page.store(static_cast<std::int64_t>(page + ahead), std::memory_order_relaxed);
  if (starting) ra_window_end.store(static_cast<std::int64_t>(page + ahead));
  if (starting || at_marker) post_readahead(write);
  counters.record_fault(static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
  return true;
}

void Region::Impl::post_readahead(bool write) {
  // The window after the last one: the helper fetches all of it but its marker, 3/4 in. The
  // stream's fault on the marker posts the following window while a quarter of this one is
  // still ahead of it, so the stream never waits at a window boundary.
  const std::int64_t first = ra_window_end.load() + 1;
  const std::uint64_t count = options.max_prefetch_pages;
  if (first <= 0 || static_cast<std::size_t>(first) >= pages) return;
  ra_window_end.store(first + static_cast<std::int64_t>(count) - 1);
  ra_marker.store(first + static_cast<std::int64_t>(count * 3 / 4));
  readahead_request.store(region::pack_readahead(static_cast<std::uint64_t>(first), count, write),
                          std::memory_order_release);
  wake_handler();  // write(2) to an eventfd: async-signal-safe
}

void Region::Impl::serve_readahead_on_handler() {
  const std::uint64_t req = readahead_request.exchange(0, std::memory_order_acq_rel);
  if (req == 0) return;
  const auto [first, count, write] = region::unpack_readahead(req);
  const std::size_t marker = first + count * 3 / 4;
  charged.clear();
  for (std::size_t p = first; p < std::min<std::size_t>(pages, first + count); ++p) {
    if (p == marker || table.has(p, region::kResident) || !table.written(p)) continue;  // fresh: zeros
    if (!pager->try_charge_pages(1)) break;  // readahead never evicts
    charged.push_back(static_cast<std::uint32_t>(p));
  }
  if (charged.empty()) return;
  prefetch_batch.clear();
  paging::for_each_run(charged, [&](std::size_t i, std::size_t n) {
    const std::size_t bytes = (n - 1) * kPageSize + page_bytes(charged[i + n - 1]);
    prefetch_batch.read(page_far(charged[i]), fetch_staging.subspan((1 + i) * kPageSize, bytes));
  });
  const std::uint64_t epoch = table.epoch();
  Status st = io.submit(prefetch_batch);
  if (st.ok()) st = io.wait(prefetch_batch);
  if (!st.ok()) {  // optional work: the stream faults the pages in itself
    pager->uncharge_pages(static_cast<std::uint32_t>(charged.size()));
    return;
  }
  const bool install_write = write;  // clang 14 cannot capture a structured binding
  paging::for_each_run(charged, [&](std::size_t i, std::size_t n) {
    install_run_on_handler(std::span<const std::uint32_t>(charged).subspan(i, n),
                           fetch_staging.data() + (1 + i) * kPageSize, install_write,
                           paging::kNoStream, epoch);
  });
  pager->note_prefetch_issued(charged.size());
}

Status Region::Impl::fetch_install(std::span<std::byte> staging_area, IoBatch& batch,
                                   std::size_t page, std::size_t ahead, bool write) {
  std::size_t n = 1 + ahead;
  // The epoch before the pages' fresh-ness is read (page_table.h). The run is cut where the
  // fresh-ness changes: a fresh run is mapped zeroed (and dirty) without a read, a written
  // one is read.
  const std::uint64_t epoch = table.epoch();
  const bool fresh = !table.written(page);
  for (std::size_t k = 1; k < n; ++k) {
    if (table.written(page + k) == fresh) {
      pager->uncharge_pages(static_cast<std::uint32_t>(n - k));
      n = k;
      break;
    }
  }
  const std::size_t bytes = (n - 1) * kPageSize + page_bytes(page + n - 1);
  if (fresh) {
    std::memset(staging_area.data(), 0, n * kPageSize);
  } else {
    batch.clear();
    batch.read(page_far(page), staging_area.first(bytes));
    Status st = io.submit(batch);
    if (st.ok()) st = io.wait(batch);
    if (!st.ok()) {
      pager->uncharge_pages(static_cast<std::uint32_t>(n));
      counters.add(counters.fetch_errors);
      return st;
    }
    if (bytes < n * kPageSize) {  // past the far range's end: zeros, not stale staging
      std::memset(staging_area.data() + bytes, 0, n * kPageSize - bytes);
    }
  }
  MutexLock lock(page_mu_);
  if (table.dropped_since(page, epoch)) {
    // Mapped by another thread (a readahead, a pull), perhaps written to and written back, and
    // unmapped while this read was in flight: these bytes may be older than far memory's.
    // Nothing is mapped; the access faults again and reads the new bytes.
    counters.add(counters.stale_fetches);
    pager->uncharge_pages(static_cast<std::uint32_t>(n));
    return Status::Ok();
  }
  // Another thread may have mapped some of the pages ahead meanwhile, or mapped and unmapped
  // them (stale, as above): stop before them.
  for (std::size_t k = 1; k < n; ++k) {
    if (table.has(page + k, region::kResident) || table.dropped_since(page + k, epoch)) {
      pager->uncharge_pages(static_cast<std::uint32_t>(n - k));
      n = k;
      break;
    }
  }
  // A store maps the pages writable and dirty at once (a write stream takes no WP fault);
  // a load maps them write-protected, so that the first store is seen. Fresh pages are
  // dirty either way: far memory gets their zeros at eviction.
  const bool dirty = write || fresh;
  auto out = uffd.copy(page_addr(page), staging_area.data(), n * kPageSize, !dirty);
  if (!out.ok() || *out != region::CopyOutcome::kInstalled) {
    pager->uncharge_pages(static_cast<std::uint32_t>(n));
    return out.ok() ? Status::Ok() : out.status();  // already present: the retry succeeds
  }
  install_page_locked(page, dirty, /*referenced=*/true, paging::Pager::kDemand, !dirty);
  for (std::size_t k = 1; k < n; ++k) {
    install_page_locked(page + k, dirty, /*referenced=*/true, paging::kNoStream, !dirty);
  }
  if (!fresh) counters.add(counters.bytes_read, bytes);
  if (n > 1) pager->note_prefetch_issued(n - 1);
  return Status::Ok();
}

void Region::Impl::unprotect_for_write(std::size_t page) {
  counters.add(counters.wp_faults);
  MutexLock lock(page_mu_);
  if (!table.has(page, region::kResident | region::kWriteProtected)) return;  // raced: retry
  const std::uint32_t frame = table.frame(page);
  (void)pager->note_access(frame);  // a prefetched page counts as used
  pager->mark_dirty(frame);         // dirty BEFORE the store can happen
  pager->reference(frame);
  if (uffd.write_protect(page_addr(page), kPageSize, false).ok()) {
    table.clear(page, region::kWriteProtected);
  }
}

bool Region::Impl::hand_off(std::uintptr_t addr, bool write) {
  for (;;) {
    for (Handoff& h : mailbox) {
      std::uint32_t expected = Handoff::kFree;
      if (!h.state.compare_exchange_strong(expected, Handoff::kClaimed,
                                           std::memory_order_acq_rel)) {
        continue;
      }
      h.addr = addr;
      h.write = write;
      h.state.store(Handoff::kPosted, std::memory_order_release);
      wake_handler();  // write(2) to an eventfd: async-signal-safe
      while (h.state.load(std::memory_order_acquire) == Handoff::kPosted) {
        futex_wait(h.state, Handoff::kPosted);
      }
      // kPosted -> kDone is the helper's only move; the slot is ours until we free it.
      FARMEM_DCHECK_EQ(h.state.load(std::memory_order_acquire), std::uint32_t{Handoff::kDone});
      const bool ok = h.ok;
      h.state.store(Handoff::kFree, std::memory_order_release);
      return ok;
    }
    ::sched_yield();  // every mailbox slot busy: rare, and the helper is draining them
  }
}

void Region::Impl::serve_handoffs_on_handler() {
  for (Handoff& h : mailbox) {
    if (h.state.load(std::memory_order_acquire) != Handoff::kPosted) continue;
    h.ok = serve_handoff_on_handler(h.addr, h.write);
    FARMEM_DCHECK_EQ(h.state.load(std::memory_order_relaxed), std::uint32_t{Handoff::kPosted});
    h.state.store(Handoff::kDone, std::memory_order_release);
    futex_wake_all(h.state);
  }
}

bool Region::Impl::serve_handoff_on_handler(std::uintptr_t addr, bool write) {
  const auto t0 = Clock::now();
  const std::size_t page = page_of(addr);
  if (table.has(page, region::kResident)) {
    if (table.has(page, region::kWriteProtected)) unprotect_for_write(page);
    return true;
  }
  const auto limit = options.fault_retry_deadline;
  const auto deadline = limit.count() == 0 ? Clock::time_point::max() : t0 + limit;
  auto delay = region::kFirstRetryDelay;
  for (;;) {
    Status st = charge_fault_page()
                    ? fetch_install(fetch_staging, fetch_batch, page, 0, write)
                    : ResourceExhausted("local memory budget full, nothing to reclaim");
    if (st.ok()) {
      counters.record_fault(static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
      return true;
    }
    log().warn("region: serving a handed-off fault on page {} failed: {}", page,
               st.to_string());
    if (stop.load(std::memory_order_acquire) || Clock::now() >= deadline) break;
    sleep_on_handler(delay);
    delay = std::min(2 * delay, region::kMaxRetryDelay);
  }
  counters.record_unserved_fault();
  log().critical("region: page {} (far 0x{:x}) cannot be fetched; the faulting thread gets "
                 "SIGBUS",
                 page, page_far(page).raw);
  return false;
}

Status Region::Impl::prefault_faulting(std::size_t first, std::size_t end) {
  // fetch_install maps nothing when the page was mapped and unmapped by another thread while
  // its read was in flight (stale bytes): fetch again, a bounded number of times, so that Ok
  // means every page was mapped.
  constexpr int kMaxStaleFetches = 64;
  for (std::size_t p = first; p < end; ++p) {
    for (int stale = 0; !table.has(p, region::kResident); ++stale) {
      if (stale == kMaxStaleFetches) {
        return Unavailable("prefault: page " + std::to_string(p) + " was unmapped under " +
                       std::to_string(stale) + " fetches in a row");
      }
      if (!charge_fault_page()) {
        return ResourceExhausted("prefault: the local budget is full and nothing can be evicted");
      }
      region::FaulterSlot* slot = claim_slot();
      while (slot == nullptr) {
        std::this_thread::yield();
        slot = claim_slot();
      }
      const Status st = fetch_install(slot->staging, slot->batch, p, 0, /*write=*/true);
      release_slot(slot);
      FARMEM_RETURN_IF_ERROR(st.with_context("prefault"));
    }
    // The kernel's own stores cannot be tracked in this mode: map it writable and dirty.
    if (table.has(p, region::kWriteProtected)) unprotect_for_write(p);
  }
  return Status::Ok();
}

}  // namespace farmem
