// PageCache: eviction (CLOCK + grace period), write-back of dirty pages, flush, advice, and
// the background evictor thread.
#include <algorithm>

#include "cache/page_cache.h"
#include "common/log.h"

namespace farmem::detail {

namespace {
constexpr std::uint64_t kNoKey = ~std::uint64_t{0};
// How long the evictor waits for threads inside DerefScopes before giving up on a round
// (their pages are then kept): scopes are meant to last microseconds.
constexpr auto kGraceTimeout = std::chrono::milliseconds(20);
// Pages the background evictor frees per round: enough to amortise one batched write-back,
// few enough to keep a round short.
constexpr std::size_t kEvictBatch = 32;
// The background evictor also wakes on this period, to refill the reserve after bursts.
constexpr auto kEvictorPeriod = std::chrono::milliseconds(5);
}  // namespace

std::size_t PageCache::mark_victims(std::vector<std::uint32_t>& frames,
                                    std::vector<Victim>& out) {
  for (std::uint32_t f : frames) {
    const std::uint64_t key = frame_key_[f].load(std::memory_order_relaxed);
    if (key == kNoKey) continue;
    std::atomic<std::uint64_t>* e = entry(key);
    if (e == nullptr) continue;
    std::uint64_t expected = make_pte(f, kPtePresent);
    if (e->compare_exchange_strong(expected, make_pte(f, kPteEvicting),
                                   std::memory_order_seq_cst)) {
      out.push_back({f, key});
    }
  }
  return out.size();
}

bool PageCache::await_grace(std::vector<Victim>& victims) {
  // Pairs with the fence in DerefScope's constructor (see page_cache.h).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const auto deadline = std::chrono::steady_clock::now() + kGraceTimeout;
  for (std::uint32_t i = 0; i < 256; ++i) {
    ThreadSlot& s = slots_[i];
    if (!s.in_use.load(std::memory_order_acquire)) continue;
    const std::uint64_t state = s.state.load(std::memory_order_acquire);
    if ((state & 1) == 0) continue;
    for (;;) {
      if (s.waiting.load(std::memory_order_seq_cst) != 0) {
        // Blocked in the cache: its touched list is stable; spare what it lists.
        const std::uint32_t n = s.ntouched.load(std::memory_order_acquire);
        for (Victim& v : victims) {
          if (n > kMaxTouched) v.keep = true;
          for (std::uint32_t k = 0; k < std::min(n, kMaxTouched) && !v.keep; ++k) {
            v.keep = s.touched[k] == v.key;
          }
        }
        break;
      }
      if (s.state.load(std::memory_order_acquire) != state) break;
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::yield();
    }
  }
  return true;
}

void PageCache::unmark(Victim& v, bool still_dirty) {
  if (still_dirty) dirty_[v.frame].store(1, std::memory_order_relaxed);
  entry(v.key)->store(make_pte(v.frame, kPtePresent), std::memory_order_release);
}

Status PageCache::write_back(std::vector<Victim>& victims) {
  IoBatch batch;
  std::vector<Victim*> written;
  for (Victim& v : victims) {
    if (v.keep || dirty_[v.frame].load(std::memory_order_relaxed) == 0) continue;
    batch.write(far_of(v.key), {frame_addr(v.frame), options_.page_bytes});
    written.push_back(&v);
  }
  if (written.empty()) return Status::Ok();
  Status st = io_.submit(batch);
  if (st.ok()) st = io_.wait(batch);
  if (!st.ok()) {
    // We cannot tell which writes landed: every one stays dirty and resident.
    for (Victim* v : written) v->keep = true;
    log().error("write-back of {} page(s) failed: {}", written.size(), st.to_string());
    return st.with_context("write-back");
  }
  writebacks_.fetch_add(written.size(), std::memory_order_relaxed);
  bytes_written_.fetch_add(written.size() * options_.page_bytes, std::memory_order_relaxed);
  for (Victim* v : written) dirty_[v->frame].store(0, std::memory_order_relaxed);
  return Status::Ok();
}

std::size_t PageCache::evict(std::size_t want, Status* error) {
  std::lock_guard lock(evict_mu_);
  thread_local std::vector<std::uint32_t> picked;
  picked.clear();
  clock_.pick(want, ref_, [&](std::uint32_t f) {
    const std::uint64_t key = frame_key_[f].load(std::memory_order_relaxed);
    if (key == kNoKey) return false;
    auto* e = entry(key);
    return e != nullptr && e->load(std::memory_order_relaxed) == make_pte(f, kPtePresent);
  }, picked);
  std::vector<Victim> victims;
  if (mark_victims(picked, victims) == 0) return 0;
  if (!await_grace(victims)) {
    for (Victim& v : victims) unmark(v, false);
    return 0;
  }
  if (Status st = write_back(victims); !st.ok()) *error = st;
  return drop_victims(victims, /*count_wasted=*/true);
}

std::size_t PageCache::drop_victims(std::vector<Victim>& victims, bool count_wasted) {
  std::size_t freed = 0;
  for (Victim& v : victims) {
    if (v.keep) {
      unmark(v, false);
      continue;
    }
    const bool unused_prefetch = prefetched_[v.frame].exchange(0, std::memory_order_relaxed) != 0;
    if (unused_prefetch && count_wasted) {
      prefetch_wasted_.fetch_add(1, std::memory_order_relaxed);
      wasted_pending_[prefetch_owner_[v.frame]].fetch_add(1, std::memory_order_relaxed);
    }
    entry(v.key)->store(kPteAbsent, std::memory_order_release);
    ref_.clear(v.frame);
    release_frame(v.frame);
    ++freed;
  }
  evictions_.fetch_add(freed, std::memory_order_relaxed);
  return freed;
}

std::uint64_t PageCache::reclaim(std::uint64_t bytes) {
  Status err;
  const std::size_t pages = (bytes + options_.page_bytes - 1) / options_.page_bytes;
  return evict(std::max<std::size_t>(pages, 1), &err) * options_.page_bytes;
}

Status PageCache::flush() {
  std::lock_guard lock(evict_mu_);
  constexpr int kRounds = 100;  // grace periods can time out under long scopes; retry a while
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::uint32_t> dirty;
    for (std::uint32_t f = 0; f < frames_; ++f) {
      if (dirty_[f].load(std::memory_order_relaxed) != 0 &&
          frame_key_[f].load(std::memory_order_relaxed) != kNoKey) {
        dirty.push_back(f);
      }
    }
    std::vector<Victim> victims;
    mark_victims(dirty, victims);
    if (victims.empty() && dirty.empty()) {
      std::lock_guard elock(error_mu_);
      background_error_ = Status::Ok();  // everything is durable now
      return Status::Ok();
    }
    if (!await_grace(victims)) {
      for (Victim& v : victims) unmark(v, false);
      continue;
    }
    Status st = write_back(victims);
    for (Victim& v : victims) unmark(v, false);
    if (!st.ok()) return st.with_context("flush");
  }
  return TimedOut("flush: dirty pages stayed pinned by DerefScopes; call flush outside scopes");
}

Status PageCache::advise(FarAddr addr, std::uint64_t bytes, Advice advice) {
  if (bytes == 0) return Status::Ok();
  const std::uint64_t first = addr.raw >> view_.page_shift;
  const std::uint64_t last = (addr.raw + bytes - 1) >> view_.page_shift;
  ThreadSlot* slot = thread_slot();
  if (slot == nullptr && advice != Advice::kDontNeed) return too_many_threads();
  switch (advice) {
    case Advice::kNormal:
    case Advice::kSequential:
    case Advice::kRandom: {
      const auto hint = advice == Advice::kSequential ? paging::Hint::kSequential
                        : advice == Advice::kRandom   ? paging::Hint::kRandom
                                                      : paging::Hint::kNormal;
      streams_[slot->index].set_hint(hint);
      return Status::Ok();
    }
    case Advice::kWillNeed: {
      std::vector<std::int64_t> keys;
      for (std::uint64_t k = first; k <= last; ++k) keys.push_back(static_cast<std::int64_t>(k));
      post_prefetch(keys, slot->index);
      return Status::Ok();
    }
    case Advice::kDontNeed:
      return drop_range(first, last);
  }
  return InvalidArgument("unknown advice");
}

Status PageCache::drop_range(std::uint64_t first, std::uint64_t last) {
  std::lock_guard lock(evict_mu_);
  std::vector<std::uint32_t> frames;
  for (std::uint64_t k = first; k <= last; ++k) {
    auto* e = entry(k);
    if (e == nullptr) continue;
    const std::uint64_t pte = e->load(std::memory_order_acquire);
    if (pte_state(pte) == kPtePresent) frames.push_back(pte_frame(pte));
  }
  std::vector<Victim> victims;
  mark_victims(frames, victims);
  if (!await_grace(victims)) {
    for (Victim& v : victims) unmark(v, false);
    return TimedOut("DontNeed: pages pinned by DerefScopes");
  }
  Status st = write_back(victims);
  // Pages the application asked to drop are not counted as wasted prefetches.
  drop_victims(victims, /*count_wasted=*/false);
  return st;
}

void PageCache::evictor_loop() {
  for (;;) {
    {
      std::unique_lock lock(prefetch_mu_);
      evict_cv_.wait_for(lock, kEvictorPeriod, [&] { return stopping_; });
      if (stopping_) return;
    }
    while (free_frames() < reserve_) {
      Status err;
      const std::size_t n = evict(kEvictBatch, &err);
      if (!err.ok()) {
        std::lock_guard lock(error_mu_);
        if (background_error_.ok()) background_error_ = err;
      }
      if (n == 0) break;
    }
  }
}

}  // namespace farmem::detail
