// The paging core's chunks (see pager.h, "Giving memory back"): the free list as a
// min-heap, and chunks retired above the budget's limit and revived below it.
#include "paging/pager.h"

#include <algorithm>
#include <functional>

#include "common/dcheck.h"
#include "common/log.h"

namespace farmem::paging {

// ---- chunks ----

std::uint32_t Pager::chunk_count() const {
  const std::uint32_t c = options_.chunk_frames;
  return c == 0 ? 0 : (options_.frames + c - 1) / c;
}

std::uint32_t Pager::chunk_size(std::uint32_t c) const {
  return std::min(options_.chunk_frames, options_.frames - chunk_first(c));
}

std::uint32_t Pager::first_unused_chunk() const {
  // This pager never holds more than limit / page_bytes frames (rounded up), wherever in the
  // budget's other consumers stand; chunks from the one that holds frame number `most` on
  // can only ever be needed after the limit grows.
  const std::uint64_t limit = budget_.limit();
  const std::uint64_t most = std::min<std::uint64_t>(
      options_.frames, limit / options_.page_bytes + (limit % options_.page_bytes != 0));
  return static_cast<std::uint32_t>((most + options_.chunk_frames - 1) / options_.chunk_frames);
}

bool Pager::short_of_frames() const {
  const std::uint32_t slots = free_slots();
  return slots < reserve_ && budget_room() > slots;
}

bool Pager::chunk_work_pending() const {
  if (options_.chunk_frames == 0) return false;
  const std::uint32_t first_unused = first_unused_chunk();
  for (std::uint32_t c = first_unused; c < chunk_count(); ++c) {
    if (chunk_active(c)) return true;  // to empty and retire
  }
  if (!short_of_frames()) return false;
  for (std::uint32_t c = 0; c < first_unused; ++c) {
    if (!chunk_active(c)) return true;  // to revive
  }
  return false;
}

void Pager::push_free_locked(std::uint32_t f) {
  FARMEM_DCHECK_LT(f, options_.frames);
  FARMEM_DCHECK_MSG(state(f) == FrameState::kFree, "frame {} goes on the free list in state {}",
                    f, +state_[f].load());
  FARMEM_DCHECK_LT(free_.size(), options_.frames);  // else some frame is on it twice
  free_.push_back(f);
  std::push_heap(free_.begin(), free_.end(), std::greater<>());
  if (options_.chunk_frames != 0) {
    const std::uint32_t c = f / options_.chunk_frames;
    ++free_in_chunk_[c];
    FARMEM_DCHECK_LE(free_in_chunk_[c], chunk_size(c));
  }
}

std::uint32_t Pager::pop_free_locked() {
  FARMEM_DCHECK(!free_.empty());
  std::pop_heap(free_.begin(), free_.end(), std::greater<>());
  const std::uint32_t f = free_.back();
  free_.pop_back();
  if (options_.chunk_frames != 0) {
    FARMEM_DCHECK_GT(free_in_chunk_[f / options_.chunk_frames], 0u);
    --free_in_chunk_[f / options_.chunk_frames];
  }
  return f;
}

std::size_t Pager::revive_chunks_locked(std::uint32_t need, Status* error) {
  std::size_t revived = 0;
  const std::uint32_t first_unused = first_unused_chunk();
  for (std::uint32_t c = 0; c < first_unused && (free_slots() < need || short_of_frames());
       ++c) {
    if (chunk_active(c)) continue;
    const std::uint32_t first = chunk_first(c), n = chunk_size(c);
    // Registered before any of its frames can be taken: a fetch into it needs its key.
    if (Status st = frontend_.revive_frames(first, n); !st.ok()) {
      if (!revive_failed_) {
        log().warn("{}: cannot take frames {}..{} back into use, the budget's room above "
                   "them stays unused: {}", options_.name, first, first + n - 1, st.to_string());
      }
      revive_failed_ = true;
      if (error != nullptr) *error = st;
      break;
    }
    revive_failed_ = false;
    // Active before its frames are on the free list: a frame that can be taken is in an
    // active chunk, and frames in use never outnumber active ones (both checked).
    chunk_active_[c].store(1, std::memory_order_release);
    active_frames_.fetch_add(n, std::memory_order_relaxed);
    {
      MutexLock lock(free_mu_);
      FARMEM_DCHECK_EQ(free_in_chunk_[c], 0u);  // a retired chunk has no frame on the list
      for (std::uint32_t f = first; f < first + n; ++f) push_free_locked(f);
    }
    chunks_revived_.fetch_add(1, std::memory_order_relaxed);
    ++revived;
    free_cv_.notify_all();
  }
  return revived;
}

void Pager::retire_chunks_locked() {
  const std::uint32_t C = options_.chunk_frames;
  for (std::uint32_t c = first_unused_chunk(); c < chunk_count(); ++c) {
    if (!chunk_active(c)) continue;
    const std::uint32_t first = chunk_first(c), n = chunk_size(c);
    {
      MutexLock lock(free_mu_);
      // Every frame free (none loading, none present) and none promised to a charge.
      if (free_in_chunk_[c] != n || free_.size() - charged_unbound_ < n) continue;
      [[maybe_unused]] const std::size_t listed = free_.size();
      std::erase_if(free_, [&](std::uint32_t f) { return f / C == c; });
      std::make_heap(free_.begin(), free_.end(), std::greater<>());
      FARMEM_DCHECK_EQ(listed - free_.size(), n);  // every frame of it, once each
      FARMEM_DCHECK_LE(charged_unbound_, free_.size());  // charges still have their frames
      free_in_chunk_[c] = 0;
    }
    chunk_active_[c].store(0, std::memory_order_release);
    if (Status st = frontend_.retire_frames(first, n); !st.ok()) {
      log().warn("{}: cannot give frames {}..{} back, they stay in use: {}", options_.name,
                 first, first + n - 1, st.to_string());
      chunk_active_[c].store(1, std::memory_order_release);  // before its frames can be taken
      {
        MutexLock lock(free_mu_);
        for (std::uint32_t f = first; f < first + n; ++f) push_free_locked(f);
      }
      free_cv_.notify_all();
      continue;
    }
    active_frames_.fetch_sub(n, std::memory_order_relaxed);
    chunks_retired_.fetch_add(1, std::memory_order_relaxed);
  }
}

void Pager::pick_unused_locked(std::size_t want, std::vector<std::uint32_t>& out) {
  for (std::uint32_t c = first_unused_chunk(); c < chunk_count() && out.size() < want; ++c) {
    if (!chunk_active(c)) continue;
    for (std::uint32_t f = chunk_first(c); f < chunk_first(c) + chunk_size(c); ++f) {
      if (state(f) != FrameState::kPresent) continue;
      out.push_back(f);
      if (out.size() == want) break;
    }
  }
}

Status Pager::adjust_chunks() {
  if (options_.chunk_frames == 0) return Status::Ok();
  Status first;
  {
    MutexLock lock(evict_mu_);
    (void)revive_chunks_locked(0, &first);
  }
  // Pages in chunks the budget leaves unused go, hot or not (they come back into low frames
  // when touched again). A pass at a time, so inline evictions are not held up for long;
  // bounded, since pages may keep arriving if the limit moves meanwhile.
  const std::uint32_t rounds = options_.frames / options_.evict_batch + 2;
  for (std::uint32_t round = 0; round < rounds; ++round) {
    MutexLock lock(evict_mu_);
    frontend_.lock_pages();
    picked_.clear();
    pick_unused_locked(options_.evict_batch, picked_);
    Status st;
    const std::size_t freed = picked_.empty() ? 0 : pass_picked_locked(&st);
    frontend_.unlock_pages();
    if (!st.ok() && first.ok()) first = st;
    if (freed == 0) break;  // none left, or every one kept (in use, write-back failing)
  }
  MutexLock lock(evict_mu_);
  retire_chunks_locked();
  check_invariants_locked();
  return first;
}

}  // namespace farmem::paging
