#include "pool/slab_allocator.h"

namespace farmem::pool {

namespace {
constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }
}  // namespace

SlabAllocator::SlabAllocator(std::uint64_t slab_bytes) : slab_bytes_(slab_bytes) {
  if (slab_bytes_ > 0) free_.emplace(0, slab_bytes_);
}

std::optional<std::uint64_t> SlabAllocator::allocate(std::uint64_t bytes, std::uint64_t align) {
  if (bytes == 0 || bytes > slab_bytes_) return std::nullopt;
  const std::uint64_t len = round_up(bytes, kMinAlignment);
  align = std::max(align, kMinAlignment);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    const auto [start, extent] = *it;
    const std::uint64_t at = round_up(start, align);
    if (at - start + len > extent) continue;
    free_.erase(it);
    if (at > start) free_.emplace(start, at - start);  // alignment gap stays free
    if (at + len < start + extent) free_.emplace(at + len, start + extent - at - len);
    blocks_.emplace(at, len);
    used_ += len;
    return at;
  }
  return std::nullopt;
}

bool SlabAllocator::free(std::uint64_t offset) {
  auto b = blocks_.find(offset);
  if (b == blocks_.end()) return false;
  std::uint64_t start = offset;
  std::uint64_t len = b->second;
  used_ -= len;
  blocks_.erase(b);
  // Merge with the free extents on either side.
  auto next = free_.lower_bound(start);
  if (next != free_.end() && next->first == start + len) {
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      len += prev->second;
      free_.erase(prev);
    }
  }
  free_.emplace(start, len);
  return true;
}

std::uint64_t SlabAllocator::block_bytes(std::uint64_t offset) const {
  auto b = blocks_.find(offset);
  return b == blocks_.end() ? 0 : b->second;
}

}  // namespace farmem::pool
