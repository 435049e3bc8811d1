// The far heap behind make_far and the containers: objects up to a page come from size
// classes (powers of two from 16 bytes to a page), one page a run, so no object straddles a
// page; containers get page-aligned runs of whole pages. Far memory comes from the runtime
// in arenas of one slab each. Metadata (free bitmaps) stays local.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/far_addr.h"
#include "farmem/status.h"
#include "pool/far_pool.h"
#include "pool/slab_allocator.h"

namespace farmem::heap {

class FarHeap {
 public:
  /// `arena_bytes` is a multiple of `page_bytes`; each arena is one runtime allocation.
  FarHeap(pool::FarPool& pool, std::uint32_t page_bytes, std::uint64_t arena_bytes);
  ~FarHeap();  // returns every arena to the runtime
  FarHeap(const FarHeap&) = delete;
  FarHeap& operator=(const FarHeap&) = delete;

  /// An object of `bytes` (<= page) aligned to `align` (<= page).
  Result<FarAddr> allocate(std::size_t bytes, std::size_t align);
  /// Frees an object; kInvalidArgument for anything not allocated (double free included).
  Status free(FarAddr addr);

  /// `pages` contiguous, page-aligned pages.
  Result<FarAddr> allocate_pages(std::uint64_t pages);
  Status free_pages(FarAddr addr, std::uint64_t pages);

  /// Bytes handed out and not freed (objects at their class size, pages whole).
  std::uint64_t allocated_bytes() const;

 private:
  struct Run {
    FarAddr page;
    std::uint32_t cls = 0;
    std::uint32_t used = 0;
    std::vector<std::uint64_t> bitmap;  ///< 1 = slot allocated
  };
  struct Arena {
    FarRange range;
    pool::SlabAllocator pages;  ///< byte offsets within the arena
  };

  static constexpr std::uint32_t kMinClassShift = 4;  ///< 16 bytes: two pointers
  std::uint32_t class_of(std::size_t bytes, std::size_t align) const;
  std::uint64_t class_bytes(std::uint32_t cls) const { return 1ull << (kMinClassShift + cls); }
  Result<FarAddr> pages_locked(std::uint64_t pages) FARMEM_REQUIRES(mu_);
  Status free_pages_locked(FarAddr addr, std::uint64_t pages) FARMEM_REQUIRES(mu_);
  Result<Run*> new_run_locked(std::uint32_t cls) FARMEM_REQUIRES(mu_);

  pool::FarPool& pool_;  ///< where arenas come from (injected; outlives the heap)
  const std::uint32_t page_bytes_;
  const unsigned page_shift_;
  const std::uint64_t arena_bytes_;
  mutable Mutex mu_;  ///< guards everything below
  std::vector<std::unique_ptr<Arena>> arenas_ FARMEM_GUARDED_BY(mu_);
  /// Per class: runs with a free slot.
  std::vector<std::vector<Run*>> partial_ FARMEM_GUARDED_BY(mu_);
  /// By page key.
  std::unordered_map<std::uint64_t, std::unique_ptr<Run>> runs_ FARMEM_GUARDED_BY(mu_);
  std::uint64_t allocated_ FARMEM_GUARDED_BY(mu_) = 0;
};

}  // namespace farmem::heap
