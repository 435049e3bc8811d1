// farmem/stats.h: what the page cache and mapped regions count.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "farmem/pressure.h"

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
  /// misses on pages the caller overwrote whole (DerefScope::translate_for_overwrite): given
  /// a zeroed frame, never fetched (far_vector::append and resize of whole pages)
  std::uint64_t overwrite_fills = 0;
  std::uint64_t bytes_read = 0;         ///< bytes fetched from far memory
  /// pages of prefetch batches posted and not yet arrived (Runtime::prefetch, gather,
  /// coroutines, read-ahead): misses in flight now; a gauge, not summed over time
  std::uint64_t prefetch_pages_in_flight = 0;
  std::uint64_t bytes_written = 0;      ///< bytes written back to far memory
  std::uint64_t resident_bytes = 0;     ///< local bytes in use now
  std::uint64_t budget_bytes = 0;       ///< the local budget
  /// Bytes of the cache's frame arena in use for frames now (registered for I/O); the rest
  /// was given back to the OS because the budget shrank below it.
  std::uint64_t arena_active_bytes = 0;
  std::uint64_t arena_chunks_given_back = 0;  ///< arena chunks returned to the OS so far
  std::uint64_t arena_chunks_taken_back = 0;  ///< of those, taken back (the budget grew)
  LatencyHistogram fault_latency;       ///< miss (fault) service times

  /// prefetches_used / prefetches_issued (1.0 when none were issued).
  double prefetch_accuracy() const;
  void merge(const CacheStats& other);
  /// One JSON object with every field (the histogram as p50/p90/p99 in ns plus buckets).
  std::string to_json() const;
};

/// The swap-like tier (RuntimeOptions::budget_floor / budget_ceiling): its budget and what
/// it decided from which readings.
struct TierStats {
  bool enabled = false;              ///< false: a fixed budget (no floor/ceiling set)
  std::uint64_t budget_bytes = 0;    ///< the local budget now
  std::uint64_t floor_bytes = 0;
  std::uint64_t ceiling_bytes = 0;
  std::uint64_t readings = 0;        ///< pressure readings taken
  std::uint64_t read_errors = 0;     ///< readings that failed (the budget then holds)
  std::uint64_t shrinks = 0;         ///< decisions that lowered the budget
  std::uint64_t grows = 0;           ///< decisions that raised it
  double last_stall_share = 0;       ///< share of the last interval some task stalled on memory
  std::string last_reason;           ///< why the last decision was taken
  MemoryPressure last_reading;       ///< the last reading
  std::uint64_t over_limit_bytes = 0;  ///< held above the budget after the last shrink (0: none)
};

}  // namespace farmem
