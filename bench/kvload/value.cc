#include "bench/kvload/value.h"

#include <algorithm>
#include <cstring>

#include "bench/kvload/keys.h"

namespace farmem::kvload {

namespace {

constexpr char kMagic[4] = {'K', 'V', 'L', '1'};
constexpr std::size_t kRunAt = 4, kKeyAt = 8, kVersionAt = 16;
static_assert(kVersionAt + 8 == kMinValueBytes, "the stamp is the value's first 24 bytes");

void put_le(char* p, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

std::uint64_t get_le(const char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace

std::uint64_t ValueCodec::seed(std::uint32_t run, std::uint64_t key, std::uint64_t version) {
  return fnv1a64(fnv1a64(key ^ (static_cast<std::uint64_t>(run) << 32)) ^ version);
}

std::uint32_t ValueCodec::length(std::uint32_t run, std::uint64_t key,
                                 std::uint64_t version) const {
  if (max_ <= min_) return min_;
  const std::uint64_t span = static_cast<std::uint64_t>(max_ - min_) + 1;
  return min_ + static_cast<std::uint32_t>(SplitMix(seed(run, key, version) ^ 1).next() % span);
}

void ValueCodec::fill(std::uint64_t seed, char* out, std::size_t n) {
  SplitMix g(seed);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const std::uint64_t w = g.next();
    std::memcpy(out + i, &w, 8);
  }
  if (i < n) {
    const std::uint64_t w = g.next();
    std::memcpy(out + i, &w, n - i);
  }
}

void ValueCodec::make(std::uint64_t key, std::uint64_t version, std::string& out) const {
  out.resize(length(run_, key, version));
  char* p = out.data();
  std::memcpy(p, kMagic, 4);
  put_le(p + kRunAt, run_, 4);
  put_le(p + kKeyAt, key, 8);
  put_le(p + kVersionAt, version, 8);
  fill(seed(run_, key, version), p + kMinValueBytes, out.size() - kMinValueBytes);
}

ValueCodec::Verdict ValueCodec::check(std::uint64_t key, std::uint64_t issued,
                                      std::string_view got) const {
  if (got.size() < kMinValueBytes || std::memcmp(got.data(), kMagic, 4) != 0) {
    return Verdict::kWrong;
  }
  const auto run = static_cast<std::uint32_t>(get_le(got.data() + kRunAt, 4));
  const std::uint64_t k = get_le(got.data() + kKeyAt, 8);
  const std::uint64_t version = get_le(got.data() + kVersionAt, 8);
  if (k != key) return Verdict::kWrong;
  // Another run's lengths came from its own --value-size, unknown here: only its filler is
  // checked (a value of that run truncated or extended would pass).
  if (run == run_ && (version >= issued || got.size() != length(run, key, version))) {
    return Verdict::kWrong;
  }
  // Compare the filler a word at a time against the generator, without a copy.
  SplitMix g(seed(run, key, version));
  for (std::size_t i = kMinValueBytes; i < got.size(); i += 8) {
    const std::uint64_t w = g.next();
    const std::size_t n = std::min<std::size_t>(8, got.size() - i);
    if (std::memcmp(got.data() + i, &w, n) != 0) return Verdict::kWrong;
  }
  return Verdict::kOk;
}

}  // namespace farmem::kvload
