// farmem/detail/cache_view.h: the parts of the page cache that far_ptr's inline hit path reads.
// Not an API: layouts here may change with any release.
//
// Page-table entry (one std::atomic<uint64_t> per far page):
//
//   63                              32 31                            3 2      0
//   +---------------------------------+-------------------------------+--------+
//   |        frame index (32)         |     reserved (29, for replica | state  |
//   |                                 |     / migration states)       |  (3)   |
//   +---------------------------------+-------------------------------+--------+
//
//   state: kAbsent   - not local; the first thread to CAS it to kFetching fetches it
//          kFetching - one thread is reading it from far memory; others wait
//          kPresent  - in frame `frame index`; hits read it with one plain load
//          kEvicting - the evictor is taking it away; accessors wait, then refetch
//
// Reference and dirty bits live in per-frame byte arrays, not in the entry, so that a hit
// needs no read-modify-write: it only stores 1 into its frame's bytes.
//
// Page keys: key = FarAddr.raw >> page_shift, i.e. (slab index + 1) : page within slab.
// The table is a two-level radix over the slab index, then a flat array per slab:
//
//   key ──► slab = (key >> slab_page_bits) - 1
//           dir[slab >> kDirBits] ──► block[slab & kDirMask] ──► Leaf.pte[key & page_mask]
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "farmem/status.h"

namespace farmem::detail {

inline constexpr std::uint64_t kPteStateMask = 7;
inline constexpr std::uint64_t kPteAbsent = 0;
inline constexpr std::uint64_t kPteFetching = 1;
inline constexpr std::uint64_t kPtePresent = 2;
inline constexpr std::uint64_t kPteEvicting = 3;
inline constexpr unsigned kPteFrameShift = 32;

constexpr std::uint64_t pte_state(std::uint64_t pte) { return pte & kPteStateMask; }
constexpr std::uint32_t pte_frame(std::uint64_t pte) {
  return static_cast<std::uint32_t>(pte >> kPteFrameShift);
}
constexpr std::uint64_t make_pte(std::uint32_t frame, std::uint64_t state) {
  return (std::uint64_t{frame} << kPteFrameShift) | state;
}

/// Slab-index radix: 12 bits a level covers the 24-bit slab index in two levels.
inline constexpr unsigned kDirBits = 12;
inline constexpr std::uint64_t kDirSize = 1u << kDirBits;
inline constexpr std::uint64_t kDirMask = kDirSize - 1;

/// The entries of one slab's pages.
struct Leaf {
  std::uint64_t pages = 0;
  std::unique_ptr<std::atomic<std::uint64_t>[]> pte;
};
struct DirBlock {
  std::atomic<Leaf*> leaf[kDirSize] = {};
};

/// How many distinct pages one scope remembers having touched (see ThreadSlot). A scope that
/// touches more can still block on eviction only by timing out; 64 covers any container op.
inline constexpr std::uint32_t kMaxTouched = 64;

/// Per-thread state the evictor inspects. Owned by one thread; cache-line aligned so threads
/// never share a line.
struct alignas(64) ThreadSlot {
  /// Odd while the thread is inside a DerefScope; +1 at entry and at exit.
  std::atomic<std::uint64_t> state{0};
  /// 1 while the thread is blocked inside the cache; `touched` is then stable and the
  /// evictor may evict anything not in it.
  std::atomic<std::uint32_t> waiting{0};
  std::uint32_t depth = 0;     ///< scope nesting (owner only)
  std::atomic<std::uint32_t> ntouched{0};
  /// Relaxed atomics, not plain words: an evictor that saw the owner waiting may still be
  /// reading them when the owner, done waiting, has opened a new scope and writes them again
  /// (what it read then is stale and harmless: the scope's state changed, and pages marked
  /// evicting are refetched, not used; but a plain word would be a data race).
  std::atomic<std::uint64_t> touched[kMaxTouched] = {};
  std::atomic<std::uint64_t> hits{0};  ///< owner adds with load+store (no RMW)
  std::atomic<bool> in_use{false};
  std::uint32_t index = 0;
};

/// Records that the owner of `slot` touched page `key` in its current scope (owner thread
/// only; relaxed stores). Past kMaxTouched the count saturates at kMaxTouched + 1: "overflowed".
inline void note_touched(ThreadSlot* slot, std::uint64_t key) {
  const std::uint32_t n = slot->ntouched.load(std::memory_order_relaxed);
  if (n < kMaxTouched) slot->touched[n].store(key, std::memory_order_relaxed);
  if (n <= kMaxTouched) slot->ntouched.store(n + 1, std::memory_order_relaxed);
}

class PageCache;

/// Everything the inline hit path needs, copied into each DerefScope at construction.
struct CacheView {
  PageCache* cache = nullptr;
  std::uint64_t id = 0;                ///< unique per cache instance (pointers get reused)
  std::atomic<DirBlock*>* dir = nullptr;  ///< the top level (kDirSize entries)
  std::byte* frames = nullptr;         ///< frame i is at frames + (i << page_shift)
  std::atomic<std::uint8_t>* ref = nullptr;
  std::atomic<std::uint8_t>* dirty = nullptr;
  std::atomic<std::uint8_t>* prefetched = nullptr;
  unsigned page_shift = 12;
  unsigned slab_page_bits = 28;        ///< 40 (FarAddr offset bits) - page_shift
  /// Set, with cache null, when the page cache could not be created: why.
  const Status* error = nullptr;
};

/// The page-table entry of page `key` (kPteAbsent when the table has no leaf for it): the
/// radix walk of the inline hit path, three plain loads.
inline std::uint64_t pte_of(const CacheView& v, std::uint64_t key) {
  const std::uint64_t slab = (key >> v.slab_page_bits) - 1;
  const std::uint64_t page = key & ((std::uint64_t{1} << v.slab_page_bits) - 1);
  if ((slab >> (2 * kDirBits)) != 0) return kPteAbsent;
  DirBlock* blk = v.dir[(slab >> kDirBits) & kDirMask].load(std::memory_order_acquire);
  if (blk == nullptr) return kPteAbsent;
  const Leaf* leaf = blk->leaf[slab & kDirMask].load(std::memory_order_acquire);
  if (leaf == nullptr || page >= leaf->pages) return kPteAbsent;
  return leaf->pte[page].load(std::memory_order_acquire);
}

/// Out of line (libfarmem): the miss path. Returns the local address of the page holding
/// `raw`, or nullptr with the scope's error set.
std::byte* cache_fault(PageCache* cache, ThreadSlot* slot, std::uint64_t key, bool write,
                       void* scope_error);
/// Out of line: the miss path of a page the caller overwrites whole (not fetched: zeroed).
std::byte* cache_fault_overwrite(PageCache* cache, ThreadSlot* slot, std::uint64_t key,
                                 void* scope_error);
/// Out of line: first use of a prefetched page (feeds the trend detector).
void cache_prefetch_hit(PageCache* cache, ThreadSlot* slot, std::uint64_t key,
                        std::uint32_t frame);
/// Out of line: the calling thread's slot (registered on first use), nullptr when the cache has none left for it.
ThreadSlot* cache_thread_slot(PageCache* cache);
/// Sets *scope_error (a Status) to the error of a thread without a slot.
void cache_no_slot_error(PageCache* cache, void* scope_error);
CacheView cache_view(PageCache* cache);

}  // namespace farmem::detail
