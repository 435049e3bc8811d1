// The paging core's background evictor thread: keeps the free reserve and moves chunks
// (see pager.h).
#include "paging/pager.h"

#include "common/log.h"

namespace farmem::paging {

// ---- the background evictor ----

void Pager::wake_evictor() {
  if (evict_requested_.exchange(true, std::memory_order_acq_rel)) return;  // already asked
  {
    MutexLock lock(evictor_mu_);  // pairs with the evictor's predicate check
  }
  evictor_cv_.notify_one();
}

void Pager::run_evictor() {
  UniqueLock lock(evictor_mu_);
  bool stuck = false;
  while (!stopping_) {
    const bool asked =
        lock.wait_for(evictor_cv_, options_.evictor_period, [&]() FARMEM_REQUIRES(evictor_mu_) {
          return stopping_ || evict_requested_.load(std::memory_order_acquire);
        });
    if (stopping_) break;
    lock.unlock();
    // Chunks first: a chunk taken back spares evictions, and after a shrink the pages of
    // chunks above the budget go before any other.
    if (chunk_work_pending()) {
      if (Status st = adjust_chunks(); !st.ok()) {
        MutexLock elock(error_mu_);
        if (background_error_.ok()) background_error_ = st;
      }
    }
    // The periodic look does not retry a refill that could not progress (write-backs to a
    // dead memserver): only a new take asks again.
    if (!asked && (stuck || free_frames() >= reserve_ / 2 + 1)) {
      lock.lock();
      continue;
    }
    stuck = false;
    while (free_frames() < reserve_) {
      Status err;
      const std::size_t n = evict(options_.evict_batch, &err);
      background_passes_.fetch_add(1, std::memory_order_relaxed);
      if (!err.ok()) {
        MutexLock elock(error_mu_);
        if (background_error_.ok()) background_error_ = err;
      }
      if (n == 0) {
        stuck = true;
        break;
      }
      MutexLock slock(evictor_mu_);
      if (stopping_) break;
    }
    evict_requested_.store(false, std::memory_order_release);
    lock.lock();
  }
}

}  // namespace farmem::paging
