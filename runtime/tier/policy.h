// The tier's budget policy, in the spirit of Meta's TMO/Senpai but pointed the other way:
// Senpai squeezes a cgroup until it sees a little pressure; farmem's local budget gives memory
// back when the host (or the process's cgroup) is under pressure, and takes it back slowly
// when it is calm. Pure logic: readings in, a budget out (tested without a system).
//
//   stall share = growth of PSI "some" total / wall time between two readings
//
//   shrink  when the stall share > shrink_above, or the cgroup is within headroom of its
//           memory.high / memory.max, or MemAvailable < min_available:
//           budget -= shrink_step x budget                     (fast: pressure hurts now)
//           and, with the cgroup near its limit, at least memory.current - (1 - 2 x headroom)
//           x limit: the excess goes in one reading, before a growing neighbour hits max
//   grow    after calm_intervals readings in a row with stall share < calm_below and room
//           in the cgroup and the host:  budget += grow_step x ceiling    (slow: probing)
//   always  floor <= budget <= ceiling, a whole number of pages
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

#include "tier/pressure.h"

namespace farmem::tier {

struct TierPolicyOptions {
  std::uint64_t floor_bytes = 0;    ///< the budget never goes below this
  std::uint64_t ceiling_bytes = 0;  ///< nor above this
  std::uint64_t page_bytes = 4096;  ///< budgets are whole pages
  /// Stall share above which the budget shrinks: 1 % of wall time with some task stalled on
  /// memory is already felt by latency-sensitive services (TMO aims at ~0.1 %).
  double shrink_above = 0.01;
  /// Stall share below which an interval counts as calm.
  double calm_below = 0.001;
  double shrink_step = 0.10;  ///< fraction of the budget given back per shrinking reading
  double grow_step = 0.02;    ///< fraction of the ceiling taken back per growing reading
  std::uint32_t calm_intervals = 3;  ///< calm readings in a row before a growth step
  /// Shrink when the cgroup's memory.current is within this fraction of memory.high (or of
  /// memory.max when there is no high): the kernel throttles or OOM-kills past them.
  double cgroup_headroom = 0.05;
  /// Shrink when the host's MemAvailable falls below this.
  std::uint64_t min_available_bytes = 64ull << 20;
};

enum class Decision { kHold, kShrink, kGrow };

struct Step {
  Decision decision = Decision::kHold;
  std::uint64_t budget = 0;  ///< the budget to use from now on
  const char* reason = "";   ///< why (static text, for stats and logs)
  double stall_share = 0;    ///< of this interval
};

/// Validates options: floor <= ceiling, both at least one page, steps and thresholds sane.
Status check(const TierPolicyOptions& o);

class TierPolicy {
 public:
  explicit TierPolicy(TierPolicyOptions options) : o_(options) {}

  /// Feeds a reading taken `interval` after the previous one (the first reading only sets
  /// the baseline and holds) and returns what to do with `budget`.
  Step next(const PressureReading& reading, std::chrono::microseconds interval,
            std::uint64_t budget);

  const TierPolicyOptions& options() const { return o_; }

 private:
  std::uint64_t clamp(std::uint64_t bytes) const;

  TierPolicyOptions o_;
  std::optional<std::uint64_t> last_total_us_;
  std::uint32_t calm_ = 0;
};

}  // namespace farmem::tier
