// PageCache: prefetch. Read-around on misses (trend pages travel in the miss's batch),
// batches posted on first use of prefetched pages, and their completion, by an application
// thread that needs the pages or else by the prefetch thread.
#include <algorithm>

#include "cache/page_cache.h"
#include "common/dcheck.h"
#include "common/log.h"

namespace farmem::detail {

namespace {
// How long the prefetch thread leaves a posted batch to the application threads (see
// prefetch_loop): about one far-memory round trip.
constexpr auto kPrefetchHandoff = std::chrono::microseconds(200);
}  // namespace

void PageCache::add_read_around_on_app(ThreadSlot* slot, std::uint64_t key, IoBatch& batch,
                                       std::vector<Pending>& extra) {
  thread_local std::vector<std::int64_t> want;
  want.clear();
  paging::StreamPrefetcher& stream = stream_on_app(slot);
  if (stream.on_access(static_cast<std::int64_t>(key), want) == 0) {
    // The stream believes these pages were asked for, but we missed: an earlier prefetch
    // found no frame. Read around along the trend anyway (resident pages are skipped).
    const auto stride = stream.current_stride();
    if (!stride) return;
    for (std::uint32_t i = 1; i <= stream.depth().depth(); ++i) {
      want.push_back(static_cast<std::int64_t>(key) + *stride * static_cast<std::int64_t>(i));
    }
  }
  // The reserve may be smaller than this read-around (a burst ate it): on a miss with a
  // trend, make room now. A failed write-back is the evictor's to report: the miss goes on.
  Status ignored;
  make_room_on_app(slot, want.size(), &ignored);
  for (std::int64_t k : want) {
    auto pending = claim_for_prefetch(static_cast<std::uint64_t>(k), slot->index);
    if (!pending) break;  // no free frame: the rest would not fit either
    if (pending->e == nullptr) continue;  // resident, in flight, or past the slab
    batch.read(far_of(pending->key), {frame_addr(pending->frame), options_.page_bytes});
    extra.push_back(*pending);
  }
}

Status PageCache::prefetch(std::span<const FarAddr> addrs) {
  ThreadSlot* slot = thread_slot();
  if (slot == nullptr) return too_many_threads();
  thread_local std::vector<std::int64_t> keys;
  keys.clear();
  for (FarAddr a : addrs) {
    const auto key = static_cast<std::int64_t>(a.raw >> view_.page_shift);
    if (keys.empty() || keys.back() != key) keys.push_back(key);  // neighbours share pages
  }
  // Room for the batch: a prefetch never evicts in line on its own (claim_for_prefetch), but
  // the application asked for these pages by name, as a miss would, so make room as a miss
  // does, for at most one prefetch window (pages a thread holds in a scope are spared).
  Status err;
  make_room_on_app(slot, std::min(keys.size(), prefetch_window(budget_.limit(), options_.page_bytes)),
                   &err);
  if (!err.ok()) return err;  // a write-back failed: the caller hears of it
  post_prefetch(keys, slot->index);
  return Status::Ok();
}

std::size_t PageCache::prefetch_window(std::uint64_t budget_bytes, std::uint32_t page_bytes) {
  return static_cast<std::size_t>(std::clamp<std::uint64_t>(budget_bytes / page_bytes / 16, 1, 128));
}

void PageCache::make_room_on_app(ThreadSlot* slot, std::size_t pages, Status* err) {
  const std::size_t free = pager_->free_frames();
  if (free >= pages) return;
  slot->waiting.store(1, std::memory_order_seq_cst);
  pager_->evict(pages - free, err);
  slot->waiting.store(0, std::memory_order_seq_cst);
}

std::optional<PageCache::Pending> PageCache::claim_for_prefetch(std::uint64_t key,
                                                                std::uint32_t slot) {
  Status err;
  auto* e = ensure_entry(key, &err);
  std::uint64_t expected = kPteAbsent;
  if (e == nullptr || !e->compare_exchange_strong(expected, kPteFetching)) {
    return Pending{nullptr, 0, key, slot};
  }
  std::uint32_t f = 0;
  if (!pager_->try_take_frame(&f)) {  // prefetch never evicts in line (this wakes the evictor)
    e->store(kPteAbsent, std::memory_order_release);
    return std::nullopt;
  }
  return Pending{e, f, key, slot};
}

void PageCache::abandon(const std::vector<Pending>& pending) {
  for (const Pending& p : pending) {
    pager_->give_back(p.frame);
    FARMEM_DCHECK_EQ(p.e->load(), kPteFetching);  // claimed for this prefetch, still ours
    p.e->store(kPteAbsent, std::memory_order_release);
  }
}

void PageCache::install(std::atomic<std::uint64_t>& e, std::uint32_t f, std::uint64_t key,
                        bool dirty, std::uint32_t prefetch_slot) {
  // kFetching -> kPresent: only the thread that claimed the entry installs it.
  FARMEM_DCHECK_MSG(e.load() == kPteFetching, "page {} installed from entry state {}", key,
                    pte_state(e.load()));
  // A fresh page gets one sweep of grace (referenced).
  pager_->install(f, key, dirty, /*referenced=*/true, prefetch_slot);
  e.store(make_pte(f, kPtePresent), std::memory_order_release);
}

void PageCache::prefetch_hit_on_app(ThreadSlot* slot, std::uint64_t key, std::uint32_t f) {
  FARMEM_DCHECK_LT(f, frames_);
  const std::uint32_t owner = pager_->note_access(f);
  if (owner == paging::Pager::kDemand) return;  // not a prefetched page, or used already
  streams_[slot->index].on_prefetched_page_used();
  if (options_.prefetch) prefetch_after_access_on_app(slot, key);
}

paging::StreamPrefetcher& PageCache::stream_on_app(ThreadSlot* slot) {
  paging::StreamPrefetcher& stream = streams_[slot->index];
  // Pages the evictor found unused since the last access shrink this stream's depth.
  for (auto n = pager_->take_wasted(slot->index); n > 0; --n) {
    stream.on_prefetched_page_wasted();
  }
  return stream;
}

void PageCache::prefetch_after_access_on_app(ThreadSlot* slot, std::uint64_t key) {
  paging::StreamPrefetcher& stream = stream_on_app(slot);
  thread_local std::vector<std::int64_t> want;
  want.clear();
  if (stream.on_access(static_cast<std::int64_t>(key), want) > 0) {
    post_prefetch(want, slot->index);
  }
}

void PageCache::post_prefetch(const std::vector<std::int64_t>& keys, std::uint32_t slot) {
  auto job = std::make_unique<InFlight>();
  for (std::int64_t k : keys) {
    auto p = claim_for_prefetch(static_cast<std::uint64_t>(k), slot);
    if (!p) break;  // no free frame: the rest would not fit either
    if (p->e == nullptr) continue;
    job->batch.read(far_of(p->key), {frame_addr(p->frame), options_.page_bytes});
    job->pages.push_back(*p);
  }
  if (job->pages.empty()) return;
  if (Status st = io_.submit(job->batch); !st.ok()) {
    log().warn("posting a prefetch of {} page(s) failed: {}", job->pages.size(), st.to_string());
    abandon(job->pages);
    return;
  }
  prefetch_pages_in_flight_.fetch_add(job->pages.size(), std::memory_order_relaxed);
  {
    MutexLock lock(prefetch_mu_);
    in_flight_.push_back(std::move(job));
  }
  prefetch_cv_.notify_one();
}

std::unique_ptr<PageCache::InFlight> PageCache::take_in_flight() {
  MutexLock lock(prefetch_mu_);
  if (in_flight_.empty()) return nullptr;
  auto job = std::move(in_flight_.front());
  in_flight_.pop_front();
  return job;
}

void PageCache::complete(InFlight& job) {
  const Status st = io_.wait(job.batch);
  prefetch_pages_in_flight_.fetch_sub(job.pages.size(), std::memory_order_relaxed);
  if (!st.ok()) {
    log().warn("prefetch of {} page(s) failed: {}", job.pages.size(), st.to_string());
    abandon(job.pages);
    return;
  }
  for (const Pending& p : job.pages) install(*p.e, p.frame, p.key, false, p.slot);
  pager_->note_prefetch_issued(job.pages.size());
  bytes_read_.fetch_add(job.pages.size() * options_.page_bytes, std::memory_order_relaxed);
}

bool PageCache::complete_prefetch_on_app() {
  auto job = take_in_flight();
  if (!job) return false;
  complete(*job);
  return true;
}

void PageCache::prefetch_loop() {
  for (;;) {
    {
      UniqueLock lock(prefetch_mu_);
      while (!stopping_ && in_flight_.empty()) lock.wait(prefetch_cv_);
      if (in_flight_.empty()) return;  // stopping, and nothing left to complete
      if (!stopping_) {
        // Leave the batch a moment to an application thread that needs its pages: it then
        // completes it itself instead of spinning while this thread polls (on few cores, two
        // pollers starve the very software RDMA stack they wait for).
        (void)lock.wait_for(prefetch_cv_, kPrefetchHandoff,
                            [&]() FARMEM_REQUIRES(prefetch_mu_) { return stopping_; });
      }
    }
    // Posted batches are always completed, even when stopping: their frames must return.
    while (auto job = take_in_flight()) complete(*job);
  }
}

}  // namespace farmem::detail
