// Allocation inside one slab: first-fit over a free list ordered by offset, coalescing on
// free. Pure logic (no transport), so it is tested on its own.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

namespace farmem::pool {

/// Small objects share cache lines with nothing else; page-sized ones start on a page.
inline constexpr std::uint64_t kMinAlignment = 64;
inline constexpr std::uint64_t kPageAlignment = 4096;

/// The alignment an allocation of `bytes` gets.
constexpr std::uint64_t alignment_for(std::uint64_t bytes) {
  return bytes >= kPageAlignment ? kPageAlignment : kMinAlignment;
}

class SlabAllocator {
 public:
  explicit SlabAllocator(std::uint64_t slab_bytes);

  /// The offset of a new block of `bytes` (rounded up to kMinAlignment), aligned to
  /// alignment_for(bytes), or nullopt when no free extent fits.
  std::optional<std::uint64_t> allocate(std::uint64_t bytes) {
    return allocate(bytes, alignment_for(bytes));
  }
  /// The same with an explicit alignment (a power of two >= kMinAlignment).
  std::optional<std::uint64_t> allocate(std::uint64_t bytes, std::uint64_t align);
  /// Frees the block at `offset`; false when no block starts there (double free, bad offset).
  bool free(std::uint64_t offset);

  std::uint64_t slab_bytes() const { return slab_bytes_; }
  std::uint64_t used_bytes() const { return used_; }
  bool empty() const { return used_ == 0; }
  /// Size of the block allocated at `offset` (0 when none).
  std::uint64_t block_bytes(std::uint64_t offset) const;

 private:
  std::uint64_t slab_bytes_;
  std::uint64_t used_ = 0;
  std::map<std::uint64_t, std::uint64_t> free_;    ///< offset -> length, non-adjacent
  std::map<std::uint64_t, std::uint64_t> blocks_;  ///< offset -> length of live blocks
};

}  // namespace farmem::pool
