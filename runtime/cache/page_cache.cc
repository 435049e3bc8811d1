// PageCache: construction, the page table, thread slots, the miss path and frame handling.
// Eviction, write-back, flush and the background threads are in evictor.cc.
#include "cache/page_cache.h"

#include <sys/mman.h>

#include <bit>
#include <cerrno>
#include <cstring>

#include "common/dcheck.h"
#include "common/log.h"
#include "common/meminfo.h"

namespace farmem::detail {

namespace {

constexpr unsigned kFarOffsetBits = 40;  // see runtime/pool/far_addr.h
// A spinning waiter yields after this many polls: a fetch takes microseconds (RDMA) to tens
// of microseconds (TCP), so a short spin catches most and yielding keeps 2 cores usable.
constexpr int kSpinsBeforeYield = 64;
// Fault latencies are sampled, one fault in this many per thread (see fetch_on_app).
constexpr std::uint32_t kLatencySampleEvery = 16;
// Pages one eviction pass frees (and writes back at most, in one batch): enough to amortise
// a write-back round trip, few enough to keep a pass (and its grace period) short.
constexpr std::uint32_t kEvictBatch = 32;
// The pager's evictor also looks at the reserve this often, to refill it after bursts.
constexpr auto kEvictorPeriod = std::chrono::milliseconds(5);
// The arena is registered, and given back to the OS, in chunks of at least 2 MiB: a huge page
// (the arena is aligned to its chunks, so a chunk given back frees whole huge pages), a
// multiple of every page size (at most 2 MiB), and big enough that registering one costs
// little next to filling it.
constexpr std::size_t kMinArenaChunkBytes = 2u << 20;
// At most this many chunks (more bytes a chunk for bigger arenas): each is one registration
// with every connection, and RDMA devices cap registrations (soft-RoCE at a few thousand).
constexpr std::size_t kMaxArenaChunks = 256;

std::atomic<std::uint64_t> g_next_cache_id{1};

// Threads release their slots when they exit; caches that died first must not be touched,
// so releases go through this registry of live caches.
Mutex g_live_mu;
std::vector<std::uint64_t>& live_caches() FARMEM_REQUIRES(g_live_mu) {
  static std::vector<std::uint64_t> ids;
  return ids;
}

struct SlotReleaser {
  std::vector<std::pair<std::uint64_t, ThreadSlot*>> held;
  ~SlotReleaser() {
    MutexLock lock(g_live_mu);
    for (auto [id, slot] : held) {
      if (std::find(live_caches().begin(), live_caches().end(), id) != live_caches().end()) {
        slot->in_use.store(false, std::memory_order_release);
      }
    }
  }
};
thread_local SlotReleaser t_releaser;

void relax(int& spins) {
  if (++spins < kSpinsBeforeYield) {
    __builtin_ia32_pause();
  } else {
    std::this_thread::yield();
  }
}

}  // namespace

PageCache::PageCache(pool::IoService& io, paging::Budget& budget, CacheOptions options,
                     std::uint32_t frames)
    : io_(io), budget_(budget), options_(std::move(options)), frames_(frames) {}

Result<std::unique_ptr<PageCache>> PageCache::create(pool::IoService& io, paging::Budget& budget,
                                                     CacheOptions options) {
  const auto pb = options.page_bytes;
  if (pb < 4096 || pb > (2u << 20) || !std::has_single_bit(pb)) {
    return InvalidArgument("page_bytes must be a power of two from 4 KiB to 2 MiB, got " +
                           std::to_string(pb));
  }
  const std::uint64_t frames = options.arena_bytes / pb;
  if (frames < kMinCacheFrames || frames > (1ull << 31)) {
    return InvalidArgument("cache budget of " + std::to_string(options.arena_bytes) +
                           " bytes holds " + std::to_string(frames) + " pages; it needs at least " +
                           std::to_string(kMinCacheFrames));
  }
  if (options.max_threads == 0 || options.max_threads > kMaxCacheThreadsLimit) {
    return InvalidArgument("cache max_threads must be in 1.." +
                           std::to_string(kMaxCacheThreadsLimit));
  }
  if (!options.slab_bytes) return InvalidArgument("CacheOptions.slab_bytes not set");
  auto c = std::unique_ptr<PageCache>(
      new PageCache(io, budget, std::move(options), static_cast<std::uint32_t>(frames)));
  FARMEM_RETURN_IF_ERROR(c->init());
  return c;
}

Status PageCache::init() {
  arena_len_ = std::uint64_t{frames_} * options_.page_bytes;
  chunk_bytes_ = std::max(kMinArenaChunkBytes,
                          std::bit_ceil((arena_len_ + kMaxArenaChunks - 1) / kMaxArenaChunks));
  // Over-allocated by a chunk so the arena can start on a chunk boundary.
  mapping_len_ = arena_len_ + chunk_bytes_;
  void* p = mmap(nullptr, mapping_len_, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return ResourceExhausted(std::string("cache arena: ") + strerror(errno));
  mapping_ = static_cast<std::byte*>(p);
  const auto at = reinterpret_cast<std::uintptr_t>(mapping_);
  arena_ = mapping_ + ((at + chunk_bytes_ - 1) / chunk_bytes_ * chunk_bytes_ - at);
  madvise(arena_, arena_len_, MADV_HUGEPAGE);  // huge pages where the kernel has them
  // No chunk is registered yet: the pager takes chunks into use (revive_frames) as frames are
  // needed and the budget allows, so memory above the budget is never pinned.
  chunk_registered_.assign((arena_len_ + chunk_bytes_ - 1) / chunk_bytes_, 0);

  fault_hist_ = std::make_unique<std::atomic<std::uint64_t>[]>(LatencyHistogram::kBuckets);
  dir_ = std::make_unique<std::atomic<DirBlock*>[]>(kDirSize);
  slots_ = std::make_unique<ThreadSlot[]>(options_.max_threads);
  for (std::uint32_t i = 0; i < options_.max_threads; ++i) slots_[i].index = i;
  const std::uint32_t max_depth = options_.prefetch ? options_.max_prefetch_pages : 1;
  streams_ = std::make_unique<paging::StreamPrefetcher[]>(options_.max_threads);
  for (std::uint32_t i = 0; i < options_.max_threads; ++i) {
    streams_[i] = paging::StreamPrefetcher(paging::PrefetchDepth(
        1, std::min<std::uint32_t>(4, max_depth), max_depth));
  }
  // Keep ~1/64 of the frames free, and at least two full prefetch batches (prefetch never
  // evicts in line, so without free frames it stops), but never more than a quarter.
  reserve_ = options_.reserve_frames != 0
                 ? options_.reserve_frames
                 : std::max<std::uint32_t>(frames_ / 64, 2 * max_depth);
  reserve_ = std::clamp<std::uint32_t>(reserve_, 2, frames_ / 4);
  view_.page_shift = static_cast<unsigned>(std::countr_zero(options_.page_bytes));

  paging::PagerOptions po;
  po.page_bytes = options_.page_bytes;
  po.frames = frames_;
  po.reserve_frames = reserve_;
  po.evict_batch = kEvictBatch;
  po.chunk_frames = static_cast<std::uint32_t>(chunk_bytes_ / options_.page_bytes);
  po.write_back_batch = kEvictBatch;
  po.streams = options_.max_threads;
  po.evictor_period = kEvictorPeriod;
  po.name = "far_ptr cache";
  FARMEM_ASSIGN_OR_RETURN(pager_, paging::Pager::create(io_, budget_, *this, std::move(po)));

  view_.cache = this;
  view_.id = g_next_cache_id.fetch_add(1);
  view_.dir = dir_.get();
  view_.frames = arena_;
  view_.ref = pager_->ref_bits();
  view_.dirty = pager_->dirty_bits();
  view_.prefetched = pager_->prefetched_bits();
  view_.slab_page_bits = kFarOffsetBits - view_.page_shift;
  {
    MutexLock lock(g_live_mu);
    live_caches().push_back(view_.id);
  }
  // Always: besides the trend prefetcher's batches (options_.prefetch), the application's own
  // (Runtime::prefetch, advise(kWillNeed)) are posted, and a batch whose pages nobody derefs
  // must still be completed, its frames installed or given back.
  prefetcher_ = std::thread([this] { prefetch_loop(); });
  return Status::Ok();
}

PageCache::~PageCache() {
  if (view_.id != 0) {
    MutexLock lock(g_live_mu);
    std::erase(live_caches(), view_.id);
  }
  {
    MutexLock lock(prefetch_mu_);
    stopping_ = true;
  }
  prefetch_cv_.notify_all();
  if (prefetcher_.joinable()) prefetcher_.join();
  pager_.reset();  // stops its evictor, leaves the budget, uncharges the frames in use
  if (mapping_ != nullptr) {
    for (std::size_t c = 0; c < chunk_registered_.size(); ++c) {
      if (chunk_registered_[c] == 0) continue;
      const std::size_t off = c * chunk_bytes_;
      (void)io_.unregister_memory({arena_ + off, std::min(chunk_bytes_, arena_len_ - off)});
    }
    munmap(mapping_, mapping_len_);
  }
}

ThreadSlot* PageCache::thread_slot() {
  for (auto [id, slot] : t_releaser.held) {
    if (id == view_.id) return slot;
  }
  MutexLock lock(slots_mu_);
  for (std::uint32_t i = 0; i < options_.max_threads; ++i) {
    bool expected = false;
    if (slots_[i].in_use.compare_exchange_strong(expected, true)) {
      slots_[i].depth = 0;
      slots_[i].waiting.store(0);
      streams_[i] = paging::StreamPrefetcher(streams_[i].depth());  // a new thread, a new stream
      (void)pager_->take_wasted(i);  // the previous thread's waste is not this one's
      t_releaser.held.emplace_back(view_.id, &slots_[i]);
      return &slots_[i];
    }
  }
  // DerefScope turns this into a kResourceExhausted error of its translations.
  return nullptr;
}

Status PageCache::too_many_threads() const {
  return ResourceExhausted("more than " + std::to_string(options_.max_threads) +
                           " threads use the far_ptr cache at once (raise "
                           "RuntimeOptions.max_cache_threads)");
}

std::atomic<std::uint64_t>* PageCache::entry(std::uint64_t key) {
  const std::uint64_t slab = (key >> view_.slab_page_bits) - 1;
  if ((slab >> (2 * kDirBits)) != 0) return nullptr;
  DirBlock* blk = dir_[slab >> kDirBits].load(std::memory_order_acquire);
  if (blk == nullptr) return nullptr;
  Leaf* leaf = blk->leaf[slab & kDirMask].load(std::memory_order_acquire);
  const std::uint64_t page = key & ((std::uint64_t{1} << view_.slab_page_bits) - 1);
  if (leaf == nullptr || page >= leaf->pages) return nullptr;
  return &leaf->pte[page];
}

std::atomic<std::uint64_t>* PageCache::ensure_entry(std::uint64_t key, Status* error) {
  if (auto* e = entry(key)) return e;
  const std::uint64_t slab = (key >> view_.slab_page_bits) - 1;
  const std::uint64_t page = key & ((std::uint64_t{1} << view_.slab_page_bits) - 1);
  const std::uint64_t slab_bytes = (slab >> (2 * kDirBits)) == 0 ? options_.slab_bytes(slab) : 0;
  if (slab_bytes == 0 || page >= slab_bytes / options_.page_bytes) {
    *error = OutOfRange("far address is in no live slab (null, freed or corrupt far_ptr?)");
    return nullptr;
  }
  MutexLock lock(table_mu_);
  DirBlock* blk = dir_[slab >> kDirBits].load(std::memory_order_acquire);
  if (blk == nullptr) {
    blocks_.push_back(std::make_unique<DirBlock>());
    blk = blocks_.back().get();
    dir_[slab >> kDirBits].store(blk, std::memory_order_release);
  }
  if (blk->leaf[slab & kDirMask].load(std::memory_order_acquire) == nullptr) {
    auto leaf = std::make_unique<Leaf>();
    leaf->pages = slab_bytes / options_.page_bytes;
    leaf->pte = std::make_unique<std::atomic<std::uint64_t>[]>(leaf->pages);
    blk->leaf[slab & kDirMask].store(leaf.get(), std::memory_order_release);
    leaves_.push_back(std::move(leaf));
  }
  return entry(key);
}

std::byte* PageCache::fault_on_app(ThreadSlot* slot, std::uint64_t key, bool write,
                                   Status* error, bool overwrite) {
  // The miss path runs inside a DerefScope (state odd): the grace period then waits for it.
  FARMEM_DCHECK_MSG((slot->state.load(std::memory_order_relaxed) & 1) != 0 && slot->depth > 0,
                    "a far page is translated outside a DerefScope");
  std::atomic<std::uint64_t>* e = ensure_entry(key, error);
  if (e == nullptr) return nullptr;
  // Clocks are read only once we have to wait: on VMs a clock read can cost microseconds.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  int spins = 0;
  for (;;) {
    // Leaving the waiting state (seq_cst) before reading the entry: see await_grace.
    if (slot->waiting.load(std::memory_order_relaxed) != 0) {
      slot->waiting.store(0, std::memory_order_seq_cst);
    }
    std::uint64_t pte = e->load(std::memory_order_seq_cst);
    switch (pte_state(pte)) {
      case kPtePresent: {
        const std::uint32_t f = pte_frame(pte);
        FARMEM_DCHECK_LT(f, frames_);
        pager_->reference(f);
        if (write) pager_->mark_dirty(f);
        if (view_.prefetched[f].load(std::memory_order_relaxed) != 0) {
          prefetch_hit_on_app(slot, key, f);
        }
        note_touched(slot, key);
        return frame_addr(f);
      }
      case kPteAbsent:
        if (e->compare_exchange_strong(pte, kPteFetching)) {
          return overwrite ? fill_on_app(slot, *e, key, error)
                           : fetch_on_app(slot, *e, key, write, error);
        }
        break;
      default:  // another thread fetches it, or the evictor takes it: wait
        if (!deadline) deadline = std::chrono::steady_clock::now() + options_.timeout;
        if ((spins & 63) == 63 && std::chrono::steady_clock::now() > *deadline) {
          *error = TimedOut("page busy (fetch or eviction) for longer than the deadline");
          return nullptr;
        }
        // The fetcher may need an eviction, whose grace period must not wait for us: while
        // we spin, we touch nothing beyond our list.
        slot->waiting.store(1, std::memory_order_seq_cst);
        // Most likely the page is in a posted prefetch batch: complete that rather than spin.
        if (complete_prefetch_on_app()) {
          ++spins;
        } else {
          relax(spins);
        }
    }
  }
}

std::byte* PageCache::fetch_on_app(ThreadSlot* slot, std::atomic<std::uint64_t>& e,
                                   std::uint64_t key, bool write, Status* error) {
  // One fault in kLatencySampleEvery is timed: two clock reads per fault cost too much on
  // VMs whose clock source traps (hpet), and a sample describes the distribution as well.
  thread_local std::uint32_t fault_count = 0;
  const bool timed = fault_count++ % kLatencySampleEvery == 0;
  const auto t0 = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  auto frame = take_frame(slot);
  if (!frame.ok()) {
    FARMEM_DCHECK_EQ(e.load(), kPteFetching);  // ours since the CAS: only we end the claim
    e.store(kPteAbsent, std::memory_order_release);
    *error = frame.status();
    return nullptr;
  }
  const std::uint32_t f = *frame;
  // Read-around: pages the stream's trend predicts travel in the same batch as the miss, so a
  // scan never waits for the prefetch thread to catch up.
  thread_local IoBatch batch;
  thread_local std::vector<Pending> extra;
  batch.clear();
  extra.clear();
  batch.read(far_of(key), {frame_addr(f), options_.page_bytes});
  if (options_.prefetch) add_read_around_on_app(slot, key, batch, extra);
  Status st = io_.submit(batch);
  if (st.ok()) st = io_.wait(batch);
  if (!st.ok()) {
    pager_->give_back(f);
    FARMEM_DCHECK_EQ(e.load(), kPteFetching);
    e.store(kPteAbsent, std::memory_order_release);
    abandon(extra);
    *error = st.with_context("fetching a far page");
    return nullptr;
  }
  misses_.fetch_add(1, std::memory_order_relaxed);
  bytes_read_.fetch_add(options_.page_bytes * (1 + extra.size()), std::memory_order_relaxed);
  install(e, f, key, write, paging::Pager::kDemand);
  for (const Pending& p : extra) install(*p.e, p.frame, p.key, false, slot->index);
  pager_->note_prefetch_issued(extra.size());
  if (timed) {
    const auto ns = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count());
    fault_hist_[LatencyHistogram::bucket_of(ns)].fetch_add(1, std::memory_order_relaxed);
  }
  note_touched(slot, key);
  return frame_addr(f);
}

std::byte* PageCache::fill_on_app(ThreadSlot* slot, std::atomic<std::uint64_t>& e,
                                  std::uint64_t key, Status* error) {
  auto frame = take_frame(slot);
  if (!frame.ok()) {
    FARMEM_DCHECK_EQ(e.load(), kPteFetching);
    e.store(kPteAbsent, std::memory_order_release);
    *error = frame.status();
    return nullptr;
  }
  const std::uint32_t f = *frame;
  // Zeroed, not left as the frame's last page: the bytes the caller leaves (a page's tail
  // past its last element) must not carry another page's data.
  std::memset(frame_addr(f), 0, options_.page_bytes);
  misses_.fetch_add(1, std::memory_order_relaxed);
  overwrite_fills_.fetch_add(1, std::memory_order_relaxed);
  install(e, f, key, /*dirty=*/true, paging::Pager::kDemand);  // far memory holds nothing yet
  note_touched(slot, key);
  return frame_addr(f);
}

Result<std::uint32_t> PageCache::take_frame(ThreadSlot* slot) {
  std::uint32_t f = 0;
  if (pager_->try_take_frame(&f)) return f;  // the common case: the evictor kept a reserve
  // While this thread waits, the evictor may take anything but the pages it touched.
  slot->waiting.store(1, std::memory_order_seq_cst);
  auto frame = pager_->take_frame(std::chrono::steady_clock::now() + options_.timeout);
  slot->waiting.store(0, std::memory_order_seq_cst);
  if (!frame.ok()) {
    return frame.status().with_context("far_ptr cache (pages held by long DerefScopes?)");
  }
  return frame;
}

std::uint64_t PageCache::frames_in_use() const { return pager_->frames_in_use(); }

CacheStats PageCache::stats() const {
  CacheStats s;
  for (std::uint32_t i = 0; i < options_.max_threads; ++i) {
    s.hits += slots_[i].hits.load(std::memory_order_relaxed);
  }
  const paging::PagerStats p = pager_->stats();
  s.misses = misses_.load(std::memory_order_relaxed);
  s.prefetches_issued = p.prefetches_issued;
  s.prefetches_used = p.prefetches_used;
  s.prefetches_wasted = p.prefetches_wasted;
  s.evictions = p.evictions;
  s.writebacks = p.writebacks;
  s.bytes_read = bytes_read_.load(std::memory_order_relaxed);
  s.prefetch_pages_in_flight = prefetch_pages_in_flight_.load(std::memory_order_relaxed);
  s.overwrite_fills = overwrite_fills_.load(std::memory_order_relaxed);
  s.bytes_written = p.bytes_written;
  s.inline_evictions = p.inline_evictions;
  s.resident_bytes = frames_in_use() * options_.page_bytes;
  s.budget_bytes = budget_.limit();
  s.arena_active_bytes = p.active_frames * options_.page_bytes;
  s.arena_chunks_given_back = p.chunks_retired;
  s.arena_chunks_taken_back = p.chunks_revived;
  for (int b = 0; b < LatencyHistogram::kBuckets; ++b) {
    s.fault_latency.counts[b] = fault_hist_[b].load(std::memory_order_relaxed);
  }
  return s;
}

Result<std::uint64_t> PageCache::arena_resident_bytes() const {
  return resident_bytes(arena_, arena_len_);
}

Status PageCache::background_error() const { return pager_->background_error(); }

// ---- the out-of-line entry points of include/farmem/detail/cache_view.h ----

std::byte* cache_fault(PageCache* cache, ThreadSlot* slot, std::uint64_t key, bool write,
                       void* scope_error) {
  return cache->fault_on_app(slot, key, write, static_cast<Status*>(scope_error));
}
std::byte* cache_fault_overwrite(PageCache* cache, ThreadSlot* slot, std::uint64_t key,
                                 void* scope_error) {
  return cache->fault_on_app(slot, key, true, static_cast<Status*>(scope_error), true);
}
void cache_prefetch_hit(PageCache* cache, ThreadSlot* slot, std::uint64_t key,
                        std::uint32_t frame) {
  cache->prefetch_hit_on_app(slot, key, frame);
}
ThreadSlot* cache_thread_slot(PageCache* cache) { return cache->thread_slot(); }
void cache_no_slot_error(PageCache* cache, void* scope_error) {
  *static_cast<Status*>(scope_error) = cache->too_many_threads();
}
CacheView cache_view(PageCache* cache) { return cache->view(); }

[[noreturn]] void deref_failed(const Status& error) {
  log().critical("far_ptr deref failed: {} (use try_deref to handle this)", error.to_string());
  std::abort();
}

}  // namespace farmem::detail
