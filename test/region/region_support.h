// Helpers the region suites share: far memory written and read directly, around any region.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "farmem/farmem.h"

namespace farmem::test {

/// Writes a pseudo-random pattern to `far` (no region involved) and returns it (the shadow).
inline std::vector<std::byte> fill_far(Runtime& rt, FarRange far, std::uint32_t seed) {
  std::vector<std::byte> shadow(far.bytes);
  std::mt19937 rng(seed);
  for (auto& b : shadow) b = std::byte(rng());
  auto buf = rt.local_buffer();
  for (std::size_t off = 0; off < far.bytes; off += buf.size()) {
    const std::size_t n = std::min(buf.size(), far.bytes - off);
    std::memcpy(buf.data(), shadow.data() + off, n);
    EXPECT_TRUE(rt.write(far.addr + off, buf.first(n)).ok());
  }
  return shadow;
}

/// Far memory read directly, without any region.
inline std::vector<std::byte> read_far(Runtime& rt, FarRange far) {
  std::vector<std::byte> out(far.bytes);
  auto buf = rt.local_buffer();
  for (std::size_t off = 0; off < far.bytes; off += buf.size()) {
    const std::size_t n = std::min(buf.size(), far.bytes - off);
    EXPECT_TRUE(rt.read(far.addr + off, buf.first(n)).ok());
    std::memcpy(out.data() + off, buf.data(), n);
  }
  return out;
}

}  // namespace farmem::test
