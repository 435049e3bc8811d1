#include "memserver/slab_pool.h"

#include <hwloc.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace farmem::memserver {

SlabMemory& SlabMemory::operator=(SlabMemory&& o) noexcept {
  if (this != &o) {
    if (base_ != nullptr) munmap(base_, bytes_);
    base_ = o.base_;
    bytes_ = o.bytes_;
    o.base_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

SlabMemory::~SlabMemory() {
  if (base_ != nullptr) munmap(base_, bytes_);
}

struct SlabPool::Topology {
  hwloc_topology_t topo = nullptr;
  hwloc_bitmap_t nodeset = nullptr;
  ~Topology() {
    if (nodeset != nullptr) hwloc_bitmap_free(nodeset);
    if (topo != nullptr) hwloc_topology_destroy(topo);
  }
};

SlabPool::SlabPool(std::uint64_t capacity_bytes, std::uint64_t chunk_bytes, int numa_node)
    : capacity_(capacity_bytes), chunk_(chunk_bytes), numa_node_(numa_node) {
  if (numa_node_ < 0) return;
  topo_ = new Topology;
  if (hwloc_topology_init(&topo_->topo) != 0 || hwloc_topology_load(topo_->topo) != 0) {
    log().warn("hwloc could not load the topology; slabs will not be NUMA-bound");
    delete topo_;
    topo_ = nullptr;
    return;
  }
  topo_->nodeset = hwloc_bitmap_alloc();
  hwloc_bitmap_only(topo_->nodeset, static_cast<unsigned>(numa_node_));
}

SlabPool::~SlabPool() { delete topo_; }

Status SlabPool::bind_to_node(void* base, std::size_t bytes) {
  if (topo_ == nullptr) return Status::Ok();
  if (hwloc_set_area_membind(topo_->topo, base, bytes, topo_->nodeset, HWLOC_MEMBIND_BIND,
                             HWLOC_MEMBIND_BYNODESET) != 0) {
    return Internal("binding a slab to NUMA node " + std::to_string(numa_node_) +
                    " failed: " + std::strerror(errno));
  }
  return Status::Ok();
}

Result<SlabMemory> SlabPool::map(std::uint64_t bytes) {
  if (bytes == 0) return InvalidArgument("slab of 0 bytes");
  const std::uint64_t capacity = capacity_bytes();
  if (bytes > capacity) {
    return ResourceExhausted("slab of " + std::to_string(bytes) +
                             " bytes is larger than the pool capacity of " +
                             std::to_string(capacity));
  }
  const std::uint64_t rounded = (bytes + chunk_ - 1) / chunk_ * chunk_;
  // Reserve capacity first so concurrent maps can never overshoot it together.
  std::uint64_t used = used_.load(std::memory_order_relaxed);
  do {
    if (used + rounded > capacity) {
      return ResourceExhausted("pool at capacity: " + std::to_string(used) + " of " +
                               std::to_string(capacity) + " bytes leased, " +
                               std::to_string(rounded) + " more requested");
    }
  } while (!used_.compare_exchange_weak(used, used + rounded, std::memory_order_relaxed));

  void* p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    used_.fetch_sub(rounded, std::memory_order_relaxed);
    return ResourceExhausted("mmap of a " + std::to_string(rounded) +
                             "-byte slab failed: " + std::strerror(errno));
  }
  // Huge pages where the kernel has them: fewer TLB misses for the NIC and for TCP copies.
  madvise(p, rounded, MADV_HUGEPAGE);
  SlabMemory mem(static_cast<std::byte*>(p), rounded);
  if (auto st = bind_to_node(p, rounded); !st.ok()) {
    log().warn("{}", st.to_string());
  }
  return mem;
}

void SlabPool::unmap(SlabMemory memory) {
  used_.fetch_sub(memory.bytes(), std::memory_order_relaxed);
  // memory is unmapped as it goes out of scope here.
}

}  // namespace farmem::memserver
