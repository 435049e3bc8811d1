// The counters of one mapped region's fault side (eviction, write-back and prefetch counts
// are the pager's: paging/pager.h).
#pragma once

#include <atomic>
#include <cstdint>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/stats.h"

namespace farmem::region {

struct RegionCounters {
  std::atomic<std::uint64_t> wp_faults{0};          ///< first writes after (re)protection
  std::atomic<std::uint64_t> bytes_read{0};
  std::atomic<std::uint64_t> fetch_errors{0};       ///< failed far reads (each retried)
  /// fetched pages thrown away: the page was mapped and unmapped (perhaps written back)
  /// while the read was in flight (PageTable::dropped_since)
  std::atomic<std::uint64_t> stale_fetches{0};

  void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) {
    c.fetch_add(n, std::memory_order_relaxed);
  }

  /// A demand fault served, with its latency (fault read from the uffd -> page mapped).
  /// Counted together so that a snapshot's misses always equal its histogram's total.
  void record_fault(std::uint64_t ns) {
    MutexLock lock(latency_mu_);
    ++faults_;
    latency_.record(ns);
  }
  /// A demand fault given up on (SIGBUS): a miss without a service time.
  void record_unserved_fault() {
    MutexLock lock(latency_mu_);
    ++faults_;
  }

  /// Faults, reads and latencies; the region adds the pager's counts and resident bytes.
  CacheStats snapshot() const {
    CacheStats s;
    s.bytes_read = bytes_read.load(std::memory_order_relaxed);
    MutexLock lock(latency_mu_);
    s.misses = faults_;
    s.fault_latency = latency_;
    return s;
  }

 private:
  /// Guards faults_ and latency_ (one uncontended lock a fault; keeps them consistent).
  mutable Mutex latency_mu_;
  std::uint64_t faults_ FARMEM_GUARDED_BY(latency_mu_) = 0;
  LatencyHistogram latency_ FARMEM_GUARDED_BY(latency_mu_);
};

}  // namespace farmem::region
