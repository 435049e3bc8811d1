#include "bench/kvload/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace farmem::kvload {

// Bucket layout: [0, 128) one value a bucket; then for each exponent e >= 7 (values in
// [2^e, 2^(e+1))) 64 buckets of width 2^(e-6), at kSubCount + (e - 7) * 64.
std::size_t Histogram::index(std::uint64_t v) {
  if (v < kSubCount) return static_cast<std::size_t>(v);
  const int e = 63 - std::countl_zero(v);
  const std::uint64_t sub = (v >> (e - kSubBits + 1)) - kHalf;  // 0..63
  return static_cast<std::size_t>(kSubCount + static_cast<std::uint64_t>(e - kSubBits) * kHalf +
                                  sub);
}

std::uint64_t Histogram::upper_bound(std::size_t i) {
  if (i < kSubCount) return i;
  const std::size_t e = (i - kSubCount) / kHalf + kSubBits;
  const std::uint64_t sub = (i - kSubCount) % kHalf;
  const int shift = static_cast<int>(e) - kSubBits + 1;
  const std::uint64_t lo = (kHalf + sub) << shift;
  return lo + ((1ull << shift) - 1);
}

void Histogram::merge(const Histogram& o) {
  for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
  total_ += o.total_;
  sum_ += o.sum_;
  max_ = std::max(max_, o.max_);
}

std::uint64_t Histogram::percentile(double q) const {
  if (total_ == 0) return 0;
  const auto want = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total_))));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= want) return std::min(upper_bound(i), max_);
  }
  return max_;
}

}  // namespace farmem::kvload
