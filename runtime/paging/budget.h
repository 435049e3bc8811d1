// The local-memory budget shared by everything that holds far data locally: the page cache's
// frames and the resident pages of mapped regions. One budget, many consumers; a consumer
// that cannot charge asks the others (and itself) to give memory back.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "common/dcheck.h"
#include "farmem/status.h"

namespace farmem::paging {

/// Something that holds budgeted memory and can give some back (evict).
class Reclaimer {
 public:
  virtual ~Reclaimer() = default;
  /// Tries to release about `bytes` (uncharging them from the budget); returns bytes released.
  /// Must not call Budget::charge. May be called from any thread.
  virtual std::uint64_t reclaim(std::uint64_t bytes) = 0;
  /// Writes back everything it holds dirty; Ok means it is durable in far memory.
  virtual Status flush_dirty() = 0;
};

class Budget {
 public:
  explicit Budget(std::uint64_t limit_bytes) : limit_(limit_bytes), ceiling_(limit_bytes) {}
  /// A budget whose limit may later move (set_limit) up to `ceiling_bytes`: consumers size
  /// their frame tables for the ceiling.
  Budget(std::uint64_t limit_bytes, std::uint64_t ceiling_bytes)
      : limit_(std::min(limit_bytes, ceiling_bytes)), ceiling_(ceiling_bytes) {}

  std::uint64_t limit() const { return limit_.load(std::memory_order_relaxed); }
  /// The highest limit this budget can ever have.
  std::uint64_t ceiling() const { return ceiling_; }
  /// Moves the limit (clamped to the ceiling). Lowering it does not evict by itself: charges
  /// fail until used falls, and reclaim_over_limit() (or each consumer's evictor, which keeps
  /// a free reserve below the limit) brings it down.
  void set_limit(std::uint64_t bytes) {
    limit_.store(std::min(bytes, ceiling_), std::memory_order_relaxed);
  }
  std::uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  /// Highest `used` ever seen: tests check the budget was never exceeded.
  std::uint64_t peak() const { return peak_.load(std::memory_order_relaxed); }

  /// Charges `bytes` if that stays within the limit; never overshoots, even under races.
  bool try_charge(std::uint64_t bytes) {
    std::uint64_t u = used_.load(std::memory_order_relaxed);
    do {
      if (u + bytes > limit()) return false;
    } while (!used_.compare_exchange_weak(u, u + bytes, std::memory_order_relaxed));
    std::uint64_t p = peak_.load(std::memory_order_relaxed);
    while (u + bytes > p && !peak_.compare_exchange_weak(p, u + bytes)) {
    }
    return true;
  }
  void uncharge(std::uint64_t bytes) {
    [[maybe_unused]] const std::uint64_t before = used_.fetch_sub(bytes, std::memory_order_relaxed);
    FARMEM_DCHECK_LE(bytes, before);  // never more than was charged: `used` must not wrap
  }

  /// Charges `bytes`, asking reclaimers for room first when needed (bounded number of
  /// rounds); false when nothing more could be reclaimed.
  bool charge(std::uint64_t bytes) {
    constexpr int kRounds = 8;  // each round asks every reclaimer once
    for (int round = 0; round < kRounds; ++round) {
      if (try_charge(bytes)) return true;
      std::uint64_t freed = 0;
      for (Reclaimer* r : reclaimers_snapshot()) {
        freed += call_reclaim(r, bytes);
        if (try_charge(bytes)) return true;
      }
      if (freed == 0) break;
    }
    return try_charge(bytes);
  }

  /// Asks the consumers to give back what they hold above the limit (dirty pages are written
  /// back first); returns bytes still over the limit (0: done). Bounded number of rounds.
  std::uint64_t reclaim_over_limit() {
    constexpr int kRounds = 64;  // each round asks every reclaimer once
    for (int round = 0; round < kRounds; ++round) {
      const std::uint64_t u = used(), l = limit();
      if (u <= l) return 0;
      std::uint64_t freed = 0;
      for (Reclaimer* r : reclaimers_snapshot()) {
        const std::uint64_t uu = used(), ll = limit();
        if (uu <= ll) return 0;
        freed += call_reclaim(r, uu - ll);
      }
      if (freed == 0) break;
    }
    const std::uint64_t u = used(), l = limit();
    return u > l ? u - l : 0;
  }

  /// Flushes every consumer; the first error, after trying them all.
  Status flush_all() {
    Status first;
    for (Reclaimer* r : reclaimers_snapshot()) {
      Status st;
      call(r, [&] { st = r->flush_dirty(); });
      if (!st.ok() && first.ok()) first = st;
    }
    return first;
  }

  void add_reclaimer(Reclaimer* r) FARMEM_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    reclaimers_.push_back(r);
  }
  /// Unregisters `r` and waits until no charge() is still inside r->reclaim(), so `r` may be
  /// destroyed as soon as this returns. Must not be called from inside a reclaim().
  void remove_reclaimer(Reclaimer* r) FARMEM_EXCLUDES(mu_) {
    UniqueLock lock(mu_);
    std::erase(reclaimers_, r);
    while (std::count(busy_.begin(), busy_.end(), r) != 0) lock.wait(idle_);
  }

 private:
  std::vector<Reclaimer*> reclaimers_snapshot() FARMEM_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    return reclaimers_;
  }

  // Runs fn (a call into r) unless r was removed meanwhile; remove_reclaimer waits for it.
  template <typename Fn>
  void call(Reclaimer* r, Fn&& fn) FARMEM_EXCLUDES(mu_) {
    {
      MutexLock lock(mu_);
      if (std::find(reclaimers_.begin(), reclaimers_.end(), r) == reclaimers_.end()) return;
      busy_.push_back(r);
    }
    fn();
    {
      MutexLock lock(mu_);
      busy_.erase(std::find(busy_.begin(), busy_.end(), r));
    }
    idle_.notify_all();
  }
  std::uint64_t call_reclaim(Reclaimer* r, std::uint64_t bytes) {
    std::uint64_t freed = 0;
    call(r, [&] { freed = r->reclaim(bytes); });
    return freed;
  }

  std::atomic<std::uint64_t> limit_;
  const std::uint64_t ceiling_;
  std::atomic<std::uint64_t> used_{0};
  std::atomic<std::uint64_t> peak_{0};
  /// Guards reclaimers_ and busy_ (registration is rare; charge() copies the list). Never
  /// held while a reclaimer runs, so it comes after every lock of a reclaimer.
  Mutex mu_;
  std::condition_variable idle_;  ///< signalled when a reclaim call ends
  std::vector<Reclaimer*> reclaimers_ FARMEM_GUARDED_BY(mu_);
  /// Reclaimers inside reclaim() now (one entry per call).
  std::vector<Reclaimer*> busy_ FARMEM_GUARDED_BY(mu_);
};

}  // namespace farmem::paging
