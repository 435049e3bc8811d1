// How a FarAddr names a byte of far memory, independent of the memserver holding it:
//
//   63                 40 39                                      0
//   +--------------------+----------------------------------------+
//   |  slab index + 1    |           offset in the slab           |
//   +--------------------+----------------------------------------+
//          24 bits                        40 bits
//
// The slab index points into the runtime's slab table (which server, remote address, rkey);
// +1 keeps raw value 0 free for the null FarAddr. A slab can thus move or gain replicas
// without any FarAddr changing.
#pragma once

#include <cstdint>

#include "farmem/far_addr.h"

namespace farmem::pool {

inline constexpr unsigned kOffsetBits = 40;                     // slabs up to 1 TiB
inline constexpr std::uint64_t kOffsetMask = (1ull << kOffsetBits) - 1;
inline constexpr std::uint64_t kMaxSlabs = (1ull << (64 - kOffsetBits)) - 1;  // ~16.7 M
inline constexpr std::uint64_t kMaxSlabBytes = 1ull << kOffsetBits;

constexpr FarAddr make_far_addr(std::uint64_t slab_index, std::uint64_t offset) {
  return FarAddr{((slab_index + 1) << kOffsetBits) | (offset & kOffsetMask)};
}
constexpr std::uint64_t slab_index_of(FarAddr a) { return (a.raw >> kOffsetBits) - 1; }
constexpr std::uint64_t offset_of(FarAddr a) { return a.raw & kOffsetMask; }

}  // namespace farmem::pool
