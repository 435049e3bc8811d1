// farmem/stats.h: what the page cache and mapped regions count.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace farmem {

/// Latencies in power-of-two buckets: bucket i counts samples in [2^i, 2^(i+1)) ns.
struct LatencyHistogram {
  static constexpr int kBuckets = 40;  // 2^40 ns ~ 18 minutes: nothing realistic overflows
  std::array<std::uint64_t, kBuckets> counts{};

  void record(std::uint64_t ns) { ++counts[bucket_of(ns)]; }
  static int bucket_of(std::uint64_t ns);
  std::uint64_t total() const;
  /// Upper bound (ns) of the bucket holding the p-th percentile (p in 0..100); 0 when empty.
  std::uint64_t percentile_ns(double p) const;
  void merge(const LatencyHistogram& other);
};

/// Counters of a page cache or a mapped region (and their sum, in Runtime::cache_stats()).
struct CacheStats {
  std::uint64_t hits = 0;               ///< accesses served from a local frame
  std::uint64_t misses = 0;             ///< accesses that had to fetch their page
  std::uint64_t prefetches_issued = 0;  ///< pages fetched ahead of use
  std::uint64_t prefetches_used = 0;    ///< of those, pages later accessed
  std::uint64_t prefetches_wasted = 0;  ///< of those, pages evicted without an access
  std::uint64_t evictions = 0;          ///< pages dropped from local memory
  std::uint64_t writebacks = 0;         ///< dirty pages written back
  std::uint64_t inline_evictions = 0;   ///< misses that had to evict (the free reserve was empty)
  std::uint64_t bytes_read = 0;         ///< bytes fetched from far memory
  std::uint64_t bytes_written = 0;      ///< bytes written back to far memory
  std::uint64_t resident_bytes = 0;     ///< local bytes in use now
  std::uint64_t budget_bytes = 0;       ///< the local budget
  LatencyHistogram fault_latency;       ///< miss (fault) service times

  /// prefetches_used / prefetches_issued (1.0 when none were issued).
  double prefetch_accuracy() const;
  void merge(const CacheStats& other);
  /// One JSON object with every field (the histogram as p50/p90/p99 in ns plus buckets).
  std::string to_json() const;
};

}  // namespace farmem
