// The tier's budget policy (see policy.h).
#include "tier/policy.h"

#include <algorithm>
#include <cmath>

namespace farmem::tier {

Status check(const TierPolicyOptions& o) {
  if (o.page_bytes == 0) return InvalidArgument("tier: page_bytes must be > 0");
  if (o.floor_bytes < o.page_bytes) {
    return InvalidArgument("tier: budget_floor must be at least one page (" +
                           std::to_string(o.page_bytes) + " bytes)");
  }
  if (o.ceiling_bytes < o.floor_bytes) {
    return InvalidArgument("tier: budget_ceiling (" + std::to_string(o.ceiling_bytes) +
                           ") is below budget_floor (" + std::to_string(o.floor_bytes) + ")");
  }
  if (!(o.shrink_step > 0 && o.shrink_step < 1) || !(o.grow_step > 0 && o.grow_step <= 1)) {
    return InvalidArgument("tier: shrink_step must be in (0, 1) and grow_step in (0, 1]");
  }
  if (!(o.calm_below >= 0 && o.calm_below <= o.shrink_above)) {
    return InvalidArgument("tier: calm_below must be in [0, shrink_above]");
  }
  if (!(o.cgroup_headroom >= 0 && o.cgroup_headroom < 1)) {
    return InvalidArgument("tier: cgroup_headroom must be in [0, 1)");
  }
  return Status::Ok();
}

std::uint64_t TierPolicy::clamp(std::uint64_t bytes) const {
  bytes = std::clamp(bytes, o_.floor_bytes, o_.ceiling_bytes);
  const std::uint64_t paged = bytes / o_.page_bytes * o_.page_bytes;
  return std::max(paged, (o_.floor_bytes + o_.page_bytes - 1) / o_.page_bytes * o_.page_bytes);
}

Step TierPolicy::next(const PressureReading& r, std::chrono::microseconds interval,
                      std::uint64_t budget) {
  Step s;
  s.budget = clamp(budget);
  if (!last_total_us_ || r.stall_total_us < *last_total_us_ || interval.count() <= 0) {
    last_total_us_ = r.stall_total_us;  // first reading (or a counter reset): baseline only
    s.reason = "baseline";
    return s;
  }
  s.stall_share = static_cast<double>(r.stall_total_us - *last_total_us_) /
                  static_cast<double>(interval.count());
  last_total_us_ = r.stall_total_us;

  // The cgroup's nearest limit: memory.high throttles, memory.max kills.
  std::optional<std::uint64_t> limit = r.cgroup_high ? r.cgroup_high : r.cgroup_max;
  if (r.cgroup_high && r.cgroup_max) limit = std::min(*r.cgroup_high, *r.cgroup_max);
  const bool cgroup_tight =
      limit && r.cgroup_current &&
      static_cast<double>(*r.cgroup_current) >
          static_cast<double>(*limit) * (1.0 - o_.cgroup_headroom);
  const bool cgroup_roomy =
      !limit || !r.cgroup_current ||
      static_cast<double>(*r.cgroup_current) <
          static_cast<double>(*limit) * (1.0 - 2 * o_.cgroup_headroom);
  const bool host_tight = r.mem_available && *r.mem_available < o_.min_available_bytes;
  const bool host_roomy = !r.mem_available || *r.mem_available >= 2 * o_.min_available_bytes;

  const char* why = s.stall_share > o_.shrink_above ? "memory stalls above threshold"
                    : cgroup_tight                   ? "cgroup near its memory limit"
                    : host_tight                     ? "host MemAvailable low"
                                                     : nullptr;
  if (why != nullptr) {
    calm_ = 0;
    auto cut = static_cast<std::uint64_t>(std::ceil(static_cast<double>(s.budget) * o_.shrink_step));
    if (cgroup_tight) {
      // A tenth a reading is too slow against a cgroup limit: a hog filling the cgroup at tens
      // of MB/s passes memory.max within an interval or two and the kernel OOM-kills. Give back
      // at least what the cgroup holds above its roomy line (limit less twice the headroom),
      // so one reading brings it back under.
      const double roomy_line = static_cast<double>(*limit) * (1.0 - 2 * o_.cgroup_headroom);
      cut = std::max(cut, static_cast<std::uint64_t>(
                              std::ceil(static_cast<double>(*r.cgroup_current) - roomy_line)));
    }
    const std::uint64_t target = clamp(s.budget > cut ? s.budget - cut : 0);
    s.reason = why;
    if (target < s.budget) {
      s.decision = Decision::kShrink;
      s.budget = target;
    }
    return s;
  }
  if (s.stall_share < o_.calm_below && cgroup_roomy && host_roomy) {
    if (++calm_ >= o_.calm_intervals) {
      calm_ = 0;
      const auto add = static_cast<std::uint64_t>(static_cast<double>(o_.ceiling_bytes) * o_.grow_step);
      const std::uint64_t target = clamp(s.budget + std::max<std::uint64_t>(add, o_.page_bytes));
      s.reason = "calm";
      if (target > s.budget) {
        s.decision = Decision::kGrow;
        s.budget = target;
      }
      return s;
    }
    s.reason = "calm, waiting";
    return s;
  }
  calm_ = 0;
  s.reason = "between thresholds";
  return s;
}

}  // namespace farmem::tier
