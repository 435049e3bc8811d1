// What a region knows of each of its pages beyond what the paging core keeps per frame
// (dirty, referenced, prefetched: paging/pager.h): whether the page is mapped, whether it is
// write-protected in the page tables, and which pager frame accounts for it. Pure logic: no
// uffd, no transport.
//
// One byte a page:
//
//    7   6   5   4   3   2   1   0
//  +---+---+---+---+---+---+---+---+
//  | -   -   -   -   -   W   -   V |   V resident (mapped)   W write-protected
//  +---+---+---+---+---+---+---+---+
//
// Each unmapping also stamps the page with the region's drop epoch (a count of unmappings),
// so a fetch can tell whether the page was mapped, possibly written back, and unmapped while
// its read was in flight: a fetch notes epoch() before its read goes out, and under the page
// lock installs a page only if !dropped_since(page, noted). Otherwise its bytes may predate a
// write-back and are thrown away (the access faults again and reads the new bytes).
//
// Besides, a page of a new region (Runtime::map) is "fresh" until its first write-back: far
// memory holds nothing of it yet, so a fault maps zeros without a read and no prefetch asks
// for it. Fresh-ness only ends (stage() marks the page written, under the page lock, before
// its drop bumps the epoch), so a fetch that notes epoch() before it reads written() and then
// finds the page not dropped since at install maps the right bytes either way.
//
// Eviction order is the pager's CLOCK over frames. A region cannot see reads of resident
// pages (no fault is taken), so its reference bits are set by what it does see: each demand
// fault and each first write after a (re)protection; when CLOCK passes over a referenced
// dirty page the region re-protects it, so that its next write is seen again.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/dcheck.h"

namespace farmem::region {

enum PageBits : std::uint8_t {
  kResident = 1u << 0,
  kWriteProtected = 1u << 2,
};

/// A page's frame when it is not resident.
inline constexpr std::uint32_t kNoFrame = ~std::uint32_t{0};

/// Page flags and the page -> frame map.
///
/// Thread safety: every mutation runs under the owning region's page lock. Flags are atomics
/// so that the handler thread and signal handlers may peek without the lock. Mutations
/// release and peeks acquire: a handler that sees a page absent also sees the write-back that
/// preceded its drop, so the fetch it then issues reads what was written.
class PageTable {
 public:
  /// `fresh`: far memory holds nothing of any page yet (a new region): every page reads as
  /// zeros until written back. Otherwise (a far range mapped again) every page is read.
  explicit PageTable(std::size_t pages, bool fresh = false)
      : pages_(pages),
        flags_(std::make_unique<std::atomic<std::uint8_t>[]>(pages)),
        frame_(std::make_unique<std::atomic<std::uint32_t>[]>(pages)),
        dropped_at_(std::make_unique<std::atomic<std::uint64_t>[]>(pages)),
        written_(std::make_unique<std::atomic<std::uint8_t>[]>(pages)) {
    for (std::size_t p = 0; p < pages; ++p) {
      frame_[p].store(kNoFrame, std::memory_order_relaxed);
      dropped_at_[p].store(0, std::memory_order_relaxed);
      written_[p].store(fresh ? 0 : 1, std::memory_order_relaxed);
    }
  }

  std::size_t pages() const { return pages_; }
  std::uint8_t flags(std::size_t p) const { return flags_[p].load(std::memory_order_acquire); }
  bool has(std::size_t p, std::uint8_t bits) const { return (flags(p) & bits) == bits; }
  void set(std::size_t p, std::uint8_t bits) {
    check_protection_change(p, bits);
    flags_[p].fetch_or(bits, std::memory_order_acq_rel);
  }
  void clear(std::size_t p, std::uint8_t bits) {
    check_protection_change(p, bits);
    flags_[p].fetch_and(static_cast<std::uint8_t>(~bits), std::memory_order_acq_rel);
  }
  std::size_t resident_pages() const { return resident_.load(std::memory_order_relaxed); }
  /// The pager frame of a resident page (kNoFrame otherwise).
  std::uint32_t frame(std::size_t p) const { return frame_[p].load(std::memory_order_acquire); }

  /// A page was just mapped into `frame`: resident, plus `bits` (kWriteProtected or 0).
  void install(std::size_t p, std::uint32_t frame, std::uint8_t bits) {
    FARMEM_DCHECK_LT(p, pages_);
    FARMEM_DCHECK_MSG(flags(p) == 0, "page {} mapped twice (flags {:#x})", p, flags(p));
    FARMEM_DCHECK_NE(frame, kNoFrame);
    FARMEM_DCHECK_EQ(bits & ~kWriteProtected, 0);
    frame_[p].store(frame, std::memory_order_relaxed);
    flags_[p].store(static_cast<std::uint8_t>(kResident | bits), std::memory_order_release);
    resident_.fetch_add(1, std::memory_order_relaxed);
  }

  /// A page was unmapped (after its write-back, if it was dirty).
  void remove(std::size_t p) {
    FARMEM_DCHECK_LT(p, pages_);
    FARMEM_DCHECK_MSG(has(p, kResident), "page {} unmapped but not resident", p);
    FARMEM_DCHECK_GT(resident_.load(std::memory_order_relaxed), 0u);
    dropped_at_[p].store(drop_epoch_.fetch_add(1, std::memory_order_acq_rel) + 1,
                         std::memory_order_release);
    flags_[p].store(0, std::memory_order_release);
    frame_[p].store(kNoFrame, std::memory_order_relaxed);
    resident_.fetch_sub(1, std::memory_order_relaxed);
  }

  /// Whether far memory holds the page's bytes (not fresh): read it, do not map zeros. Read
  /// it only after noting epoch() (see the header comment).
  bool written(std::size_t p) const { return written_[p].load(std::memory_order_acquire) != 0; }
  /// The page is being written back (stage(), under the page lock, before its drop): far
  /// memory holds it from now on.
  void note_written(std::size_t p) {
    FARMEM_DCHECK_MSG(has(p, kResident), "page {} written back but not resident", p);
    written_[p].store(1, std::memory_order_release);
  }

  /// The drop epoch now: note it before a fetch's read goes out.
  std::uint64_t epoch() const { return drop_epoch_.load(std::memory_order_acquire); }
  /// True when page `p` was unmapped after `epoch` was noted, so bytes fetched since then
  /// may be older than its last write-back. Exact under the page lock (unmapping holds it).
  /// 64 bits, compared as they are: a page's stamp may be as old as the region (a page never
  /// dropped has 0), so a 32-bit epoch that wrapped after 2^31 drops elsewhere would call it
  /// dropped at every fetch from then on, and its fetches would be discarded forever.
  bool dropped_since(std::size_t p, std::uint64_t epoch) const {
    return dropped_at_[p].load(std::memory_order_acquire) > epoch;
  }

 private:
  // Residency changes only through install/remove; set/clear change a resident page's
  // write protection (W without V is no state).
  void check_protection_change([[maybe_unused]] std::size_t p,
                               [[maybe_unused]] std::uint8_t bits) const {
    FARMEM_DCHECK_LT(p, pages_);
    FARMEM_DCHECK_EQ(bits, kWriteProtected);
    FARMEM_DCHECK_MSG(has(p, kResident), "protection of page {} changed while not resident", p);
  }

  std::size_t pages_;
  std::unique_ptr<std::atomic<std::uint8_t>[]> flags_;
  std::unique_ptr<std::atomic<std::uint32_t>[]> frame_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> dropped_at_;  ///< drop epoch of the last unmap
  std::unique_ptr<std::atomic<std::uint8_t>[]> written_;       ///< 0: fresh (far holds nothing)
  std::atomic<std::uint64_t> drop_epoch_{0};                   ///< unmappings so far
  std::atomic<std::size_t> resident_{0};
};

}  // namespace farmem::region
