// PageCache as a front end of the paging core: how its victims are isolated from lock-free
// hits (entry kEvicting + a grace period), staged (straight from the frames), dropped and
// restored; and flush, advice and DontNeed, which go through the pager.
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "cache/page_cache.h"
#include "common/dcheck.h"
#include "common/log.h"
#include "paging/runs.h"

namespace farmem::detail {

namespace {
// How long the evictor waits for threads inside DerefScopes before giving up on a round
// (their pages are then kept): scopes are meant to last microseconds.
constexpr auto kGraceTimeout = std::chrono::milliseconds(20);
}  // namespace

void PageCache::isolate(std::span<paging::Victim> victims, bool /*for_flush*/) {
  // A flush isolates exactly like an eviction: while a page is written back no thread may
  // hold a reference into it that could store after the copy left.
  bool any = false;
  for (paging::Victim& v : victims) {
    std::atomic<std::uint64_t>* e = entry(v.key);
    std::uint64_t expected = make_pte(v.frame, kPtePresent);
    if (e == nullptr ||
        !e->compare_exchange_strong(expected, make_pte(v.frame, kPteEvicting),
                                    std::memory_order_seq_cst)) {
      // A present frame's page has an entry, and between passes it is either present in
      // that frame or, while install() runs, still kFetching: nothing else.
      FARMEM_DCHECK_MSG(e != nullptr && expected == kPteFetching,
                        "page {} of present frame {} has entry {:#x}", v.key, v.frame, expected);
      v.keep = true;  // not present under this frame any more (being installed)
      continue;
    }
    any = true;
  }
  if (any && !await_grace(victims)) {
    for (paging::Victim& v : victims) v.keep = true;
  }
}

bool PageCache::await_grace(std::span<paging::Victim> victims) {
  // Pairs with the fence in DerefScope's constructor (see page_cache.h).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const auto deadline = std::chrono::steady_clock::now() + kGraceTimeout;
  for (std::uint32_t i = 0; i < options_.max_threads; ++i) {
    ThreadSlot& s = slots_[i];
    if (!s.in_use.load(std::memory_order_acquire)) continue;
    const std::uint64_t state = s.state.load(std::memory_order_acquire);
    if ((state & 1) == 0) continue;
    for (;;) {
      if (s.waiting.load(std::memory_order_seq_cst) != 0) {
        // Blocked in the cache: its touched list is stable; spare what it lists.
        const std::uint32_t n = s.ntouched.load(std::memory_order_acquire);
        for (paging::Victim& v : victims) {
          if (n > kMaxTouched) v.keep = true;
          for (std::uint32_t k = 0; k < std::min(n, kMaxTouched) && !v.keep; ++k) {
            v.keep = s.touched[k].load(std::memory_order_relaxed) == v.key;
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

void PageCache::stage(std::span<const paging::Victim> victims,
                      std::span<std::span<const std::byte>> sources) {
  for (std::size_t i = 0; i < victims.size(); ++i) {
    sources[i] = {frame_addr(victims[i].frame), options_.page_bytes};
  }
}

void PageCache::drop(std::span<paging::Victim> victims) {
  for (const paging::Victim& v : victims) {
    // Only victims isolate() marked and nobody kept (pinned pages stay) are dropped.
    FARMEM_DCHECK_EQ(entry(v.key)->load(), make_pte(v.frame, kPteEvicting));
    entry(v.key)->store(kPteAbsent, std::memory_order_release);
  }
  // Under a budget lowered below the arena (the tier shrank it), whole chunks of the arena the
  // budget leaves unused go back to the OS through the pager (retire_frames: deregistered,
  // then dropped), over every transport. Where nothing pins registered memory (tcp, local),
  // each dropped frame goes back at once too, so RSS follows the frames in use even inside
  // chunks still in use. At full budget they stay mapped: a frame is reused at once, and
  // refaulting it would cost every miss a kernel page fault.
  // Not frame by frame when a connection pins the arena by its registration (verbs): the NIC
  // would go on filling the old pages while the CPU faulted in new zero ones (seen in the VM:
  // 87 % of a far_vector wrong after the tier shrank over rxe). Asked at each drop, under the
  // I/O service's registration lock: a verbs server may join a running runtime (add_server).
  if (budget_.limit() >= arena_len_) return;
  dropped_frames_.clear();
  for (const paging::Victim& v : victims) dropped_frames_.push_back(v.frame);
  std::sort(dropped_frames_.begin(), dropped_frames_.end());
  io_.if_unpinned([&] {
    if (!arena_small_pages_) {
      // Huge pages no more: a frame refetched into a huge page charges all 2 MiB of it, so a
      // budget of a few frames spread over the arena kept RSS near the arena's size (in one
      // cgroup test run: 17-19 MiB of RSS at a 2 MiB budget, the cgroup held above
      // memory.high; with this, AnonHugePages is 0 after the first shrink and RSS follows).
      (void)::madvise(arena_, arena_len_, MADV_NOHUGEPAGE);
      arena_small_pages_ = true;
    }
    paging::for_each_run(dropped_frames_, [&](std::size_t i, std::size_t n) {  // one a run
      (void)::madvise(frame_addr(dropped_frames_[i]), n * options_.page_bytes, MADV_DONTNEED);
    });
  });
}

Status PageCache::retire_frames(std::uint32_t first, std::uint32_t n) {
  // From arena_, not frame_addr(): the pager revives the first chunks before view_ is set.
  const std::span<std::byte> chunk{arena_ + std::size_t{first} * options_.page_bytes,
                                   std::size_t{n} * options_.page_bytes};
  // Deregistered from every connection first (under the I/O service's registration lock, so
  // a server added meanwhile does not register it either): over verbs the NIC lets go of the
  // physical pages, and only then may the CPU's mapping drop them. No op can still use the
  // chunk: the pager retires only free frames, and a frame is freed after its I/O completed.
  const std::size_t c = first / (chunk_bytes_ / options_.page_bytes);
  FARMEM_DCHECK_EQ(first % (chunk_bytes_ / options_.page_bytes), 0u);
  FARMEM_DCHECK_EQ(chunk_registered_[c], 1u);  // the pager retires an active chunk only
  FARMEM_RETURN_IF_ERROR(io_.unregister_memory(chunk).with_context("giving back cache frames"));
  chunk_registered_[c] = 0;
  if (::madvise(chunk.data(), chunk.size(), MADV_DONTNEED) != 0) {
    // Still correct (the frames are unused and refilled by fetches), only not given back.
    log().warn("cache: MADV_DONTNEED of {} bytes failed: {}", chunk.size(), strerror(errno));
  }
  return Status::Ok();
}

Status PageCache::revive_frames(std::uint32_t first, std::uint32_t n) {
  // From arena_, not frame_addr(): the pager revives the first chunks before view_ is set.
  const std::span<std::byte> chunk{arena_ + std::size_t{first} * options_.page_bytes,
                                   std::size_t{n} * options_.page_bytes};
  const std::size_t c = first / (chunk_bytes_ / options_.page_bytes);
  FARMEM_DCHECK_EQ(first % (chunk_bytes_ / options_.page_bytes), 0u);
  FARMEM_DCHECK_EQ(chunk_registered_[c], 0u);  // the pager revives a retired chunk only
  FARMEM_RETURN_IF_ERROR(io_.register_memory(chunk).with_context("cache frames"));
  chunk_registered_[c] = 1;
  return Status::Ok();
}

void PageCache::restore(std::span<paging::Victim> victims) {
  for (const paging::Victim& v : victims) {
    // Only entries this pass marked go back (a kept victim may never have been marked).
    std::uint64_t expected = make_pte(v.frame, kPteEvicting);
    entry(v.key)->compare_exchange_strong(expected, make_pte(v.frame, kPtePresent),
                                          std::memory_order_release);
  }
}

Status PageCache::flush() { return pager_->flush(); }

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
  std::vector<std::uint32_t> frames;
  for (std::uint64_t k = first; k <= last; ++k) {
    auto* e = entry(k);
    if (e == nullptr) continue;
    const std::uint64_t pte = e->load(std::memory_order_acquire);
    if (pte_state(pte) == kPtePresent) frames.push_back(pte_frame(pte));
  }
  // Pages the application asked to drop are not counted as wasted prefetches.
  Status st = pager_->drop_frames(frames);
  if (st.code() == StatusCode::kTimedOut) {
    return TimedOut("DontNeed: pages pinned by DerefScopes (" + st.message() + ")");
  }
  return st;
}

}  // namespace farmem::detail
