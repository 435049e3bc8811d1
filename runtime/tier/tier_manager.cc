// The tier manager (see tier_manager.h).
#include "tier/tier_manager.h"

#include "common/log.h"

namespace farmem::tier {

TierManager::TierManager(paging::Budget& budget, std::unique_ptr<PressureSource> source,
                         TierPolicyOptions policy, std::chrono::milliseconds interval)
    : budget_(budget), source_(std::move(source)), policy_(policy), interval_(interval) {
  stats_.enabled = true;
  stats_.floor_bytes = policy.floor_bytes;
  stats_.ceiling_bytes = policy.ceiling_bytes;
  if (interval_.count() > 0) thread_ = std::thread([this] { run(); });
}

TierManager::~TierManager() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void TierManager::run() {
  UniqueLock lock(mu_);
  while (!stopping_) {
    if (lock.wait_for(cv_, interval_, [&]() FARMEM_REQUIRES(mu_) { return stopping_; })) break;
    lock.unlock();
    step();
    lock.lock();
  }
}

void TierManager::step() {
  const auto now = std::chrono::steady_clock::now();
  auto reading = source_->read();
  UniqueLock lock(mu_);
  ++stats_.readings;
  if (!reading.ok()) {
    if (stats_.read_errors++ == 0) {
      log().warn("tier: cannot read memory pressure, the budget holds at {} bytes: {}",
                 budget_.limit(), reading.status().to_string());
    }
    return;
  }
  const auto interval = last_ == std::chrono::steady_clock::time_point{}
                            ? std::chrono::microseconds(0)
                            : std::chrono::duration_cast<std::chrono::microseconds>(now - last_);
  last_ = now;
  const Step s = policy_.next(*reading, interval, budget_.limit());
  stats_.last_reading = *reading;
  stats_.last_stall_share = s.stall_share;
  stats_.last_reason = s.reason;
  if (s.decision == Decision::kHold) return;
  budget_.set_limit(s.budget);
  if (s.decision == Decision::kGrow) {
    ++stats_.grows;
    return;
  }
  ++stats_.shrinks;
  lock.unlock();
  // Outside mu_: evicting writes dirty pages back (network round trips).
  const std::uint64_t over = budget_.reclaim_over_limit();
  log().debug("tier: budget lowered to {} bytes ({}); {} bytes still above it", s.budget,
              s.reason, over);
  lock.lock();
  stats_.over_limit_bytes = over;
}

TierStats TierManager::stats() const {
  MutexLock lock(mu_);
  TierStats s = stats_;
  s.budget_bytes = budget_.limit();
  return s;
}

}  // namespace farmem::tier
