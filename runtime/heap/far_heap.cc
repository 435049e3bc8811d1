#include "heap/far_heap.h"

#include <algorithm>
#include <bit>

namespace farmem::heap {

FarHeap::FarHeap(pool::FarPool& pool, std::uint32_t page_bytes, std::uint64_t arena_bytes)
    : pool_(pool),
      page_bytes_(page_bytes),
      page_shift_(static_cast<unsigned>(std::countr_zero(page_bytes))),
      arena_bytes_(arena_bytes),
      partial_(page_shift_ - kMinClassShift + 1) {}

FarHeap::~FarHeap() {
  for (auto& a : arenas_) (void)pool_.free(a->range);
}

std::uint32_t FarHeap::class_of(std::size_t bytes, std::size_t align) const {
  const std::uint64_t need = std::max<std::uint64_t>({bytes, align, 1ull << kMinClassShift});
  return static_cast<std::uint32_t>(std::bit_width(need - 1)) - kMinClassShift;
}

Result<FarAddr> FarHeap::pages_locked(std::uint64_t pages) {
  const std::uint64_t bytes = pages * page_bytes_;
  if (bytes > arena_bytes_) {
    return InvalidArgument("run of " + std::to_string(pages) + " pages exceeds an arena of " +
                           std::to_string(arena_bytes_) + " bytes");
  }
  for (auto& a : arenas_) {
    if (auto off = a->pages.allocate(bytes, page_bytes_)) return a->range.addr + *off;
  }
  auto range = pool_.allocate(arena_bytes_);
  if (!range.ok()) return range.status();
  if ((range->addr.raw & (page_bytes_ - 1)) != 0) {
    (void)pool_.free(*range);
    return Internal("arena not page-aligned: slab_bytes must be a multiple of page_bytes");
  }
  arenas_.push_back(std::make_unique<Arena>(Arena{*range, pool::SlabAllocator(arena_bytes_)}));
  auto off = arenas_.back()->pages.allocate(bytes, page_bytes_);
  return arenas_.back()->range.addr + *off;
}

Status FarHeap::free_pages_locked(FarAddr addr, std::uint64_t pages) {
  for (auto& a : arenas_) {
    if (addr.raw < a->range.addr.raw || addr.raw >= a->range.addr.raw + arena_bytes_) continue;
    const std::uint64_t off = addr.raw - a->range.addr.raw;
    if (a->pages.block_bytes(off) != pages * page_bytes_ || !a->pages.free(off)) {
      return InvalidArgument("free of a page run that was not allocated with that size");
    }
    return Status::Ok();
  }
  return InvalidArgument("free of a far address outside the heap");
}

Result<FarHeap::Run*> FarHeap::new_run_locked(std::uint32_t cls) {
  FARMEM_ASSIGN_OR_RETURN(FarAddr page, pages_locked(1));
  auto run = std::make_unique<Run>();
  run->page = page;
  run->cls = cls;
  const std::uint64_t slots = page_bytes_ / class_bytes(cls);
  run->bitmap.assign((slots + 63) / 64, 0);
  Run* r = run.get();
  runs_.emplace(page.raw >> page_shift_, std::move(run));
  partial_[cls].push_back(r);
  return r;
}

Result<FarAddr> FarHeap::allocate(std::size_t bytes, std::size_t align) {
  if (bytes == 0) return InvalidArgument("object of 0 bytes");
  if (bytes > page_bytes_ || align > page_bytes_) {
    return InvalidArgument("object of " + std::to_string(bytes) + " bytes exceeds the " +
                           std::to_string(page_bytes_) +
                           "-byte page (far objects never straddle pages; use far_vector)");
  }
  MutexLock lock(mu_);
  const std::uint32_t cls = class_of(bytes, align);
  Run* r = nullptr;
  if (partial_[cls].empty()) {
    FARMEM_ASSIGN_OR_RETURN(r, new_run_locked(cls));
  } else {
    r = partial_[cls].back();
  }
  const std::uint64_t slots = page_bytes_ / class_bytes(cls);
  for (std::uint64_t w = 0; w < r->bitmap.size(); ++w) {
    if (r->bitmap[w] == ~0ull) continue;
    const std::uint64_t bit = static_cast<std::uint64_t>(std::countr_one(r->bitmap[w]));
    const std::uint64_t slot = w * 64 + bit;
    if (slot >= slots) break;
    r->bitmap[w] |= 1ull << bit;
    if (++r->used == slots) std::erase(partial_[cls], r);
    allocated_ += class_bytes(cls);
    return r->page + slot * class_bytes(cls);
  }
  return Internal("size-class run marked partial but full");
}

Status FarHeap::free(FarAddr addr) {
  MutexLock lock(mu_);
  auto it = runs_.find(addr.raw >> page_shift_);
  if (it == runs_.end()) return InvalidArgument("free of a far address the heap never handed out");
  Run* r = it->second.get();
  const std::uint64_t off = addr.raw & (page_bytes_ - 1);
  const std::uint64_t size = class_bytes(r->cls);
  const std::uint64_t slot = off / size;
  if (off % size != 0 || (r->bitmap[slot / 64] & (1ull << (slot % 64))) == 0) {
    return InvalidArgument("free of a far object that is not allocated (double free?)");
  }
  r->bitmap[slot / 64] &= ~(1ull << (slot % 64));
  const std::uint64_t slots = page_bytes_ / size;
  if (r->used-- == slots) partial_[r->cls].push_back(r);
  allocated_ -= size;
  if (r->used == 0) {
    std::erase(partial_[r->cls], r);
    const FarAddr page = r->page;
    runs_.erase(it);
    return free_pages_locked(page, 1);
  }
  return Status::Ok();
}

Result<FarAddr> FarHeap::allocate_pages(std::uint64_t pages) {
  if (pages == 0) return InvalidArgument("run of 0 pages");
  MutexLock lock(mu_);
  auto r = pages_locked(pages);
  if (r.ok()) allocated_ += pages * page_bytes_;
  return r;
}

Status FarHeap::free_pages(FarAddr addr, std::uint64_t pages) {
  MutexLock lock(mu_);
  FARMEM_RETURN_IF_ERROR(free_pages_locked(addr, pages));
  allocated_ -= pages * page_bytes_;
  return Status::Ok();
}

std::uint64_t FarHeap::allocated_bytes() const {
  MutexLock lock(mu_);
  return allocated_;
}

}  // namespace farmem::heap
