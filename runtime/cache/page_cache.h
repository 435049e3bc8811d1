// The page cache behind far_ptr and the containers: a bounded set of local frames (one
// registered arena, so RDMA reads land in place), a radix page table keyed by far page, CLOCK
// eviction with a background evictor, write-back of dirty pages only, and per-thread
// trend-driven prefetch. The inline hit path is in include/farmem/far_ptr.h; the layout it
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
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "paging/budget.h"
#include "paging/clock.h"
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

class PageCache final : public paging::Reclaimer {
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
  std::byte* fault_on_app(ThreadSlot* slot, std::uint64_t key, bool write, Status* error);
  /// First access of a prefetched frame (application thread).
  void prefetch_hit_on_app(ThreadSlot* slot, std::uint64_t key, std::uint32_t frame);

  /// Writes every dirty page back; ok means all of them are durable on the memservers.
  Status flush();
  /// WillNeed: prefetch the pages; DontNeed: write back and drop them; Sequential/Random:
  /// steer the calling thread's prefetcher.
  Status advise(FarAddr addr, std::uint64_t bytes, Advice advice);

  CacheStats stats() const;
  /// Frames holding a page now (fetching or present), from the cache's own accounting.
  std::uint64_t frames_in_use() const;
  /// Sticky: the first write-back failure of the background evictor (Ok if none).
  Status background_error() const;

  /// Reclaimer: evicts about `bytes` worth of pages for another budget consumer.
  std::uint64_t reclaim(std::uint64_t bytes) override;
  /// Reclaimer: the same as flush().
  Status flush_dirty() override { return flush(); }

 private:
  PageCache(pool::IoService& io, paging::Budget& budget, CacheOptions options, std::uint32_t frames);
  Status init();
  /// A page claimed for a prefetch read: entry kFetching, frame taken.
  struct Pending {
    std::atomic<std::uint64_t>* e;  ///< nullptr: nothing to fetch (resident or in flight)
    std::uint32_t frame;
    std::uint64_t key;
  };
  /// Prefetch reads posted by an application thread, completed by the prefetch thread.
  struct InFlight {
    IoBatch batch;
    std::vector<Pending> pages;
  };
  struct Victim {
    std::uint32_t frame;
    std::uint64_t key;
    bool keep = false;  ///< spared by the grace period or failed write-back
  };

  std::atomic<std::uint64_t>* entry(std::uint64_t key);  ///< nullptr: not a far page
  std::atomic<std::uint64_t>* ensure_entry(std::uint64_t key, Status* error);
  std::byte* frame_addr(std::uint32_t f) const {
    return view_.frames + (std::uint64_t{f} << view_.page_shift);
  }
  FarAddr far_of(std::uint64_t key) const { return FarAddr{key << view_.page_shift}; }

  std::byte* fetch_on_app(ThreadSlot* slot, std::atomic<std::uint64_t>& e, std::uint64_t key,
                          bool write, Status* error);
  Result<std::uint32_t> take_frame(ThreadSlot* slot);
  bool try_take_free_frame(std::uint32_t* frame);
  void release_frame(std::uint32_t frame);
  void install(std::atomic<std::uint64_t>& e, std::uint32_t f, std::uint64_t key, bool dirty,
               bool prefetched);

  /// Evicts up to `want` pages; returns how many frames it freed. Takes evict_mu_.
  std::size_t evict(std::size_t want, Status* error);
  std::size_t mark_victims(std::vector<std::uint32_t>& frames, std::vector<Victim>& out);
  bool await_grace(std::vector<Victim>& victims);
  /// Writes the dirty, non-kept victims back in one batch; on failure marks them kept.
  Status write_back(std::vector<Victim>& victims);
  /// Frees every victim not kept (entry absent, frame released); kept ones become present
  /// again. Returns the frames freed.
  std::size_t drop_victims(std::vector<Victim>& victims, bool count_wasted);
  void unmark(Victim& v, bool still_dirty);
  Status drop_range(std::uint64_t first_key, std::uint64_t last_key);

  void prefetch_after_access_on_app(ThreadSlot* slot, std::uint64_t key);
  paging::StreamPrefetcher& stream_on_app(ThreadSlot* slot);
  void add_read_around_on_app(ThreadSlot* slot, std::uint64_t key, IoBatch& batch,
                              std::vector<Pending>& extra);
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
  void evictor_loop();
  std::uint64_t free_frames() const;

  pool::IoService& io_;  ///< far I/O (injected; outlives the cache)
  paging::Budget& budget_;
  const CacheOptions options_;
  const std::uint32_t frames_;
  std::uint32_t reserve_ = 0;
  CacheView view_;

  // Frame arena and per-frame state (indexed by frame).
  std::byte* arena_ = nullptr;
  std::size_t arena_len_ = 0;
  paging::ReferenceBits ref_;
  std::unique_ptr<std::atomic<std::uint8_t>[]> dirty_;
  std::unique_ptr<std::atomic<std::uint8_t>[]> prefetched_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> frame_key_;  ///< kNoKey when unused

  // Page table: the top level is fixed; blocks and leaves are added under table_mu_.
  std::unique_ptr<std::atomic<DirBlock*>[]> dir_;
  std::mutex table_mu_;  ///< guards creation of dir blocks and leaves
  std::vector<std::unique_ptr<DirBlock>> blocks_;
  std::vector<std::unique_ptr<Leaf>> leaves_;

  // Threads.
  std::unique_ptr<ThreadSlot[]> slots_;
  std::mutex slots_mu_;  ///< guards slot registration

  // Free frames.
  mutable std::mutex free_mu_;  ///< guards free_
  std::condition_variable free_cv_;
  std::vector<std::uint32_t> free_;

  // Eviction (one evictor at a time: CLOCK hand + grace periods).
  std::mutex evict_mu_;  ///< guards clock_ and the eviction protocol
  paging::Clock clock_;
  mutable std::mutex error_mu_;  ///< guards background_error_
  Status background_error_;

  // Prefetch: per-slot streams (owner thread only) and the queue for the prefetch thread.
  std::unique_ptr<paging::StreamPrefetcher[]> streams_;
  std::mutex prefetch_mu_;  ///< guards in_flight_ and stopping_
  std::condition_variable prefetch_cv_;
  std::deque<std::unique_ptr<InFlight>> in_flight_;
  /// Per frame: the slot whose stream prefetched it.
  std::unique_ptr<std::uint32_t[]> prefetch_owner_;
  /// Per slot: prefetched pages evicted unused, drained by the owner thread into its stream.
  std::unique_ptr<std::atomic<std::uint32_t>[]> wasted_pending_;
  std::condition_variable evict_cv_;
  bool stopping_ = false;
  std::thread prefetcher_;
  std::thread evictor_;

  // Counters (hits live in the slots).
  std::atomic<std::uint64_t> misses_{0}, prefetch_issued_{0}, prefetch_used_{0},
      prefetch_wasted_{0}, evictions_{0}, writebacks_{0}, bytes_read_{0}, bytes_written_{0};
  std::unique_ptr<std::atomic<std::uint64_t>[]> fault_hist_;
};

}  // namespace farmem::detail
