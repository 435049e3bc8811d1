// The state of every page of a mapped region and the order in which resident pages are
// considered for eviction. Pure logic: no uffd, no transport (tested on its own).
//
// One byte a page:
//
//    7   6   5   4   3   2   1   0
//  +---+---+---+---+---+---+---+---+
//  | - | Q | S | P | R | W | D | V |   V resident   D dirty (far copy is stale)
//  +---+---+---+---+---+---+---+---+   W write-protected in the page tables
//                                      R referenced (second chance)  P prefetched, not yet used
//                                      S P was suggested by the stream prefetcher (vs pulled)
//                                      Q queued in the FIFO (at most one entry a page)
//
// Why FIFO with second chance (CLOCK in arrival order) and not real CLOCK: a region cannot
// see reads of resident pages (no fault is taken), so no access bit exists to sweep. What it
// does see is each page's demand fault and each first write after a (re)protection. R is set
// by those; a victim candidate with R set is re-queued once (and, if dirty, re-protected so
// that its next write is seen again). The list holds resident pages only, so picking a victim
// costs O(victims + second chances), not O(region size) as a clock over all pages would.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace farmem::region {

enum PageBits : std::uint8_t {
  kResident = 1u << 0,
  kDirty = 1u << 1,
  kWriteProtected = 1u << 2,
  kReferenced = 1u << 3,
  kPrefetched = 1u << 4,
  kFromStream = 1u << 5,
  kQueued = 1u << 6,
};

/// Page flags plus the eviction FIFO.
///
/// Thread safety: every mutation runs under the owning region's page lock. Flags are atomics
/// so that the handler thread may peek without the lock. Mutations release and peeks acquire:
/// a handler that sees a page absent also sees the write-back that preceded its drop, so the
/// fetch it then issues reads what was written (free on x86: plain loads, locked RMWs).
class PageTable {
 public:
  explicit PageTable(std::size_t pages)
      : pages_(pages),
        flags_(std::make_unique<std::atomic<std::uint8_t>[]>(pages)),
        fifo_(std::make_unique<std::uint32_t[]>(pages)) {}

  std::size_t pages() const { return pages_; }
  std::uint8_t flags(std::size_t p) const { return flags_[p].load(std::memory_order_acquire); }
  bool has(std::size_t p, std::uint8_t bits) const { return (flags(p) & bits) == bits; }
  void set(std::size_t p, std::uint8_t bits) { flags_[p].fetch_or(bits, std::memory_order_acq_rel); }
  void clear(std::size_t p, std::uint8_t bits) {
    flags_[p].fetch_and(static_cast<std::uint8_t>(~bits), std::memory_order_acq_rel);
  }
  std::size_t resident_pages() const { return resident_.load(std::memory_order_relaxed); }

  /// A page was just mapped: resident with `bits` (e.g. kWriteProtected | kReferenced) and
  /// queued at the FIFO tail.
  void install(std::size_t p, std::uint8_t bits) {
    const std::uint8_t queued = flags(p) & kQueued;  // a stale entry may still be queued
    flags_[p].store(static_cast<std::uint8_t>(kResident | bits | queued),
                    std::memory_order_release);
    resident_.fetch_add(1, std::memory_order_relaxed);
    enqueue(p);
  }

  /// A page was unmapped: every bit but Q cleared (its FIFO entry, if any, is skipped later).
  void remove(std::size_t p) {
    flags_[p].fetch_and(kQueued, std::memory_order_acq_rel);
    resident_.fetch_sub(1, std::memory_order_relaxed);
  }

  /// Puts a resident page (back) at the FIFO tail unless it is queued already.
  void enqueue(std::size_t p) {
    if (has(p, kQueued)) return;
    set(p, kQueued);
    fifo_[(fifo_head_ + fifo_size_) % pages_] = static_cast<std::uint32_t>(p);
    ++fifo_size_;
  }

  /// Appends up to `want` victims to `out`, oldest first. A referenced page loses R and goes
  /// to the tail; `on_second_chance(p)` runs for it (the region re-protects dirty pages there).
  /// Victims leave the FIFO: the caller must remove() them or enqueue() them again. Looks at
  /// each entry at most twice, so it ends even if every page keeps getting referenced.
  template <typename OnSecondChance>
  std::size_t pick_victims(std::size_t want, OnSecondChance&& on_second_chance,
                           std::vector<std::uint32_t>& out) {
    const std::size_t base = out.size();
    for (std::size_t budget = 2 * fifo_size_; budget > 0 && out.size() - base < want;
         --budget) {
      if (fifo_size_ == 0) break;
      const std::uint32_t p = fifo_[fifo_head_];
      fifo_head_ = (fifo_head_ + 1) % pages_;
      --fifo_size_;
      clear(p, kQueued);
      if (!has(p, kResident)) continue;  // stale entry of a dropped page
      if (has(p, kReferenced)) {
        clear(p, kReferenced);
        on_second_chance(p);
        enqueue(p);
      } else {
        out.push_back(p);
      }
    }
    return out.size() - base;
  }

 private:
  std::size_t pages_;
  std::unique_ptr<std::atomic<std::uint8_t>[]> flags_;
  std::atomic<std::size_t> resident_{0};
  /// Resident pages in arrival (or second-chance) order: a ring of one slot a page, which
  /// cannot overflow (Q: a page is queued at most once) and never allocates after
  /// construction, so a faulting thread may install pages from its SIGBUS handler.
  std::unique_ptr<std::uint32_t[]> fifo_;
  std::size_t fifo_head_ = 0;
  std::size_t fifo_size_ = 0;
};

}  // namespace farmem::region
