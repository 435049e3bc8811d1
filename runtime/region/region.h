// Mapped regions, internal side: options, the factory Runtime::map/open_region call, and the
// Region::Impl that runs them.
//
// Threads and locks of one region:
//
//   handler-thread mode (default):
//   application threads ──fault──► kernel ──uffd msg──► handler thread (one per region)
//        │ flush/advise                                   │ MISSING: charge, fetch, COPY(+WP)
//        ▼                                                │ WP:      mark dirty, un-protect
//   page_mu_ ◄─── the pager's passes (evictor, reclaim) ──┤ pull:    background fetches
//   (page table, FIFO, write-back staging, protection     │ spins ~50 us after a fault before
//    changes, drops)                                      │ sleeping in poll()
//                                                         │
//   faulting-thread mode (UFFD_FEATURE_SIGBUS):           │
//   application thread ──fault──► SIGBUS handler on that thread (region_sigbus.cc):
//        charge from free room, fetch into a faulter slot, COPY; or, inside a farmem call /
//        no room / no slot / fetch failed: hand-off mailbox ──► handler thread (the helper)
//
//   The region is a front end of the paging core (paging/pager.h): the pager accounts each
//   resident page in a frame, charges the budget, runs CLOCK and the background evictor
//   (which keeps a free reserve, so faults charge without evicting while it holds), and
//   writes dirty victims back in batches. The region's side (region_evict.cc) isolates
//   victims (write-protection), stages their bytes and unmaps them.
//
// Invariants that make the races benign:
//  1. Only fault servers (the handler thread; in faulting-thread mode also faulting threads
//     in their signal handler) map pages (UFFDIO_COPY) and remove write protection, under
//     page_mu_; other threads (the pager's passes) only add protection and drop pages, always
//     under page_mu_ (Frontend::lock_pages).
//  2. A dirty page is write-protected before it is copied for write-back, and it is dropped
//     (MADV_DONTNEED) only after the write-back completed, all under page_mu_; a fault on it
//     is served only after page_mu_ is released, so it re-reads what was written.
//  3. page_mu_ is never held while charging with eviction (Pager::charge_pages may run a
//     pass of this region's pager, which takes page_mu_), so reclaimers cannot deadlock.
//     Installing a charged page (Pager::install_charged) under page_mu_ is fine: it takes
//     only the pager's leaf lock.
//  4. Budget: charged (by the pager) before a page is mapped, uncharged after it is unmapped.
//  5. No region page is touched while page_mu_ (or any region lock) is held by the toucher,
//     except resident pages for reading; so a fault never interrupts a holder of page_mu_,
//     and a SIGBUS handler may take it.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "paging/budget.h"
#include "paging/pager.h"
#include "paging/trend.h"
#include "farmem/region.h"
#include "farmem/far_addr.h"
#include "farmem/io_batch.h"
#include "pool/io_service.h"
#include "region/page_table.h"
#include "region/region_constants.h"
#include "region/region_stats.h"
#include "region/sigbus.h"
#include "region/uffd.h"

namespace farmem::region {

struct RegionOptions {
  /// Fault-driven prefetching along detected strides (Advice::kRandom/kSequential override).
  bool prefetch = true;
  /// Deepest prefetch of one stream, in pages (128 KiB: Linux's default readahead).
  std::uint32_t max_prefetch_pages = 32;
  /// How long a demand fetch (or charge) that keeps failing is retried before the faulting
  /// thread gets SIGBUS; zero retries forever (like an NFS hard mount).
  std::chrono::milliseconds fault_retry_deadline{30'000};
  /// Longest sleep of an idle handler thread. Only a backstop: stop requests and new work
  /// signal an eventfd, so nothing normally waits for this.
  std::chrono::milliseconds idle_poll{200};
  /// Who serves faults (see farmem::FaultMode).
  FaultMode fault_mode = FaultMode::kHandlerThread;
  /// A new far range (Runtime::map): its pages read as zeros until first written back, with
  /// no far read (page_table.h). False: a range mapped again, every page read.
  bool fresh = false;
};

/// Maps `far` as a region doing its far I/O through `io` and charging `budget`. Both must
/// outlive it.
Result<std::unique_ptr<Region>> make_region(pool::IoService& io, paging::Budget& budget, FarRange far,
                                            RegionOptions options = {});

}  // namespace farmem::region

namespace farmem {

namespace region {

/// A fault handed from a faulting thread (in its SIGBUS handler) to the helper thread.
/// state: kFree -> (faulter claims) kClaimed -> kPosted -> (helper serves) kDone -> kFree.
/// The faulter futex-waits on `state` while it is kPosted.
struct Handoff {
  enum : std::uint32_t { kFree, kClaimed, kPosted, kDone };
  std::atomic<std::uint32_t> state{kFree};
  std::uintptr_t addr = 0;  ///< written by the faulter before kPosted
  bool write = false;
  bool ok = false;  ///< written by the helper before kDone
};

/// A readahead request in one word, so a signal handler can post it with one atomic store:
///
///   63  62                                    12 11           0
///  +---+----------------------------------------+--------------+
///  | W |  first page                             |  page count  |   W: map writable, dirty
///  +---+----------------------------------------+--------------+
inline std::uint64_t pack_readahead(std::uint64_t first, std::uint64_t count, bool write) {
  return (write ? (1ull << 63) : 0) | (first << 12) | (count & 0xFFF);
}
struct Readahead {
  std::size_t first;
  std::size_t count;
  bool write;
};
inline Readahead unpack_readahead(std::uint64_t r) {
  return {static_cast<std::size_t>((r >> 12) & ((1ull << 51) - 1)),
          static_cast<std::size_t>(r & 0xFFF), (r >> 63) != 0};
}
static_assert(kMaxPrefetchPagesLimit < 0xFFF, "a readahead count must fit 12 bits");

/// Registered staging a faulting thread fetches into on its own stack, with a batch reused
/// fault after fault (warmed at start, so the signal path allocates nothing).
struct FaulterSlot {
  std::span<std::byte> staging;
  IoBatch batch;
};

}  // namespace region

struct Region::Impl final : paging::Frontend, region::FaultServer {
  Impl(pool::IoService& io, paging::Budget& budget, FarRange far, region::RegionOptions options);
  ~Impl() override;  // see region.cc: remove reclaimer, flush, stop, unmap, uncharge
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  /// Maps, registers with userfaultfd and the runtime, starts the handler thread.
  Status start();

  // ---- public API, any thread (region.cc) ----
  /// Writes every dirty page back (Runtime::flush() reaches it through the pager, a
  /// reclaimer of the shared budget).
  Status flush();
  Status advise(std::size_t offset, std::size_t length, Advice advice);
  Status set_pull_order(std::vector<std::size_t> pages);
  /// Advice::kDontNeed on pages [first, end): write back what is dirty, then drop.
  Status drop_range(std::size_t first, std::size_t end);
  CacheStats stats() const;
  Status prefault(std::size_t offset, std::size_t bytes);

  // ---- geometry ----
  std::byte* page_addr(std::size_t p) const { return mem.data() + p * region::kPageSize; }
  /// Bytes of page p that belong to the far range (the last page may be partial).
  std::size_t page_bytes(std::size_t p) const;
  FarAddr page_far(std::size_t p) const { return far.addr + p * region::kPageSize; }
  std::size_t page_of(std::uint64_t address) const;

  // ---- handler thread (region_pager.cc) ----
  void run_on_handler();
  void spin_after_fault_on_handler();
  bool drain_faults_on_handler();
  void handle_missing_on_handler(const uffd_msg& msg, std::chrono::steady_clock::time_point t0);
  void handle_wp_on_handler(std::size_t page);
  void serve_present_on_handler(std::size_t page);
  void note_stream_progress_on_handler(std::size_t page, std::vector<std::int64_t>& suggested);
  /// Fills `candidates` with absent pages worth prefetching after a fault on `page`.
  void prefetch_candidates_on_handler(std::size_t page);
  bool fetch_demand_on_handler(std::size_t page, const uffd_msg& msg);
  /// Charges what it can of `candidates` into `charged` and queues their reads in
  /// prefetch_batch.
  void charge_prefetch_on_handler() FARMEM_EXCLUDES(page_mu_);
  /// Waits for prefetch_batch (submitted with status `st`, after the table's drop epoch was
  /// `epoch`) and maps its pages.
  void finish_prefetch_on_handler(std::span<const std::uint32_t> pf, Status st,
                                  std::uint64_t epoch);
  bool retry_on_handler(const char* what, const Status& first, const uffd_msg& msg,
                        Status (Impl::*attempt)(std::size_t), std::size_t page);
  Status charge_one_on_handler(std::size_t page);
  Status read_one_on_handler(std::size_t page);
  /// Maps the demand page read into fetch_staging, unless it was unmapped since `epoch` (the
  /// table's drop epoch when the read went out: the bytes may be stale; the access refaults).
  /// `fresh`: nothing was read, the page is mapped zeroed (and dirty).
  void install_demand_on_handler(std::size_t page, bool write, std::uint64_t epoch, bool fresh);
  /// Maps prefetched pages (charged already) from `staged`: writable and dirty when `dirty`,
  /// else write-protected; `stream` is the pager's prefetch stream (kStream or kNoStream).
  /// Pages mapped meanwhile, or unmapped since `epoch` (their bytes may be stale), are skipped.
  void install_run_on_handler(std::span<const std::uint32_t> pages, std::byte* staged,
                              bool dirty, std::uint32_t stream, std::uint64_t epoch);
  void pull_some_on_handler();
  bool pull_pending_on_handler();
  void apply_hint_on_handler();
  void mark_used_locked(std::size_t page) FARMEM_REQUIRES(page_mu_);
  void sleep_on_handler(std::chrono::milliseconds d);

  /// Charges one faulted page: from free room (the pager's reserve) if any, else evicting
  /// inline (counted by the pager). Not in a signal handler: use pager->try_charge_pages.
  /// Not with page_mu_ held (invariant 3: the eviction may run a pass of this region).
  bool charge_fault_page() FARMEM_EXCLUDES(page_mu_);
  /// Records a mapped page (charged already) in the pager and the table.
  void install_page_locked(std::size_t page, bool dirty, bool referenced, std::uint32_t stream,
                           bool write_protected) FARMEM_REQUIRES(page_mu_);

  // ---- faulting-thread mode (region_sigbus.cc) ----
  Status start_faulting_mode();
  /// FaultServer: runs in the SIGBUS handler of the faulting thread.
  bool serve_sigbus(std::uintptr_t addr, bool write) override;
  /// The fetch on the faulting thread; false when it must be handed off instead.
  bool serve_on_faulter(std::size_t page, bool write);
  /// Resolves a write to a resident, write-protected page (any thread). Takes page_mu_.
  void unprotect_for_write(std::size_t page);
  bool hand_off(std::uintptr_t addr, bool write);
  /// Posts the next readahead window of a faulting-thread stream to the helper (no wait).
  void post_readahead(bool write);
  /// Helper side: fetches and maps a posted readahead window.
  void serve_readahead_on_handler();
  /// Helper side: serves every posted hand-off.
  void serve_handoffs_on_handler();
  bool serve_handoff_on_handler(std::uintptr_t addr, bool write);
  /// Fetches page (plus `ahead` pages after it, all charged already) through `batch` into
  /// `staging_area` (registered) and maps them; writable and dirty when `write`. On failure
  /// the charge is given back.
  Status fetch_install(std::span<std::byte> staging_area, IoBatch& batch, std::size_t page,
                       std::size_t ahead, bool write);
  region::FaulterSlot* claim_slot();
  void release_slot(region::FaulterSlot* slot);
  Status prefault_faulting(std::size_t first, std::size_t end);

  // ---- paging::Frontend (region_evict.cc): the pager calls these with page_mu_ held ----
  // The pager sees page_mu_ as the Frontend capability (paging/pager.h); these overrides
  // name the real lock, so their bodies are checked against it.
  void lock_pages() override FARMEM_ACQUIRE(page_mu_);
  void unlock_pages() override FARMEM_RELEASE(page_mu_) { page_mu_.unlock(); }
  FarAddr far_of(std::uint64_t page) const override { return page_far(page); }
  void on_second_chance(std::uint32_t frame, std::uint64_t page) override
      FARMEM_REQUIRES(page_mu_);
  void isolate(std::span<paging::Victim> victims, bool for_flush) override
      FARMEM_REQUIRES(page_mu_);
  void stage(std::span<const paging::Victim> victims,
             std::span<std::span<const std::byte>> sources) override FARMEM_REQUIRES(page_mu_);
  void drop(std::span<paging::Victim> victims) override FARMEM_REQUIRES(page_mu_);
  /// Kept victims stay mapped as they are (protected, dirty or not): nothing to undo.
  void restore(std::span<paging::Victim> /*victims*/) override FARMEM_REQUIRES(page_mu_) {}
  /// Write-protects the pages not yet protected, in runs.
  Status protect_runs_locked(std::span<const std::uint32_t> sorted_pages)
      FARMEM_REQUIRES(page_mu_);
  void wake_handler();

  /// The pager's prefetch stream id of this region's stream prefetcher (its only stream);
  /// pulls, readahead windows and faulting-thread read-ahead use paging::kNoStream.
  static constexpr std::uint32_t kStream = 0;

  pool::IoService& io;  ///< far I/O (injected by the composition root; outlives the region)
  paging::Budget& budget;
  const FarRange far;
  const region::RegionOptions options;
  const std::size_t pages;

  region::Mapping mem;
  region::Uffd uffd;
  region::UniqueFd wake_fd;  ///< eventfd: wakes the handler for stop and new pull work
  region::Mapping staging;   ///< registered with rt: fetch part + write-back part
  std::span<std::byte> fetch_staging;  ///< handler thread only
  /// Its bytes are used under page_mu_ (the span itself is set once, in start()).
  std::span<std::byte> wb_staging;
  bool staging_registered = false;

  /// Guards table mutations, every protection change and drop of the mapping, the bytes of
  /// wb_staging and the pass scratch below. Held across a write-back's network round trip
  /// (invariant 2). Taken before the pager's free_mu_ (install_page_locked).
  mutable Mutex page_mu_;
  /// Mutated under page_mu_, peeked at lock-free (its flags are atomics, for the handler
  /// and signal handlers: region/page_table.h), so not annotated as guarded.
  region::PageTable table;
  /// protect_runs_locked scratch.
  std::vector<std::uint32_t> unprotected FARMEM_GUARDED_BY(page_mu_);
  /// isolate/drop scratch (pages, sorted).
  std::vector<std::uint32_t> pass_pages FARMEM_GUARDED_BY(page_mu_);
  /// Dirty pages CLOCK spared this pass.
  std::vector<std::uint32_t> second_chances FARMEM_GUARDED_BY(page_mu_);
  /// Frames, budget, CLOCK, background evictor, write-back, prefetch feedback (created in
  /// start(), after the staging it writes back from).
  std::unique_ptr<paging::Pager> pager;

  // Handler-thread state.
  std::thread handler;
  std::atomic<bool> stop{false};
  IoBatch fetch_batch;
  IoBatch prefetch_batch;
  paging::StreamPrefetcher prefetcher;
  paging::Hint applied_hint = paging::Hint::kNormal;
  std::int64_t last_fault_page = -1;
  // Scratch vectors reused fault after fault (the fault path allocates nothing).
  std::vector<std::int64_t> suggested;    ///< the prefetcher's output
  std::vector<std::uint32_t> candidates;  ///< absent pages among `suggested`
  std::vector<std::uint32_t> charged;     ///< candidates the budget took
  std::vector<std::uint32_t> pull_pages;  ///< one background pull batch

  /// Hint asked for by advise(), picked up by the handler at its next fault.
  std::atomic<paging::Hint> wanted_hint{paging::Hint::kNormal};

  /// Guards pull_queue (the background pull order; WillNeed pages go to its front).
  Mutex pull_mu_;
  std::deque<std::uint32_t> pull_queue FARMEM_GUARDED_BY(pull_mu_);
  std::chrono::steady_clock::time_point pull_blocked_until{};  ///< handler only


  // Faulting-thread mode (region_sigbus.cc).
  bool sigbus_registered = false;
  std::array<region::FaulterSlot, region::kFaulterSlots> faulter_slots;
  std::atomic<std::uint32_t> free_slots{0};  ///< bit i: faulter_slots[i] is free
  std::array<region::Handoff, region::kMailboxSlots> mailbox;
  /// Last page a faulting thread fetched (sequential readahead detection), -1 none.
  std::atomic<std::int64_t> last_faulter_page{-1};
  /// Pipelined readahead of faulting-thread streams: the last page of the last window posted,
  /// the page whose fault posts the next one, and the posted request (pack_readahead; 0 none,
  /// a newer post replaces an unserved one).
  std::atomic<std::int64_t> ra_window_end{-1};
  std::atomic<std::int64_t> ra_marker{-1};
  std::atomic<std::uint64_t> readahead_request{0};
  /// Handler mode: the last missing fault or WP fault on a prefetched page was a store, so
  /// prefetched pages are mapped writable and dirty (a write stream takes no WP faults).
  bool writing_stream = false;

  region::RegionCounters counters;
};

}  // namespace farmem
