// Latency histogram, HdrHistogram-like log-linear buckets: values below 2^kSubBits each have
// a bucket, and every power of two above is split into 2^(kSubBits-1) equal buckets, so a
// bucket's width is under 1/64 of its values (a reported percentile is within 1.6 %), with a
// fixed 3.7k buckets (29 KiB) for any value up to 2^64 ns. One per worker thread, merged at
// the end: recording is an index computation and an increment, no lock.
#pragma once

#include <array>
#include <cstdint>

namespace farmem::kvload {

class Histogram {
 public:
  /// Bits of linear resolution: 2^7 = 128 unit buckets, then 64 buckets a power of two.
  static constexpr int kSubBits = 7;
  static constexpr std::uint64_t kSubCount = 1ull << kSubBits;
  static constexpr std::uint64_t kHalf = kSubCount / 2;
  static constexpr std::size_t kBuckets = kSubCount + (64 - kSubBits) * kHalf;

  void record(std::uint64_t v) {
    ++counts_[index(v)];
    ++total_;
    sum_ += v;
    if (v > max_) max_ = v;
  }
  void merge(const Histogram& o);
  std::uint64_t count() const { return total_; }
  std::uint64_t max() const { return max_; }
  double mean() const { return total_ ? static_cast<double>(sum_) / total_ : 0.0; }
  /// The smallest bucket upper bound with at least q (0..1) of the values at or below it,
  /// capped by the largest value recorded; 0 when empty.
  std::uint64_t percentile(double q) const;

  static std::size_t index(std::uint64_t v);
  /// The largest value that lands in bucket i.
  static std::uint64_t upper_bound(std::size_t i);

 private:
  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t total_ = 0, sum_ = 0, max_ = 0;
};

}  // namespace farmem::kvload
