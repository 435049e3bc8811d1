#include "farmem/stats.h"

#include <bit>
#include <nlohmann/json.hpp>

namespace farmem {

int LatencyHistogram::bucket_of(std::uint64_t ns) {
  return ns == 0 ? 0 : std::min<int>(kBuckets - 1, static_cast<int>(std::bit_width(ns)) - 1);
}

std::uint64_t LatencyHistogram::total() const {
  std::uint64_t n = 0;
  for (auto c : counts) n += c;
  return n;
}

std::uint64_t LatencyHistogram::percentile_ns(double p) const {
  const std::uint64_t n = total();
  if (n == 0) return 0;
  const auto rank = static_cast<std::uint64_t>(p / 100.0 * static_cast<double>(n - 1)) + 1;
  std::uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += counts[b];
    if (seen >= rank) return (std::uint64_t{2} << b) - 1;
  }
  return ~std::uint64_t{0};
}

void LatencyHistogram::merge(const LatencyHistogram& o) {
  for (int b = 0; b < kBuckets; ++b) counts[b] += o.counts[b];
}

double CacheStats::prefetch_accuracy() const {
  return prefetches_issued == 0 ? 1.0
                                : static_cast<double>(prefetches_used) / prefetches_issued;
}

void CacheStats::merge(const CacheStats& o) {
  hits += o.hits;
  misses += o.misses;
  prefetches_issued += o.prefetches_issued;
  prefetches_used += o.prefetches_used;
  prefetches_wasted += o.prefetches_wasted;
  evictions += o.evictions;
  writebacks += o.writebacks;
  bytes_read += o.bytes_read;
  prefetch_pages_in_flight += o.prefetch_pages_in_flight;
  bytes_written += o.bytes_written;
  overwrite_fills += o.overwrite_fills;
  resident_bytes += o.resident_bytes;
  budget_bytes = std::max(budget_bytes, o.budget_bytes);
  arena_active_bytes += o.arena_active_bytes;
  arena_chunks_given_back += o.arena_chunks_given_back;
  arena_chunks_taken_back += o.arena_chunks_taken_back;
  fault_latency.merge(o.fault_latency);
}

std::string CacheStats::to_json() const {
  nlohmann::json j;
  j["hits"] = hits;
  j["misses"] = misses;
  j["prefetches_issued"] = prefetches_issued;
  j["prefetches_used"] = prefetches_used;
  j["prefetches_wasted"] = prefetches_wasted;
  j["prefetch_accuracy"] = prefetch_accuracy();
  j["evictions"] = evictions;
  j["writebacks"] = writebacks;
  j["bytes_read"] = bytes_read;
  j["prefetch_pages_in_flight"] = prefetch_pages_in_flight;
  j["bytes_written"] = bytes_written;
  j["overwrite_fills"] = overwrite_fills;
  j["resident_bytes"] = resident_bytes;
  j["budget_bytes"] = budget_bytes;
  j["arena_active_bytes"] = arena_active_bytes;
  j["arena_chunks_given_back"] = arena_chunks_given_back;
  j["arena_chunks_taken_back"] = arena_chunks_taken_back;
  j["fault_latency_ns"] = {{"p50", fault_latency.percentile_ns(50)},
                           {"p90", fault_latency.percentile_ns(90)},
                           {"p99", fault_latency.percentile_ns(99)},
                           {"count", fault_latency.total()},
                           {"log2_buckets", fault_latency.counts}};
  return j.dump();
}

}  // namespace farmem
