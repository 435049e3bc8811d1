// The page cache behind far_ptr and the containers: a front end of the paging core
// (paging/pager.h). The pager owns the frames, the budget, CLOCK, the background evictor,
// write-back and prefetch feedback; the cache owns what is particular to far_ptr: one
// registered arena whose frames the pages live in (RDMA reads land in place), a radix page
// table keyed by far page, the grace period that makes eviction safe against lock-free hits,
// and per-thread trend-driven prefetch. The inline hit path is in include/farmem/far_ptr.h; the layout it
// reads is drawn in include/farmem/detail/cache_view.h.
//
// Eviction safety without a read-modify-write on hits: an application thread marks itself
// inside a DerefScope (ThreadSlot::state odd, then a fence) before reading an entry; the
// evictor marks victims kEvicting (CAS), fences, then waits until every thread that was
// inside a scope has left it (a grace period). A thread blocked inside the cache (waiting for
// a frame) is treated as quiescent except for the pages it lists as touched, which are spared.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "paging/budget.h"
#include "paging/pager.h"
#include "paging/trend.h"
#include "farmem/detail/cache_view.h"
#include "farmem/far_addr.h"
#include "farmem/io_batch.h"
#include "farmem/options.h"
#include "farmem/stats.h"
#include "pool/io_service.h"

namespace farmem::detail {

/// Fewest frames the cache works with: the evictor's free reserve and a prefetch batch need
/// room beside the pages a scope holds. Runtime::open checks the budget against it.
inline constexpr std::uint32_t kMinCacheFrames = 4;
/// Deepest prefetch a stream may ask for: 1024 pages is 4 MiB of 4 KiB pages, far past where
/// deeper read-ahead pays (Linux caps read-ahead at a few hundred KiB by default).
inline constexpr std::uint32_t kMaxPrefetchPagesLimit = 1024;
/// Most thread slots one cache may have: the evictor scans every slot in a grace period.
inline constexpr std::uint32_t kMaxCacheThreadsLimit = 65536;

struct CacheOptions {
  std::uint32_t page_bytes = 4096;          ///< power of two, 4 KiB .. 2 MiB
  std::uint64_t arena_bytes = 256u << 20;   ///< frames = arena_bytes / page_bytes
  std::uint32_t reserve_frames = 0;         ///< free frames the evictor keeps; 0 = automatic
  bool prefetch = true;
  std::uint32_t max_prefetch_pages = 32;
  std::chrono::nanoseconds timeout = std::chrono::seconds(10);  ///< fetch / frame wait
  std::uint32_t max_threads = 256;  ///< threads inside the cache at once (one slot each)
  std::function<std::uint64_t(std::uint64_t slab_index)> slab_bytes;  ///< 0: no such slab
};

class PageCache final : public paging::Frontend {
 public:
  static Result<std::unique_ptr<PageCache>> create(pool::IoService& io, paging::Budget& budget,
                                                   CacheOptions options);
  ~PageCache() override;
  PageCache(const PageCache&) = delete;
  PageCache& operator=(const PageCache&) = delete;

  const CacheView& view() const { return view_; }
  std::uint32_t page_bytes() const { return options_.page_bytes; }
  std::uint32_t frame_count() const { return frames_; }

  /// The calling thread's slot (registered on first use, released when the thread exits).
  /// The calling thread's slot; nullptr when options.max_threads threads hold one already.
  ThreadSlot* thread_slot();
  /// The error of a thread that got no slot.
  Status too_many_threads() const;
  /// The miss path (called from DerefScope::lookup on the application thread).
  /// `overwrite`: the caller overwrites the whole page, so a missing page is zeroed, not
  /// fetched (DerefScope::translate_for_overwrite).
  std::byte* fault_on_app(ThreadSlot* slot, std::uint64_t key, bool write, Status* error,
                          bool overwrite = false);
  /// First access of a prefetched frame (application thread).
  void prefetch_hit_on_app(ThreadSlot* slot, std::uint64_t key, std::uint32_t frame);

  /// Writes every dirty page back; ok means all of them are durable on the memservers.
  Status flush();
  /// WillNeed: prefetch the pages; DontNeed: write back and drop them; Sequential/Random:
  /// steer the calling thread's prefetcher.
  Status advise(FarAddr addr, std::uint64_t bytes, Advice advice);
  /// Runtime::prefetch: one batch for the pages holding `addrs` (application thread).
  Status prefetch(std::span<const FarAddr> addrs);
  /// Pages one thread keeps in flight by name (Runtime::prefetch_window): a sixteenth of the
  /// budget, so several threads may do so at once, at least 1 and at most 128.
  static std::size_t prefetch_window(std::uint64_t budget_bytes, std::uint32_t page_bytes);

  CacheStats stats() const;
  /// Bytes of the arena resident in RAM now (mincore; see Runtime::cache_arena_resident_bytes).
  Result<std::uint64_t> arena_resident_bytes() const;
  /// Frames holding a page now (fetching or present), from the cache's own accounting.
  std::uint64_t frames_in_use() const;
  /// Sticky: the first write-back failure of the background evictor (Ok if none).
  Status background_error() const;

  // ---- paging::Frontend (called by the pager with its evict lock held) ----
  FarAddr far_of(std::uint64_t key) const override { return FarAddr{key << view_.page_shift}; }
  /// Marks the victims' entries kEvicting and waits for a grace period; pages a waiting
  /// thread touched, or all of them when the grace period times out, are kept.
  void isolate(std::span<paging::Victim> victims, bool for_flush) override;
  /// Write-back leaves straight from the frames (the arena is registered).
  void stage(std::span<const paging::Victim> victims,
             std::span<std::span<const std::byte>> sources) override;
  void drop(std::span<paging::Victim> victims) override;
  void restore(std::span<paging::Victim> victims) override;
  /// Deregisters a chunk of the arena from every connection, then gives it to the OS.
  Status retire_frames(std::uint32_t first, std::uint32_t n) override;
  /// Registers a chunk of the arena with every connection again.
  Status revive_frames(std::uint32_t first, std::uint32_t n) override;

 private:
  PageCache(pool::IoService& io, paging::Budget& budget, CacheOptions options, std::uint32_t frames);
  Status init();
  /// A page claimed for a prefetch read: entry kFetching, frame taken.
  struct Pending {
    std::atomic<std::uint64_t>* e;  ///< nullptr: nothing to fetch (resident or in flight)
    std::uint32_t frame;
    std::uint64_t key;
    std::uint32_t slot;  ///< whose stream fetches it
  };
  /// Prefetch reads posted by an application thread, completed by the prefetch thread.
  struct InFlight {
    IoBatch batch;
    std::vector<Pending> pages;
  };
  std::atomic<std::uint64_t>* entry(std::uint64_t key);  ///< nullptr: not a far page
  std::atomic<std::uint64_t>* ensure_entry(std::uint64_t key, Status* error);
  std::byte* frame_addr(std::uint32_t f) const {
    return view_.frames + (std::uint64_t{f} << view_.page_shift);
  }
  std::byte* fetch_on_app(ThreadSlot* slot, std::atomic<std::uint64_t>& e, std::uint64_t key,
                          bool write, Status* error);
  /// The overwrite miss: a zeroed frame installed dirty, no read.
  std::byte* fill_on_app(ThreadSlot* slot, std::atomic<std::uint64_t>& e, std::uint64_t key,
                         Status* error);
  Result<std::uint32_t> take_frame(ThreadSlot* slot);
  /// Installs a fetched page: the pager's frame first (so a hit's dirty mark cannot be
  /// overwritten), then the entry. `prefetch_slot`: the slot whose stream fetched it ahead,
  /// or paging::Pager::kDemand.
  void install(std::atomic<std::uint64_t>& e, std::uint32_t f, std::uint64_t key, bool dirty,
               std::uint32_t prefetch_slot);
  /// False when the grace period timed out (every victim is then kept).
  bool await_grace(std::span<paging::Victim> victims);
  Status drop_range(std::uint64_t first_key, std::uint64_t last_key);

  void prefetch_after_access_on_app(ThreadSlot* slot, std::uint64_t key);
  paging::StreamPrefetcher& stream_on_app(ThreadSlot* slot);
  void add_read_around_on_app(ThreadSlot* slot, std::uint64_t key, IoBatch& batch,
                              std::vector<Pending>& extra);
  /// Evicts until `pages` frames are free, as a miss would (the evictor spares what this
  /// thread touched while it waits). A write-back's failure comes back in *err.
  void make_room_on_app(ThreadSlot* slot, std::size_t pages, Status* err);
  /// nullopt: no free frame; Pending{nullptr}: the page needs no prefetch.
  std::optional<Pending> claim_for_prefetch(std::uint64_t key, std::uint32_t slot);
  void abandon(const std::vector<Pending>& pending);
  /// Claims frames for `keys`, posts their reads now and hands the batch to the prefetch
  /// thread, which waits for it and installs the pages.
  void post_prefetch(const std::vector<std::int64_t>& keys, std::uint32_t slot);
  void prefetch_loop();
  std::unique_ptr<InFlight> take_in_flight();
  /// Waits for a posted prefetch batch and installs its pages (or gives them up on error).
  void complete(InFlight& job);
  /// An application thread waiting for a page completes the oldest posted batch itself;
  /// false when none is posted.
  bool complete_prefetch_on_app();

  pool::IoService& io_;  ///< far I/O (injected; outlives the cache)
  paging::Budget& budget_;
  const CacheOptions options_;
  const std::uint32_t frames_;
  std::uint32_t reserve_ = 0;
  CacheView view_;

  // Frame arena (frame f holds its page at arena_ + f * page_bytes); frames, their state
  // bits, eviction and write-back belong to the pager. The arena is registered in chunks of
  // chunk_bytes_ (aligned to them), so the pager can give unused ones back one at a time:
  // registered memory is pinned over verbs and must be deregistered before MADV_DONTNEED.
  std::byte* arena_ = nullptr;
  std::size_t arena_len_ = 0;
  std::byte* mapping_ = nullptr;  ///< the whole mmap (arena_ is aligned inside it)
  std::size_t mapping_len_ = 0;
  std::size_t chunk_bytes_ = 0;
  /// Per chunk: registered now. Changed by retire/revive_frames (the pager serialises them)
  /// and read by the destructor once the pager is gone.
  std::vector<std::uint8_t> chunk_registered_;
  bool arena_small_pages_ = false;  ///< MADV_NOHUGEPAGE once frames are given back (drop())
  std::unique_ptr<paging::Pager> pager_;
  /// drop() scratch, under the pager's pass lock (the Frontend capability); not annotated,
  /// since drop() reads it in a callback of the I/O service, which the analysis checks as a
  /// function holding nothing.
  std::vector<std::uint32_t> dropped_frames_;

  // Page table: the top level is fixed; blocks and leaves are added under table_mu_.
  std::unique_ptr<std::atomic<DirBlock*>[]> dir_;
  /// Guards creation of dir blocks and leaves (lookups read dir_ lock-free).
  Mutex table_mu_;
  std::vector<std::unique_ptr<DirBlock>> blocks_ FARMEM_GUARDED_BY(table_mu_);
  std::vector<std::unique_ptr<Leaf>> leaves_ FARMEM_GUARDED_BY(table_mu_);

  // Threads.
  std::unique_ptr<ThreadSlot[]> slots_;
  /// Serialises slot registration (a thread's scan for a free slot). Guards no field: a slot
  /// is claimed by a CAS on its in_use flag, and its counters are read lock-free.
  Mutex slots_mu_;

  // Prefetch: per-slot streams (owner thread only) and the queue for the prefetch thread.
  std::unique_ptr<paging::StreamPrefetcher[]> streams_;
  Mutex prefetch_mu_;  ///< guards in_flight_ and stopping_
  std::condition_variable prefetch_cv_;
  std::deque<std::unique_ptr<InFlight>> in_flight_ FARMEM_GUARDED_BY(prefetch_mu_);
  bool stopping_ FARMEM_GUARDED_BY(prefetch_mu_) = false;
  std::thread prefetcher_;

  // Counters (hits live in the slots; eviction, write-back and prefetch counts in the pager).
  std::atomic<std::uint64_t> misses_{0}, bytes_read_{0}, overwrite_fills_{0};
  /// Pages of posted prefetch batches not yet installed or given up (a gauge).
  std::atomic<std::uint64_t> prefetch_pages_in_flight_{0};
  std::unique_ptr<std::atomic<std::uint64_t>[]> fault_hist_;
};

}  // namespace farmem::detail
