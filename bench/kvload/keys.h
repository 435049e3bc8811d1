// Which key an operation touches: YCSB's distributions, written from their descriptions.
//
// ZipfRanks is the generator of Gray et al., "Quickly Generating Billion-Record Synthetic
// Databases" (SIGMOD '94), the one YCSB's ZipfianGenerator uses: rank r (0 = hottest) comes
// up with probability proportional to 1 / (r + 1)^theta, in O(1) a draw after an O(n) zeta sum.
// ScrambledZipf hashes the rank (FNV-1a 64, modulo the key count, as YCSB's
// ScrambledZipfianGenerator does) so the hot keys are spread over the key space instead of
// being the lowest indices; like YCSB's, the hash is not a bijection, so a few keys share
// ranks and a few are never drawn.
#pragma once

#include <cstdint>

namespace farmem::kvload {

/// A uniform double in [0, 1) from 53 bits of a 64-bit random word.
inline double unit_double(std::uint64_t bits) {
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

/// splitmix64: a fast, well-mixed 64-bit generator (one per worker thread, not shared).
class SplitMix {
 public:
  explicit SplitMix(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double unit() { return unit_double(next()); }

 private:
  std::uint64_t s_;
};

/// FNV-1a over the 8 bytes of v (little-endian), YCSB's fnvhash64.
std::uint64_t fnv1a64(std::uint64_t v);

/// Ranks 0..n-1, rank r with probability (1/(r+1)^theta) / zeta(n, theta). 0 <= theta < 1
/// (theta = 1 makes Gray's exponent 1/(1-theta) infinite); theta = 0 is uniform.
class ZipfRanks {
 public:
  ZipfRanks(std::uint64_t n, double theta);
  /// The rank for a uniform u in [0, 1).
  std::uint64_t rank(double u) const;
  std::uint64_t n() const { return n_; }

 private:
  std::uint64_t n_;
  double theta_, zetan_, alpha_, eta_, half_pow_theta_;
};

enum class KeyDist { kZipf, kUniform };

/// A key index in 0..n-1 under the chosen distribution; const, shared by all threads (each
/// brings its own SplitMix).
class KeyChooser {
 public:
  KeyChooser(KeyDist dist, std::uint64_t n, double theta);
  std::uint64_t next(SplitMix& rng) const;

 private:
  KeyDist dist_;
  std::uint64_t n_;
  ZipfRanks zipf_;
};

}  // namespace farmem::kvload
