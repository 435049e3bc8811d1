// The tier manager: every interval it takes a pressure reading, asks the policy
// (tier/policy.h) for a budget, moves the shared Budget's limit, and after a shrink has the
// budget's consumers (the paging core of the cache and of each region) evict down to it,
// writing dirty pages back first. Their dropped frames go back to the OS, so the process's
// RSS follows the budget.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <thread>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/stats.h"
#include "paging/budget.h"
#include "tier/policy.h"
#include "tier/pressure.h"

namespace farmem::tier {

class TierManager {
 public:
  /// `budget` must outlive the manager. Starts the polling thread when `interval` > 0 (tests
  /// may pass 0 and call step() themselves).
  TierManager(paging::Budget& budget, std::unique_ptr<PressureSource> source,
              TierPolicyOptions policy, std::chrono::milliseconds interval);
  ~TierManager();
  TierManager(const TierManager&) = delete;
  TierManager& operator=(const TierManager&) = delete;

  /// One reading and decision now (the polling thread calls it every interval).
  void step();
  TierStats stats() const;

 private:
  void run();

  paging::Budget& budget_;
  std::unique_ptr<PressureSource> source_;
  /// Guards stats_, stopping_ and the policy's state (policy_, last_: step() is serialised).
  mutable Mutex mu_;
  TierPolicy policy_ FARMEM_GUARDED_BY(mu_);
  const std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point last_ FARMEM_GUARDED_BY(mu_){};

  TierStats stats_ FARMEM_GUARDED_BY(mu_);
  std::condition_variable cv_;  ///< the polling thread's sleep (stop ends it)
  bool stopping_ FARMEM_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace farmem::tier
