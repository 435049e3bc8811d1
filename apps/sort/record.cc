// The generator and the checksum's hash: splitmix64 steps (Steele et al.), cheap and good
// enough that keys look uniform and the two hash lanes are independent.
#include "sort/record.h"

#include <algorithm>

namespace farmem::sort {
namespace {

constexpr std::uint64_t kGolden = 0x9e3779b97f4a7c15ull;

std::uint64_t mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// One lane of the record hash: every 8 bytes folded in with a multiply, then finalised.
std::uint64_t hash_lane(const Record& r, std::uint64_t lane_seed) {
  const auto* p = reinterpret_cast<const unsigned char*>(&r);
  std::uint64_t h = lane_seed;
  std::size_t i = 0;
  for (; i + 8 <= Record::kBytes; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = mix(h ^ w) + kGolden;
  }
  std::uint32_t tail;  // 100 = 12 * 8 + 4
  static_assert(Record::kBytes % 8 == 4);
  std::memcpy(&tail, p + i, 4);
  return mix(h ^ tail ^ (std::uint64_t{Record::kBytes} << 32));
}

}  // namespace

void generate_record(std::uint64_t seed, std::uint64_t index, Record& out) {
  std::uint64_t state = mix(seed * kGolden + mix(index + kGolden));
  auto next = [&state] { return mix(state += kGolden); };
  auto* p = reinterpret_cast<unsigned char*>(&out);
  const std::uint64_t k0 = next(), k1 = next();
  std::memcpy(p, &k0, 8);
  std::memcpy(p + 8, &k1, 2);
  std::memcpy(p + 10, &index, 8);
  for (std::size_t i = 18; i < Record::kBytes; i += 8) {
    const std::uint64_t w = next();
    std::memcpy(p + i, &w, std::min<std::size_t>(8, Record::kBytes - i));
  }
}

void Checksum::add(const Record& r) {
  ++count;
  sum_a += hash_lane(r, 0x243f6a8885a308d3ull);  // digits of pi: any two distinct seeds do
  sum_b += hash_lane(r, 0x13198a2e03707344ull);
}

}  // namespace farmem::sort
