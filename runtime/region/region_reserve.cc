// The free reserve of the budget and the background evictor that keeps it, so that a fault
// charges its page from free room instead of evicting (a write-back round trip) on the fault
// path. The fault path only notices that the reserve ran low and wakes the evictor, once per
// half reserve; eviction on the fault path happens only when the reserve is used up.
#include <algorithm>

#include "region/region.h"
#include "region/region_constants.h"

namespace farmem {

using region::kPageSize;

std::uint64_t Region::Impl::reserve_bytes() const {
  const std::uint64_t by_share = budget.limit() / region::kReserveShareOfBudget;
  return std::min<std::uint64_t>(region::kReservePagesMax * kPageSize,
                                 by_share / kPageSize * kPageSize);
}

std::uint64_t Region::Impl::free_bytes() const {
  const std::uint64_t used = budget.used();
  const std::uint64_t limit = budget.limit();
  return used >= limit ? 0 : limit - used;
}

void Region::Impl::note_charged() {
  if (free_bytes() >= reserve_bytes() / 2) return;
  if (evict_requested.exchange(true, std::memory_order_acq_rel)) return;  // already asked
  {
    std::lock_guard lock(evict_mu_);  // pairs with the evictor's predicate check
  }
  evict_cv_.notify_one();
}

bool Region::Impl::charge_fault_page() {
  if (budget.try_charge(kPageSize)) {
    note_charged();
    return true;
  }
  counters.add(counters.inline_evictions);
  return budget.charge(kPageSize);  // the reserve is used up: evict right here
}

void Region::Impl::run_on_evictor() {
  std::unique_lock lock(evict_mu_);
  bool last_refill_stuck = false;
  while (!evictor_stop) {
    const bool asked = evict_cv_.wait_for(lock, region::kEvictorIdleWait, [&] {
      return evictor_stop || evict_requested.load(std::memory_order_acquire);
    });
    if (evictor_stop) break;
    // The backstop (another budget consumer ate the room) does not retry a refill that could
    // not make progress (say, write-backs to a dead memserver): only a new fault asks again.
    if (!asked && (last_refill_stuck || free_bytes() >= reserve_bytes() / 2)) continue;
    lock.unlock();
    last_refill_stuck = !refill_reserve_on_evictor();
    evict_requested.store(false, std::memory_order_release);
    lock.lock();
  }
}

bool Region::Impl::refill_reserve_on_evictor() {
  const std::uint64_t want = reserve_bytes();
  while (!evictor_stop && free_bytes() < want) {
    if (reclaim(want - free_bytes()) == 0) return false;  // nothing of ours left to give
  }
  return true;
}

void Region::Impl::stop_evictor() {
  if (!evictor.joinable()) return;
  {
    std::lock_guard lock(evict_mu_);
    evictor_stop = true;
  }
  evict_cv_.notify_one();
  evictor.join();
}

}  // namespace farmem
