// The handler thread of a region: serves userfaultfd faults (MISSING: fetch and map;
// WP: record the write), prefetches along detected strides, and pulls pages in the
// background. Everything here runs on that one thread (names end in _on_handler).
//
// Error policy for a demand fault whose fetch (or budget charge) fails: the faulting thread
// is blocked in the kernel and cannot be given an error code, and mapping zeros would hand it
// data that was never written. So the handler retries with exponential backoff (logging and
// counting each failure), for RegionOptions::fault_retry_deadline; past that it sends SIGBUS
// at the faulting address to the faulting thread, which is what the kernel does when the
// backing store of a file mapping fails (abort() if the kernel cannot name the thread).
#include <poll.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>

#include "common/log.h"
#include "region/region.h"
#include "region/region_constants.h"
#include "paging/runs.h"

namespace farmem {

using paging::for_each_run;
using region::kPageSize;
using Clock = std::chrono::steady_clock;

namespace {

std::uint64_t ns_since(Clock::time_point t0) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
}

}  // namespace

void Region::Impl::run_on_handler() {
  const bool faulting = options.fault_mode == FaultMode::kFaultingThread;
  while (!stop.load(std::memory_order_acquire)) {
    int timeout_ms = static_cast<int>(options.idle_poll.count());
    if (pull_pending_on_handler()) {
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(pull_blocked_until -
                                                                     Clock::now());
      timeout_ms = static_cast<int>(std::clamp<std::int64_t>(wait.count(), 0, timeout_ms));
    }
    std::array<pollfd, 2> fds{{{uffd.fd(), POLLIN, 0}, {wake_fd.get(), POLLIN, 0}}};
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) {
      log().error("region handler: poll failed: {}", std::strerror(errno));
    }
    if (fds[1].revents & POLLIN) {
      std::uint64_t drained = 0;
      [[maybe_unused]] const ssize_t n = ::read(wake_fd.get(), &drained, sizeof drained);
    }
    if (stop.load(std::memory_order_acquire)) break;
    if (faulting) {
      serve_handoffs_on_handler();
      serve_readahead_on_handler();
    }
    if (drain_faults_on_handler()) {
      spin_after_fault_on_handler();
      continue;  // look for more faults before pulling
    }
    if (pull_pending_on_handler() && Clock::now() >= pull_blocked_until) pull_some_on_handler();
  }
}

void Region::Impl::spin_after_fault_on_handler() {
  // Busy-poll the uffd (a non-blocking read(2) a turn) while faults keep coming: the next
  // fault of a thread touching page after page is read without waking this thread. The
  // window restarts at every fault; once it passes quietly, back to sleeping in poll().
  // Each empty turn yields: on a CPU shared with the faulting thread (or anything else) the
  // spin must not eat the time slice of whoever would fault next.
  auto until = Clock::now() + region::kSpinAfterFault;
  while (!stop.load(std::memory_order_acquire) && Clock::now() < until) {
    if (drain_faults_on_handler()) {
      until = Clock::now() + region::kSpinAfterFault;
    } else {
      ::sched_yield();
    }
  }
}

bool Region::Impl::drain_faults_on_handler() {
  std::array<uffd_msg, region::kMessagesPerRead> msgs;
  bool any = false;
  for (;;) {
    auto n = uffd.read_messages(msgs);
    if (!n.ok()) {
      log().error("region handler: {}", n.status().to_string());
      return any;
    }
    if (*n == 0) return any;
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < *n; ++i) {
      const uffd_msg& m = msgs[i];
      if (m.event != UFFD_EVENT_PAGEFAULT) continue;  // no other events were asked for
      any = true;
      if (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
        handle_wp_on_handler(page_of(m.arg.pagefault.address));
      } else {
        handle_missing_on_handler(m, t0);
      }
      if (stop.load(std::memory_order_acquire)) return any;
    }
    // A short read means the queue was empty: back to the caller (poll() or the spin) rather
    // than a read(2) that would only say EAGAIN.
    if (*n < msgs.size()) return any;
  }
}

// ---- MISSING faults ----

void Region::Impl::handle_missing_on_handler(const uffd_msg& msg, Clock::time_point t0) {
  const std::size_t page = page_of(msg.arg.pagefault.address);
  if (table.has(page, region::kResident)) {  // mapped by a prefetch or pull meanwhile
    serve_present_on_handler(page);
    counters.record_fault(ns_since(t0));
    return;
  }
  apply_hint_on_handler();
  candidates.clear();
  if (options.prefetch) prefetch_candidates_on_handler(page);
  last_fault_page = static_cast<std::int64_t>(page);
  writing_stream = (msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0;
  if (fetch_demand_on_handler(page, msg)) {
    counters.record_fault(ns_since(t0));
  } else {
    counters.record_unserved_fault();
  }
}

void Region::Impl::serve_present_on_handler(std::size_t page) {
  {
    MutexLock lock(page_mu_);
    if (table.has(page, region::kResident)) {
      mark_used_locked(page);
      pager->reference(table.frame(page));
    }
  }
  // If it was evicted again meanwhile, the woken thread simply faults once more.
  if (Status st = uffd.wake(page_addr(page), kPageSize); !st.ok()) {
    log().error("region handler: {}", st.to_string());
  }
}

bool Region::Impl::fetch_demand_on_handler(std::size_t page, const uffd_msg& msg) {
  if (Status st = charge_one_on_handler(page); !st.ok()) {
    if (!retry_on_handler("charging the budget for", st, msg,
                          &Impl::charge_one_on_handler, page)) {
      return false;
    }
  }
  // The demand read goes out first; the prefetch is charged (evicting only if the reserve
  // is used up) while it is in flight. The demand page is mapped (waking its thread) first.
  // The epoch is noted before either read, and before the page's fresh-ness is read: a page
  // dropped after it (by the prefetch charge's own eviction, or a pass) is thrown away at
  // install, never mapped stale. A fresh page is not read at all: zeros.
  std::uint64_t epoch = table.epoch();
  const bool fresh = !table.written(page);
  fetch_batch.clear();
  if (!fresh) fetch_batch.read(page_far(page), fetch_staging.first(page_bytes(page)));
  Status demand = fresh ? Status::Ok() : io.submit(fetch_batch);
  charge_prefetch_on_handler();
  const std::span<const std::uint32_t> pf = charged;
  Status ahead = pf.empty() ? Status::Ok() : io.submit(prefetch_batch);
  if (demand.ok() && !fresh) demand = io.wait(fetch_batch);
  const bool write = (msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0;
  if (demand.ok()) install_demand_on_handler(page, write, epoch, fresh);
  if (!pf.empty()) finish_prefetch_on_handler(pf, ahead, epoch);
  if (demand.ok()) return true;
  epoch = table.epoch();  // before the retried reads (read_one_on_handler)
  if (!retry_on_handler("reading", demand, msg, &Impl::read_one_on_handler, page)) {
    pager->uncharge_pages(1);
    return false;
  }
  install_demand_on_handler(page, write, epoch, /*fresh=*/false);
  return true;
}

void Region::Impl::charge_prefetch_on_handler() {
  // Prefetches take free room (the reserve the evictor refills) and may evict, as in Leap,
  // only once that is used up: a detected stream is worth more than the oldest page. This
  // runs while the demand read is in flight.
  charged.clear();
  for (std::uint32_t c : candidates) {
    if (!pager->try_charge_pages(1)) break;
    charged.push_back(c);
  }
  if (const std::size_t rest = candidates.size() - charged.size(); rest > 0) {
    // One charge for the whole rest: one eviction pass (one TLB shootdown), not one a page.
    const auto n = static_cast<std::uint32_t>(rest);
    if (pager->charge_pages(n, std::chrono::steady_clock::now()).ok()) {
      charged.insert(charged.end(), candidates.end() - static_cast<std::ptrdiff_t>(rest),
                     candidates.end());
    }
  }
  prefetch_batch.clear();
  for_each_run(charged, [&](std::size_t i, std::size_t n) {
    const std::size_t bytes = (n - 1) * kPageSize + page_bytes(charged[i + n - 1]);
    prefetch_batch.read(page_far(charged[i]), fetch_staging.subspan((1 + i) * kPageSize, bytes));
  });
}

void Region::Impl::finish_prefetch_on_handler(std::span<const std::uint32_t> pf, Status st,
                                              std::uint64_t epoch) {
  if (st.ok()) st = io.wait(prefetch_batch);
  if (!st.ok()) {  // prefetching is optional: forget it, the pages fault in on demand
    pager->uncharge_pages(static_cast<std::uint32_t>(pf.size()));
    log().debug("region: prefetch of {} pages failed: {}", pf.size(), st.to_string());
    return;
  }
  // A write stream gets its prefetched pages writable and dirty: no WP fault per page. They
  // are written back even if never stored to (a wasted write, never a lost one).
  for_each_run(pf, [&](std::size_t i, std::size_t n) {
    install_run_on_handler(pf.subspan(i, n), fetch_staging.data() + (1 + i) * kPageSize,
                           writing_stream, kStream, epoch);
  });
  pager->note_prefetch_issued(pf.size());
}

Status Region::Impl::charge_one_on_handler(std::size_t) {
  if (charge_fault_page()) return Status::Ok();
  return ResourceExhausted("local memory budget of " + std::to_string(budget.limit()) +
                           " bytes is full and no reclaimer could free a page");
}

Status Region::Impl::read_one_on_handler(std::size_t page) {
  fetch_batch.clear();
  fetch_batch.read(page_far(page), fetch_staging.first(page_bytes(page)));
  FARMEM_RETURN_IF_ERROR(io.submit(fetch_batch));
  return io.wait(fetch_batch);
}

bool Region::Impl::retry_on_handler(const char* what, const Status& first, const uffd_msg& msg,
                                    Status (Impl::*attempt)(std::size_t), std::size_t page) {
  const auto limit = options.fault_retry_deadline;
  const auto deadline = limit.count() == 0 ? Clock::time_point::max() : Clock::now() + limit;
  auto delay = region::kFirstRetryDelay;
  Status st = first;
  for (std::uint64_t failures = 1;; ++failures) {
    counters.add(counters.fetch_errors);
    if ((failures & (failures - 1)) == 0) {  // 1st, 2nd, 4th, 8th...: a log, not a flood
      log().warn("region: {} page {} failed ({} times so far): {}; retrying", what, page,
                 failures, st.to_string());
    }
    if (stop.load(std::memory_order_acquire)) return false;
    if (Clock::now() >= deadline) break;
    sleep_on_handler(delay);
    delay = std::min(2 * delay, region::kMaxRetryDelay);
    st = (this->*attempt)(page);
    if (st.ok()) return true;
  }
  const pid_t tid = static_cast<pid_t>(msg.arg.pagefault.feat.ptid);
  void* addr = reinterpret_cast<void*>(msg.arg.pagefault.address);
  log().critical("region: {} page {} (far 0x{:x}) kept failing for {} ms: {}; the access at {} "
                 "cannot complete, sending SIGBUS to thread {}",
                 what, page, page_far(page).raw, limit.count(), st.to_string(), addr, tid);
  if (!uffd.has(UFFD_FEATURE_THREAD_ID) || tid == 0 || !region::send_sigbus(tid, addr)) {
    log().critical("region: cannot signal the faulting thread; aborting");
    std::abort();
  }
  return false;
}

void Region::Impl::sleep_on_handler(std::chrono::milliseconds d) {
  pollfd fd{wake_fd.get(), POLLIN, 0};  // a stop request ends the sleep early
  if (::poll(&fd, 1, static_cast<int>(d.count())) > 0) {
    std::uint64_t drained = 0;
    [[maybe_unused]] const ssize_t n = ::read(wake_fd.get(), &drained, sizeof drained);
  }
}

void Region::Impl::install_demand_on_handler(std::size_t page, bool write, std::uint64_t epoch,
                                             bool fresh) {
  if (fresh) {
    std::memset(fetch_staging.data(), 0, kPageSize);
  } else {
    counters.add(counters.bytes_read, page_bytes(page));
    if (page_bytes(page) < kPageSize) {  // past the far range's end: zeros, not stale staging
      std::memset(fetch_staging.data() + page_bytes(page), 0, kPageSize - page_bytes(page));
    }
  }
  MutexLock lock(page_mu_);
  if (table.dropped_since(page, epoch)) {  // mapped, maybe written back, unmapped meanwhile
    counters.add(counters.stale_fetches);
    pager->uncharge_pages(1);
    (void)uffd.wake(page_addr(page), kPageSize);  // it refaults and reads the new bytes
    return;
  }
  // A write fault maps the page writable and dirty at once (it is about to be written): one
  // fault instead of MISSING followed by WP. A fresh page is dirty too: far memory gets its
  // zeros at its eviction, so that the range holds what the region showed.
  const bool dirty = write || fresh;
  auto out = uffd.copy(page_addr(page), fetch_staging.data(), kPageSize, /*write_protect=*/!dirty);
  if (out.ok() && *out == region::CopyOutcome::kInstalled) {
    install_page_locked(page, dirty, /*referenced=*/true, paging::Pager::kDemand,
                        /*write_protected=*/!dirty);
    return;
  }
  pager->uncharge_pages(1);
  if (!out.ok()) log().error("region: mapping page {} failed: {}", page, out.status().to_string());
  (void)uffd.wake(page_addr(page), kPageSize);  // let it retry (a new fault if still missing)
}

void Region::Impl::install_run_on_handler(std::span<const std::uint32_t> run,
                                          std::byte* staged, bool dirty, std::uint32_t stream,
                                          std::uint64_t epoch) {
  const std::size_t last = run.back();
  if (page_bytes(last) < kPageSize) {
    std::memset(staged + (run.size() - 1) * kPageSize + page_bytes(last), 0,
                kPageSize - page_bytes(last));
  }
  MutexLock lock(page_mu_);
  const bool protect = !dirty;
  // In faulting-thread mode a faulting thread may have mapped some of these pages since they
  // were chosen (every mapping happens under page_mu_, so the table is exact here): copy only
  // the stretches still absent, so that no UFFDIO_COPY stops half-way on EEXIST. A page
  // that was mapped and unmapped again since the read went out is skipped too: it may have
  // been written to and written back after the read, so the staged bytes may be stale.
  auto usable = [&](std::uint32_t p) FARMEM_REQUIRES(page_mu_) {
    return !table.has(p, region::kResident) && !table.dropped_since(p, epoch);
  };
  for (std::size_t i = 0; i < run.size();) {
    if (!usable(run[i])) {
      if (!table.has(run[i], region::kResident)) counters.add(counters.stale_fetches);
      pager->uncharge_pages(1);
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    while (j < run.size() && usable(run[j])) ++j;
    auto out = uffd.copy(page_addr(run[i]), staged + i * kPageSize, (j - i) * kPageSize, protect);
    if (!out.ok() || *out != region::CopyOutcome::kInstalled) {
      pager->uncharge_pages(static_cast<std::uint32_t>(j - i));
      log().warn("region: mapping {} prefetched pages at {} failed", j - i, run[i]);
    } else {
      for (std::size_t k = i; k < j; ++k) {
        // Referenced: one CLOCK sweep of grace, so a window is not evicted before the
        // stream reaches it (a region sees no accesses to mark it by).
        install_page_locked(run[k], dirty, /*referenced=*/true, stream, protect);
        counters.add(counters.bytes_read, page_bytes(run[k]));
      }
    }
    i = j;
  }
}

// ---- WP faults ----

void Region::Impl::handle_wp_on_handler(std::size_t page) {
  counters.add(counters.wp_faults);
  MutexLock lock(page_mu_);
  if (!table.has(page, region::kResident)) {  // evicted after the fault: refault as MISSING
    (void)uffd.wake(page_addr(page), kPageSize);
    return;
  }
  // A store to a page prefetched for a stream: the stream writes, map its next pages dirty.
  const std::uint32_t frame = table.frame(page);
  if (pager->prefetched_by(frame) == kStream) writing_stream = true;
  mark_used_locked(page);
  pager->mark_dirty(frame);  // dirty BEFORE the store can happen
  pager->reference(frame);
  if (!table.has(page, region::kWriteProtected)) {
    (void)uffd.wake(page_addr(page), kPageSize);  // another writer's fault got here first
    return;
  }
  if (Status st = uffd.write_protect(page_addr(page), kPageSize, false); !st.ok()) {
    log().error("region: un-protecting page {}: {}", page, st.to_string());
    return;
  }
  table.clear(page, region::kWriteProtected);
}

// ---- prefetch bookkeeping ----

void Region::Impl::mark_used_locked(std::size_t page) {
  if (pager->note_access(table.frame(page)) == kStream) prefetcher.on_prefetched_page_used();
}

void Region::Impl::apply_hint_on_handler() {
  const paging::Hint h = wanted_hint.load(std::memory_order_relaxed);
  if (h != applied_hint) {
    prefetcher.set_hint(h);
    applied_hint = h;
  }
  const std::uint32_t wasted = pager->take_wasted(kStream);
  for (std::uint32_t i = 0; i < std::min(wasted, region::kMaxWasteReportsPerFault); ++i) {
    prefetcher.on_prefetched_page_wasted();
  }
}

void Region::Impl::prefetch_candidates_on_handler(std::size_t page) {
  suggested.clear();
  note_stream_progress_on_handler(page, suggested);
  prefetcher.on_access(static_cast<std::int64_t>(page), suggested);
  std::sort(suggested.begin(), suggested.end());
  suggested.erase(std::unique(suggested.begin(), suggested.end()), suggested.end());
  const std::uint64_t cap = std::min<std::uint64_t>(
      options.max_prefetch_pages, budget.limit() / kPageSize / region::kMaxPrefetchShareOfBudget);
  for (std::int64_t s : suggested) {
    if (candidates.size() >= cap) break;
    if (s < 0 || static_cast<std::size_t>(s) >= pages || static_cast<std::size_t>(s) == page) {
      continue;
    }
    // Fresh pages are not prefetched: far memory holds nothing of them (a fault maps zeros).
    if (!table.has(static_cast<std::size_t>(s), region::kResident) &&
        table.written(static_cast<std::size_t>(s))) {
      candidates.push_back(static_cast<std::uint32_t>(s));
    }
  }
  // Pipelining: one page of a sequential window, 3/4 of the way in, is left unfetched. The
  // stream faults on it with a quarter of the window still mapped ahead; that fault is served
  // first and then posts the next window, which arrives while the stream reads the quarter,
  // so the stream does not wait at the window's end.
  const auto stride = prefetcher.current_stride();
  if (stride && *stride == 1 && candidates.size() >= region::kMinPipelinedWindow) {
    candidates.erase(candidates.begin() + static_cast<std::ptrdiff_t>(candidates.size() * 3 / 4));
  }
}

/// Reads of resident pages take no fault, so a stream reading its prefetched pages is
/// invisible until it faults past them. When a fault lands a whole number of strides after
/// the previous one, the pages in between are taken as read: prefetched ones count as used,
/// and all of them are fed to the trend detector (else it would see one jump of N strides).
void Region::Impl::note_stream_progress_on_handler(std::size_t page,
                                                   std::vector<std::int64_t>& out) {
  const auto stride = prefetcher.current_stride();
  if (!stride || last_fault_page < 0) return;
  const std::int64_t d = static_cast<std::int64_t>(page) - last_fault_page;
  if (d % *stride != 0) return;
  const std::int64_t steps = d / *stride;
  if (steps <= 1 || steps > static_cast<std::int64_t>(options.max_prefetch_pages) + 1) return;
  {
    MutexLock lock(page_mu_);
    for (std::int64_t k = 1; k < steps; ++k) {
      const std::int64_t q = last_fault_page + k * *stride;
      if (table.has(static_cast<std::size_t>(q), region::kResident)) mark_used_locked(q);
    }
  }
  for (std::int64_t k = 1; k < steps; ++k) prefetcher.on_access(last_fault_page + k * *stride, out);
}

// ---- background pulls (set_pull_order, WillNeed) ----

bool Region::Impl::pull_pending_on_handler() {
  MutexLock lock(pull_mu_);
  return !pull_queue.empty();
}

void Region::Impl::pull_some_on_handler() {
  std::vector<std::uint32_t>& batch = pull_pages;
  batch.clear();
  {
    MutexLock lock(pull_mu_);
    while (!pull_queue.empty() && batch.size() < region::kPullBatchPages) {
      const std::uint32_t p = pull_queue.front();
      if (table.has(p, region::kResident) || !table.written(p) ||
          std::ranges::count(batch, p) != 0) {  // fresh pages: nothing to pull
        pull_queue.pop_front();
        continue;
      }
      // A pull never evicts and leaves the reserve alone: it waits for spare room.
      if (!pager->try_charge_spare(1)) {
        pull_blocked_until = Clock::now() + region::kPullRetryInterval;
        break;
      }
      batch.push_back(p);
      pull_queue.pop_front();
    }
  }
  if (batch.empty()) return;
  std::sort(batch.begin(), batch.end());
  prefetch_batch.clear();
  for (std::size_t i = 0; i < batch.size(); ++i) {
    prefetch_batch.read(page_far(batch[i]),
                        fetch_staging.subspan((1 + i) * kPageSize, page_bytes(batch[i])));
  }
  const std::uint64_t epoch = table.epoch();
  Status st = io.submit(prefetch_batch);
  if (st.ok()) st = io.wait(prefetch_batch);
  if (!st.ok()) {  // best effort: those pages will be fetched on demand instead
    pager->uncharge_pages(static_cast<std::uint32_t>(batch.size()));
    counters.add(counters.fetch_errors);
    log().warn("region: background pull of {} pages failed: {}", batch.size(), st.to_string());
    return;
  }
  for_each_run(batch, [&](std::size_t i, std::size_t n) {
    install_run_on_handler(std::span(batch).subspan(i, n),
                           fetch_staging.data() + (1 + i) * kPageSize, false, paging::kNoStream,
                           epoch);
  });
  pager->note_prefetch_issued(batch.size());
}

}  // namespace farmem
