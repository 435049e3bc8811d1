// farmem/far_addr.h: names of far memory.
#pragma once

#include <cstdint>

namespace farmem {

/// An address in far memory. Opaque: names a slab and an offset, independent of which
/// memserver holds the slab. The default value is null.
struct FarAddr {
  std::uint64_t raw = 0;
  bool is_null() const { return raw == 0; }
  FarAddr operator+(std::uint64_t off) const { return FarAddr{raw + off}; }
  friend bool operator==(FarAddr, FarAddr) = default;
};

/// A far allocation.
struct FarRange {
  FarAddr addr;
  std::uint64_t bytes = 0;
};

}  // namespace farmem
