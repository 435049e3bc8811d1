// The memserver's pool: slab memory is mmapped only when a slab is handed out and unmapped
// when it is freed, so an idle memserver holds almost nothing. Capacity is enforced here.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "farmem/status.h"

namespace farmem::memserver {

/// An mmapped range; unmapped by its destructor. Move-only.
class SlabMemory {
 public:
  SlabMemory() = default;
  SlabMemory(std::byte* base, std::size_t bytes) : base_(base), bytes_(bytes) {}
  SlabMemory(SlabMemory&& o) noexcept : base_(o.base_), bytes_(o.bytes_) {
    o.base_ = nullptr;
    o.bytes_ = 0;
  }
  SlabMemory& operator=(SlabMemory&& o) noexcept;
  SlabMemory(const SlabMemory&) = delete;
  SlabMemory& operator=(const SlabMemory&) = delete;
  ~SlabMemory();

  std::byte* base() const { return base_; }
  std::size_t bytes() const { return bytes_; }

 private:
  std::byte* base_ = nullptr;
  std::size_t bytes_ = 0;
};

class SlabPool {
 public:
  /// `numa_node` >= 0 binds every slab to that NUMA node (hwloc); -1 leaves placement to
  /// the kernel.
  SlabPool(std::uint64_t capacity_bytes, std::uint64_t chunk_bytes, int numa_node);
  ~SlabPool();
  SlabPool(const SlabPool&) = delete;
  SlabPool& operator=(const SlabPool&) = delete;

  /// Maps a zero-filled slab of `bytes` rounded up to the chunk size; kResourceExhausted
  /// when that would exceed the capacity.
  Result<SlabMemory> map(std::uint64_t bytes);
  /// Returns a slab's bytes to the pool (the SlabMemory is unmapped by the caller dropping it).
  void unmap(SlabMemory memory);

  std::uint64_t capacity_bytes() const { return capacity_.load(std::memory_order_relaxed); }
  /// Moves the capacity (--capacity auto). Below what is leased, new slabs are refused and
  /// nothing leased is taken back.
  void set_capacity(std::uint64_t bytes) { capacity_.store(bytes, std::memory_order_relaxed); }
  std::uint64_t chunk_bytes() const { return chunk_; }
  std::uint64_t used_bytes() const { return used_.load(std::memory_order_relaxed); }

 private:
  Status bind_to_node(void* base, std::size_t bytes);

  std::atomic<std::uint64_t> capacity_;
  const std::uint64_t chunk_;
  const int numa_node_;
  std::atomic<std::uint64_t> used_{0};
  struct Topology;  // hwloc, only when numa_node_ >= 0
  Topology* topo_ = nullptr;
};

}  // namespace farmem::memserver
