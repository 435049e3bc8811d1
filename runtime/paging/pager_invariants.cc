// The paging core's full invariant check (debug builds: FARMEM_DCHECK on).
#include "paging/pager.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <vector>

#include "common/dcheck.h"

namespace farmem::paging {

// ---- invariants (debug builds) ----

void Pager::check_invariants_locked() {
  if constexpr (kDcheckOn) {
    static std::atomic<std::uint64_t> calls{0};
    if (!dcheck_due(calls, options_.frames)) return;
    const std::uint32_t n = options_.frames, C = options_.chunk_frames;
    MutexLock lock(free_mu_);  // with evict_mu_: no chunk or free-list change now
    std::vector<std::uint8_t> listed(n, 0);
    for (std::uint32_t f : free_) {
      FARMEM_DCHECK_LT(f, n);
      FARMEM_DCHECK_MSG(listed[f] == 0, "frame {} is on the free list twice", f);
      listed[f] = 1;
      FARMEM_DCHECK_MSG(state(f) == FrameState::kFree, "listed frame {} in state {}", f,
                        +state_[f].load());
    }
    FARMEM_DCHECK(std::is_heap(free_.begin(), free_.end(), std::greater<>()));
    // Frames: free (listed when their chunk is active) or in use (kLoading, kPresent) in an
    // active chunk; in_use_ counts those in use and the charged pages not bound yet.
    std::uint64_t active = 0, used = 0;
    for (std::uint32_t f = 0; f < n; ++f) {
      const bool is_active = C == 0 || chunk_active(f / C);
      active += is_active ? 1 : 0;
      if (state(f) != FrameState::kFree) {
        ++used;
        FARMEM_DCHECK_MSG(is_active, "frame {} is in use in a retired chunk", f);
      } else {
        FARMEM_DCHECK_MSG(listed[f] == is_active, "free frame {} is {} the free list", f,
                          is_active ? "missing from" : "of a retired chunk, yet on");
      }
    }
    for (std::uint32_t c = 0; c < chunk_count(); ++c) {
      std::uint32_t on_list = 0;
      for (std::uint32_t f = chunk_first(c); f < chunk_first(c) + chunk_size(c); ++f) {
        on_list += listed[f];
      }
      FARMEM_DCHECK_EQ(free_in_chunk_[c], on_list);
    }
    FARMEM_DCHECK_EQ(active_frames_.load(), active);
    FARMEM_DCHECK_LE(charged_unbound_, free_.size());
    FARMEM_DCHECK_EQ(in_use_.load(), charged_unbound_ + used);
    // Charged before counted, uncounted before uncharged (charge_locked, release).
    FARMEM_DCHECK_LE(std::uint64_t{in_use_.load()} * options_.page_bytes, budget_.used());
  }
}

}  // namespace farmem::paging
