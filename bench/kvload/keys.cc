#include "bench/kvload/keys.h"

#include <algorithm>
#include <cmath>

namespace farmem::kvload {

namespace {

constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ull;
constexpr std::uint64_t kFnvPrime = 0x100000001b3ull;

// zeta(n, theta) = sum over i = 1..n of 1 / i^theta. O(n): a million keys take a few ms.
double zeta(std::uint64_t n, double theta) {
  double sum = 0;
  for (std::uint64_t i = 1; i <= n; ++i) sum += 1.0 / std::pow(static_cast<double>(i), theta);
  return sum;
}

}  // namespace

std::uint64_t fnv1a64(std::uint64_t v) {
  std::uint64_t h = kFnvOffset;
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= kFnvPrime;
  }
  return h;
}

ZipfRanks::ZipfRanks(std::uint64_t n, double theta)
    : n_(std::max<std::uint64_t>(n, 1)), theta_(theta) {
  zetan_ = zeta(n_, theta_);
  const double zeta2 = zeta(2, theta_);
  alpha_ = 1.0 / (1.0 - theta_);
  // With one key (or two) eta's denominator is 0; rank() never reaches the formula then.
  eta_ = n_ > 2 ? (1.0 - std::pow(2.0 / static_cast<double>(n_), 1.0 - theta_)) /
                      (1.0 - zeta2 / zetan_)
                : 0.0;
  half_pow_theta_ = std::pow(0.5, theta_);
}

std::uint64_t ZipfRanks::rank(double u) const {
  const double uz = u * zetan_;
  if (uz < 1.0) return 0;
  if (uz < 1.0 + half_pow_theta_) return std::min<std::uint64_t>(1, n_ - 1);
  const double r = static_cast<double>(n_) * std::pow(eta_ * u - eta_ + 1.0, alpha_);
  return std::min(static_cast<std::uint64_t>(r), n_ - 1);
}

KeyChooser::KeyChooser(KeyDist dist, std::uint64_t n, double theta)
    : dist_(dist), n_(std::max<std::uint64_t>(n, 1)),
      zipf_(dist == KeyDist::kZipf ? n : 1, dist == KeyDist::kZipf ? theta : 0.0) {}

std::uint64_t KeyChooser::next(SplitMix& rng) const {
  if (dist_ == KeyDist::kUniform) return rng.next() % n_;
  return fnv1a64(zipf_.rank(rng.unit())) % n_;
}

}  // namespace farmem::kvload
