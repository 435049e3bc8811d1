// The counters of one mapped region, updated from the handler thread and from reclaimers.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "farmem/stats.h"

namespace farmem::region {

struct RegionCounters {
  std::atomic<std::uint64_t> wp_faults{0};          ///< first writes after (re)protection
  std::atomic<std::uint64_t> prefetches_issued{0};  ///< stream prefetches + background pulls
  std::atomic<std::uint64_t> prefetches_used{0};
  std::atomic<std::uint64_t> prefetches_wasted{0};
  std::atomic<std::uint64_t> evictions{0};
  std::atomic<std::uint64_t> writebacks{0};
  std::atomic<std::uint64_t> bytes_read{0};
  std::atomic<std::uint64_t> bytes_written{0};
  std::atomic<std::uint64_t> fetch_errors{0};       ///< failed far reads (each retried)
  std::atomic<std::uint64_t> writeback_errors{0};   ///< failed write-back batches
  std::atomic<std::uint64_t> inline_evictions{0};   ///< faults that found the reserve empty

  void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) {
    c.fetch_add(n, std::memory_order_relaxed);
  }

  /// A demand fault served, with its latency (fault read from the uffd -> page mapped).
  /// Counted together so that a snapshot's misses always equal its histogram's total.
  void record_fault(std::uint64_t ns) {
    std::lock_guard lock(latency_mu_);
    ++faults_;
    latency_.record(ns);
  }
  /// A demand fault given up on (SIGBUS): a miss without a service time.
  void record_unserved_fault() {
    std::lock_guard lock(latency_mu_);
    ++faults_;
  }

  /// Everything but resident/budget bytes, which the region fills in.
  CacheStats snapshot() const {
    CacheStats s;
    s.prefetches_issued = prefetches_issued.load(std::memory_order_relaxed);
    s.prefetches_used = prefetches_used.load(std::memory_order_relaxed);
    s.prefetches_wasted = prefetches_wasted.load(std::memory_order_relaxed);
    s.evictions = evictions.load(std::memory_order_relaxed);
    s.writebacks = writebacks.load(std::memory_order_relaxed);
    s.bytes_read = bytes_read.load(std::memory_order_relaxed);
    s.bytes_written = bytes_written.load(std::memory_order_relaxed);
    std::lock_guard lock(latency_mu_);
    s.misses = faults_;
    s.fault_latency = latency_;
    return s;
  }

 private:
  /// Guards faults_ and latency_ (one uncontended lock a fault; keeps them consistent).
  mutable std::mutex latency_mu_;
  std::uint64_t faults_ = 0;
  LatencyHistogram latency_;
};

}  // namespace farmem::region
