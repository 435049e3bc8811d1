// The paging core: ONE implementation of what the far_ptr cache (runtime/cache) and mapped
// regions (runtime/region) both need to hold far pages locally. It owns
//
//   - frame and budget accounting: a fixed set of frame slots, a free list, and the shared
//     local-memory Budget charged for every frame in use;
//   - CLOCK with reference bits over the frames (paging/clock.h);
//   - a background evictor that keeps a free reserve, so that a fault takes a frame without
//     evicting while the reserve holds (evictions on a fault path are counted);
//   - batched write-back of dirty pages only (clean victims are just dropped), coalescing
//     pages adjacent in far memory and in local memory into one operation;
//   - prefetch feedback: issued / used / wasted pages, per prefetch stream, which the
//     front end's StreamPrefetcher (paging/trend.h) turns into an adaptive depth.
//
// A front end (the cache, a region) differs only in how it learns of accesses and how it
// installs and unmaps pages. It implements paging::Frontend; the pager calls it to isolate
// victims from new accesses, to stage their bytes for write-back, and to drop them.
//
// A frame's life:
//
//   kFree ──take_frame──► kLoading ──install──► kPresent ──evict: victim──► (dropped) kFree
//                              │                   ▲   │
//                              └──give_back──► kFree   └── kept (pinned, write-back failed)
//
// Only kPresent frames are eviction candidates. A frame is charged to the Budget from
// take_frame until it is free again.
//
// Locks, in the order they are taken:
//   evict_mu_           one eviction / flush / drop pass at a time (the CLOCK hand);
//   Frontend::lock_pages  the front end's own lock for a pass (a region's page lock);
//   free_mu_            the free list (a leaf: nothing is called while it is held).
// The analysis (common/thread_annotations.h) sees the front end's lock as the Frontend object
// itself, an abstract capability that lock_pages/unlock_pages take and release; a front end
// with a real lock (a region's page_mu_) annotates its overrides with it.
// take_frame's fast path takes only free_mu_, and no code holding free_mu_ touches a region
// page, so a region's SIGBUS handler may take a frame (see region/region.h, invariant 5).
//
// Giving memory back (PagerOptions::chunk_frames, the cache's arena): frames come in chunks,
// and a free frame is always the lowest free one, so pages gather in low chunks. While the
// budget's limit leaves a chunk wholly unused (its first frame at or past limit / page_bytes,
// the most frames this pager can ever charge), the chunk is *retired*: its present pages are
// evicted first, and once every frame of it is free the pager takes them off the free list
// and the front end gives the memory back (Frontend::retire_frames: deregister, then
// MADV_DONTNEED). A retired chunk's frames are handed out again only after
// Frontend::revive_frames succeeded (re-registered), when the budget has grown and free frames
// ran short. A free frame has no I/O in flight (frames are freed after the wait() of their
// write-back or failed fetch), so a chunk all of whose frames are free can be deregistered.
//
//   chunk:  kActive ──all frames free, above the limit──► kRetired
//              ▲                                              │
//              └──────── revive_frames ok, below the limit ◄──┘
//
// Chunk states change only with evict_mu_ held (adjust_chunks), the free list's share of a
// chunk under free_mu_ too.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "farmem/far_addr.h"
#include "farmem/io_batch.h"
#include "farmem/status.h"
#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "paging/budget.h"
#include "paging/clock.h"
#include "pool/far_io.h"

namespace farmem::paging {

/// A frame's key when it holds no page.
inline constexpr std::uint64_t kNoKey = ~std::uint64_t{0};
/// The prefetch stream of a page that was fetched ahead but by no stream (a pull, a hint):
/// its waste is counted but reported to no stream.
inline constexpr std::uint32_t kNoStream = ~std::uint32_t{0};
/// Fewest frames a pager works with: a reserve and a batch need room beside pinned pages.
inline constexpr std::uint32_t kMinFrames = 4;

enum class FrameState : std::uint8_t { kFree, kLoading, kPresent };

struct PagerOptions {
  std::uint32_t page_bytes = 4096;  ///< bytes a frame is charged (and written back at most)
  std::uint32_t frames = 0;         ///< frame slots, at least kMinFrames
  /// Free frames the background evictor keeps; clamped to 1 .. frames / 4.
  std::uint32_t reserve_frames = 1;
  /// Pages one eviction pass frees at least (background or inline): amortises a write-back
  /// round trip and, for regions, a TLB shootdown.
  std::uint32_t evict_batch = 32;
  /// Dirty pages per write-back IoBatch; also the most Frontend::stage is asked for at once.
  std::uint32_t write_back_batch = 32;
  /// Prefetch streams that get waste reports (stream ids 0 .. streams - 1).
  std::uint32_t streams = 1;
  /// The background evictor also looks at the reserve this often (a backstop: takes that
  /// run the reserve below half of it wake the evictor at once).
  std::chrono::milliseconds evictor_period{20};
  /// Frames per chunk given back to the OS while the budget leaves them unused (see the top
  /// of this file); 0: frames are never given back (a region's frames are only accounting).
  std::uint32_t chunk_frames = 0;
  /// Run a background evictor thread (tests may drive evict() by hand instead).
  bool background_evictor = true;
  std::string name = "pager";  ///< for logs
};

/// A page chosen for eviction, write-back or a drop.
struct Victim {
  std::uint32_t frame;
  std::uint64_t key;
  bool keep = false;  ///< set by the front end (pinned) or the pager (write-back failed)
};

/// What the pager needs from a front end. Calls come from the evictor thread, from a thread
/// that evicts inline (a fault that found the reserve empty), from flush() and drop_keys().
/// To the thread-safety analysis a Frontend is itself a lock: the one lock_pages() takes.
class FARMEM_CAPABILITY("mutex") Frontend {
 public:
  virtual ~Frontend() = default;
  /// Held around a whole eviction / flush / drop pass (a region's page lock); the cache needs
  /// none. Called with the pager's evict_mu_ held.
  virtual void lock_pages() FARMEM_ACQUIRE() {}
  virtual void unlock_pages() FARMEM_RELEASE() {}
  /// The far address of a page.
  virtual FarAddr far_of(std::uint64_t key) const = 0;
  /// CLOCK passed over a referenced frame (its bit is now clear): a region re-protects a
  /// dirty page here so that its next store is seen as an access again. Called during a
  /// pass, with lock_pages held; not annotated so, because the pager calls it from CLOCK's
  /// callback (a lambda, which the analysis checks as a function holding nothing).
  virtual void on_second_chance(std::uint32_t /*frame*/, std::uint64_t /*key*/) {}
  /// Makes `victims` unreachable for new accesses, or stable for a flush (`for_flush`: they
  /// stay resident), and sets `keep` on those that must stay as they are (in use). After it
  /// returns, the dirty bit of a victim not kept does not change until restore() or drop().
  virtual void isolate(std::span<Victim> victims, bool for_flush) FARMEM_REQUIRES(this) = 0;
  /// Where the write-back of each victim reads from: registered memory holding the page's
  /// bytes now (a frame, or staging the front end copies into). `victims` are dirty, not
  /// kept, sorted by key, at most write_back_batch of them; the spans stay valid until the
  /// next stage() call or the end of the pass.
  virtual void stage(std::span<const Victim> victims,
                     std::span<std::span<const std::byte>> sources) FARMEM_REQUIRES(this) = 0;
  /// Unmaps victims (clean now: written back or never dirty), sorted by key. Sets `keep` on
  /// any it could not unmap. The pager then frees the frames of the others.
  virtual void drop(std::span<Victim> victims) FARMEM_REQUIRES(this) = 0;
  /// Victims that stay (kept by isolate or drop, or whose write-back failed; every victim of
  /// a flush) become accessible again.
  virtual void restore(std::span<Victim> victims) FARMEM_REQUIRES(this) = 0;
  /// Frames [first, first + n) (one chunk, PagerOptions::chunk_frames) are free, no I/O on
  /// them is in flight, and the pager hands none of them out until revive_frames succeeded:
  /// their memory may go back to the OS. An error leaves them as they were (the pager keeps
  /// using them). Called with evict_mu_ held, not lock_pages.
  virtual Status retire_frames(std::uint32_t /*first*/, std::uint32_t /*n*/) {
    return Status::Ok();
  }
  /// Retired frames are about to be handed out again: make them usable for I/O (register
  /// them). An error keeps them retired. Called with evict_mu_ held, not lock_pages.
  virtual Status revive_frames(std::uint32_t /*first*/, std::uint32_t /*n*/) {
    return Status::Ok();
  }
};

struct PagerStats {
  std::uint64_t evictions = 0;         ///< pages dropped
  std::uint64_t writebacks = 0;        ///< dirty pages written back
  std::uint64_t bytes_written = 0;
  std::uint64_t writeback_errors = 0;  ///< failed write-back batches
  std::uint64_t inline_evictions = 0;  ///< take_frame calls that had to evict (reserve empty)
  std::uint64_t background_passes = 0; ///< eviction passes of the background evictor
  std::uint64_t prefetches_issued = 0;
  std::uint64_t prefetches_used = 0;
  std::uint64_t prefetches_wasted = 0;
  std::uint64_t frames_in_use = 0;
  std::uint64_t peak_frames_in_use = 0;
  std::uint64_t chunks_retired = 0;   ///< chunks given back (Frontend::retire_frames ok)
  std::uint64_t chunks_revived = 0;   ///< retired chunks taken back into use
  std::uint64_t active_frames = 0;    ///< frames in chunks not retired (all without chunks)
};

class Pager final : public Reclaimer {
 public:
  /// `io`, `budget` and `frontend` must outlive the pager. Registers as a reclaimer of the
  /// budget and starts the background evictor.
  static Result<std::unique_ptr<Pager>> create(pool::FarIo& io, Budget& budget,
                                               Frontend& frontend, PagerOptions options);
  /// Stops the evictor, unregisters from the budget and uncharges every frame still in use.
  /// The front end must have unmapped its pages (or be about to) and flushed what it wants.
  ~Pager() override;
  Pager(const Pager&) = delete;
  Pager& operator=(const Pager&) = delete;

  /// Stops the background evictor and leaves the budget's reclaimers (waiting for a reclaim
  /// in progress), so no pager call reaches the front end any more. Idempotent.
  void stop();

  const PagerOptions& options() const { return options_; }
  std::uint32_t frames() const { return options_.frames; }
  std::uint32_t reserve_frames() const { return reserve_; }

  // ---- frames (any thread) ----

  /// A free frame, charged, in kLoading, without evicting. False when no frame is free or the
  /// budget is full. Wakes the evictor when the reserve runs below half. Takes only free_mu_.
  bool try_take_frame(std::uint32_t* frame);
  /// Like try_take_frame, but when none is free evicts inline (counted) and asks the budget's
  /// other consumers for room, until `deadline`. kResourceExhausted after it.
  Result<std::uint32_t> take_frame(std::chrono::steady_clock::time_point deadline);
  /// A kLoading frame whose page never arrived goes back to the free list (uncharged).
  void give_back(std::uint32_t frame);

  /// Charging before binding, for a front end whose pages do not live in frames (a region
  /// maps pages at their own addresses and needs a frame only to account for them): charges
  /// `n` frames' worth without binding frames, false (nothing charged) if there is no room.
  /// Same locking and wake-ups as try_take_frame.
  bool try_charge_pages(std::uint32_t n);
  /// Like try_charge_pages, but only from room beyond the free reserve, and without waking
  /// the evictor: for opportunistic work (background pulls) that must neither evict nor eat
  /// the reserve that keeps faults from evicting.
  bool try_charge_spare(std::uint32_t n);
  /// Like try_charge_pages, evicting inline (counted) until `deadline`, at least one round.
  Status charge_pages(std::uint32_t n, std::chrono::steady_clock::time_point deadline);
  /// Gives back `n` charged pages that will not be installed.
  void uncharge_pages(std::uint32_t n);
  /// Binds one charged page to a frame and installs it (see install); returns the frame.
  std::uint32_t install_charged(std::uint64_t key, bool dirty, bool referenced,
                                std::uint32_t prefetch_stream = kDemand);
  /// A kLoading frame now holds page `key`: kPresent. `dirty`: its far copy is stale.
  /// `referenced`: it starts with its reference bit set. `prefetch_stream`: it was fetched
  /// ahead by that stream (kNoStream: by no stream); pass `no_prefetch` for a demand page.
  static constexpr std::uint32_t kDemand = kNoStream - 1;
  void install(std::uint32_t frame, std::uint64_t key, bool dirty, bool referenced,
               std::uint32_t prefetch_stream = kDemand);

  // ---- accesses (any thread; lock-free) ----

  void reference(std::uint32_t frame) { ref_.mark(frame); }
  void mark_dirty(std::uint32_t frame) { dirty_[frame].store(1, std::memory_order_relaxed); }
  bool dirty(std::uint32_t frame) const {
    return dirty_[frame].load(std::memory_order_relaxed) != 0;
  }
  bool referenced(std::uint32_t frame) const { return ref_.is_set(frame); }
  std::uint64_t key_of(std::uint32_t frame) const {
    return key_[frame].load(std::memory_order_acquire);
  }
  FrameState state(std::uint32_t frame) const {
    return static_cast<FrameState>(state_[frame].load(std::memory_order_acquire));
  }
  /// First access of a page: if it was prefetched and not used yet, counts it used and
  /// returns its stream (kNoStream for a page fetched ahead by no stream); otherwise kDemand.
  std::uint32_t note_access(std::uint32_t frame);
  /// The stream a page was prefetched by while it is still unused (kNoStream: by no stream);
  /// kDemand for a demand page or one used already. Does not count anything.
  std::uint32_t prefetched_by(std::uint32_t frame) const;
  /// Prefetched pages of `stream` evicted unused since the last call (the stream's owner
  /// feeds them to its StreamPrefetcher).
  std::uint32_t take_wasted(std::uint32_t stream);

  /// The raw per-frame bytes, for the cache's inline hit path (include/farmem/detail/
  /// cache_view.h), which sets them with the same relaxed stores as reference()/mark_dirty().
  std::atomic<std::uint8_t>* ref_bits() { return ref_.data(); }
  std::atomic<std::uint8_t>* dirty_bits() { return dirty_.get(); }
  std::atomic<std::uint8_t>* prefetched_bits() { return prefetched_.get(); }

  // ---- eviction and write-back ----

  /// One pass: CLOCK picks up to `want` victims, the front end isolates them, dirty ones are
  /// written back in batches, then they are dropped and their frames freed. Returns frames
  /// freed; a write-back error goes to `*error` (those pages stay resident and dirty).
  std::size_t evict(std::size_t want, Status* error);
  /// Writes every dirty page back; Ok means all are durable in far memory. Pages stay.
  Status flush();
  /// Writes back (if dirty) and drops the pages of `frames` (Advice::kDontNeed); pages the
  /// front end keeps stay. Unused prefetched pages dropped so are not counted as wasted.
  Status drop_frames(std::span<const std::uint32_t> frames);

  /// With chunk_frames: evicts the pages of chunks the budget leaves unused, retires those
  /// chunks whose frames are all free, and revives retired chunks the budget allows again when
  /// free frames run short (below the reserve). The background evictor calls it when there is
  /// such work; tests without one call it by hand. A no-op without chunk_frames.
  /// Returns the first write-back error of its evictions (those pages stay resident).
  Status adjust_chunks();
  /// True when adjust_chunks has something to do now (lock-free look).
  bool chunk_work_pending() const;

  /// Reclaimer: evicts about `bytes` (at least one batch) for any budget consumer.
  std::uint64_t reclaim(std::uint64_t bytes) override;
  Status flush_dirty() override { return flush(); }

  // ---- observation ----

  /// Frames ready to take now: free slots, limited by free room in the budget.
  std::uint32_t free_frames() const;
  std::uint32_t frames_in_use() const;
  /// Counts `n` pages fetched ahead (issued).
  void note_prefetch_issued(std::uint64_t n) {
    prefetch_issued_.fetch_add(n, std::memory_order_relaxed);
  }
  PagerStats stats() const;
  /// Sticky: the first write-back failure of the background evictor (Ok after a clean flush).
  Status background_error() const;

 private:
  Pager(pool::FarIo& io, Budget& budget, Frontend& frontend, PagerOptions options);
  void start();

  std::uint32_t free_slots() const FARMEM_EXCLUDES(free_mu_);
  bool charge_locked(std::uint32_t n) FARMEM_REQUIRES(free_mu_);
  /// A charged page takes a free slot.
  std::uint32_t bind_locked() FARMEM_REQUIRES(free_mu_);
  void after_take(bool got, std::size_t free_left);
  /// Pages' worth of free room in the budget.
  std::uint64_t budget_room() const;
  void release(std::uint32_t frame) FARMEM_EXCLUDES(free_mu_);
  /// The pass of evict/flush/drop_frames over `victims`, with evict_mu_ and the front end's
  /// lock held: isolate, write back, then drop (or restore, for a flush).
  Status pass_locked(std::vector<Victim>& victims, bool for_flush, bool count_wasted,
                     std::size_t* freed) FARMEM_REQUIRES(evict_mu_, frontend_);
  Status write_back_locked(std::vector<Victim>& victims) FARMEM_REQUIRES(evict_mu_, frontend_);
  void run_evictor();
  void wake_evictor();
  /// Debug builds: frames, the free list, chunks and in_use_ add up (O(frames), sampled by
  /// dcheck_due). Where a pass ends, with evict_mu_ held; takes free_mu_.
  void check_invariants_locked() FARMEM_REQUIRES(evict_mu_) FARMEM_EXCLUDES(free_mu_);

  // ---- chunks (see the top of this file) ----
  std::uint32_t chunk_count() const;
  std::uint32_t chunk_first(std::uint32_t c) const { return c * options_.chunk_frames; }
  std::uint32_t chunk_size(std::uint32_t c) const;
  /// The first chunk the budget leaves unused: every chunk from it on may be retired.
  std::uint32_t first_unused_chunk() const;
  bool chunk_active(std::uint32_t c) const {
    return chunk_active_[c].load(std::memory_order_acquire) != 0;
  }
  /// Frames need a retired chunk back: fewer free than the reserve, and budget room for more.
  bool short_of_frames() const;
  /// Present frames of active chunks from `first_unused_chunk` on, at most `want`.
  void pick_unused_locked(std::size_t want, std::vector<std::uint32_t>& out)
      FARMEM_REQUIRES(evict_mu_);
  /// One eviction pass over `picked_`.
  std::size_t pass_picked_locked(Status* error) FARMEM_REQUIRES(evict_mu_, frontend_);
  /// Revives retired chunks below the limit, lowest first, while short_of_frames() or fewer
  /// than `need` frames are free; returns how many. A front end's error stops it (logged once
  /// a streak, also put in `*error`).
  std::size_t revive_chunks_locked(std::uint32_t need, Status* error) FARMEM_REQUIRES(evict_mu_);
  void retire_chunks_locked() FARMEM_REQUIRES(evict_mu_);
  // The free list is a min-heap: the lowest free frame is taken first.
  void push_free_locked(std::uint32_t f) FARMEM_REQUIRES(free_mu_);
  std::uint32_t pop_free_locked() FARMEM_REQUIRES(free_mu_);

  pool::FarIo& io_;
  Budget& budget_;
  Frontend& frontend_;
  const PagerOptions options_;
  std::uint32_t reserve_ = 1;

  // Per-frame state (indexed by frame).
  std::unique_ptr<std::atomic<std::uint8_t>[]> state_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> key_;
  ReferenceBits ref_;
  std::unique_ptr<std::atomic<std::uint8_t>[]> dirty_;
  std::unique_ptr<std::atomic<std::uint8_t>[]> prefetched_;  ///< fetched ahead, not used yet
  std::unique_ptr<std::atomic<std::uint32_t>[]> prefetch_stream_;
  /// Per stream: prefetched pages evicted unused, not yet taken by take_wasted().
  std::unique_ptr<std::atomic<std::uint32_t>[]> wasted_pending_;

  /// Guards free_, free_in_chunk_ and charged_unbound_ (a leaf lock: last in the order).
  mutable Mutex free_mu_ FARMEM_ACQUIRED_AFTER(evict_mu_, frontend_);
  std::condition_variable free_cv_;
  /// A min-heap of frame numbers (std::greater).
  std::vector<std::uint32_t> free_ FARMEM_GUARDED_BY(free_mu_);
  /// Per chunk: its frames in free_.
  std::vector<std::uint32_t> free_in_chunk_ FARMEM_GUARDED_BY(free_mu_);
  /// Per chunk: 1 active, 0 retired. Written under evict_mu_; read lock-free.
  std::unique_ptr<std::atomic<std::uint8_t>[]> chunk_active_;
  std::atomic<std::uint32_t> active_frames_{0};
  /// The last revive failed (logged once a streak).
  bool revive_failed_ FARMEM_GUARDED_BY(evict_mu_) = false;
  /// Pages charged by try_charge_pages, not yet bound.
  std::size_t charged_unbound_ FARMEM_GUARDED_BY(free_mu_) = 0;
  std::atomic<std::uint32_t> in_use_{0};
  std::atomic<std::uint32_t> peak_in_use_{0};

  /// One pass at a time; guards clock_ and the scratch vectors. First in the lock order.
  Mutex evict_mu_ FARMEM_ACQUIRED_BEFORE(frontend_, free_mu_);
  Clock clock_ FARMEM_GUARDED_BY(evict_mu_);
  std::vector<std::uint32_t> picked_ FARMEM_GUARDED_BY(evict_mu_);
  std::vector<Victim> victims_ FARMEM_GUARDED_BY(evict_mu_);
  IoBatch wb_batch_ FARMEM_GUARDED_BY(evict_mu_);
  std::vector<std::span<const std::byte>> sources_ FARMEM_GUARDED_BY(evict_mu_);
  /// Pass scratch.
  std::vector<Victim> going_ FARMEM_GUARDED_BY(evict_mu_), staying_ FARMEM_GUARDED_BY(evict_mu_),
      chunk_ FARMEM_GUARDED_BY(evict_mu_);
  std::vector<Victim*> dirty_scratch_ FARMEM_GUARDED_BY(evict_mu_);

  /// Guards background_error_ (taken alone, or last under evict_mu_).
  mutable Mutex error_mu_ FARMEM_ACQUIRED_AFTER(evict_mu_);
  Status background_error_ FARMEM_GUARDED_BY(error_mu_);

  Mutex evictor_mu_;  ///< guards stopping_ and the evictor's sleep (taken alone)
  std::condition_variable evictor_cv_;
  bool stopping_ FARMEM_GUARDED_BY(evictor_mu_) = false;
  std::atomic<bool> evict_requested_{false};
  bool registered_ = false;
  std::thread evictor_;

  std::atomic<std::uint64_t> evictions_{0}, writebacks_{0}, bytes_written_{0},
      writeback_errors_{0}, inline_evictions_{0}, background_passes_{0}, prefetch_issued_{0},
      prefetch_used_{0}, prefetch_wasted_{0}, chunks_retired_{0}, chunks_revived_{0};
};

}  // namespace farmem::paging
