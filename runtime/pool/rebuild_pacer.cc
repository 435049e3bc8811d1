#include "pool/rebuild_pacer.h"

#include <algorithm>

#include "common/dcheck.h"

namespace farmem::pool {

RebuildPacer::RebuildPacer(std::uint64_t max_bytes_per_sec)
    : max_bytes_per_sec_(max_bytes_per_sec) {
  FARMEM_DCHECK_GT(max_bytes_per_sec, 0u);
}

std::chrono::nanoseconds RebuildPacer::at_cap(std::uint64_t bytes) const {
  return std::chrono::nanoseconds(
      static_cast<std::int64_t>(double(bytes) * 1e9 / double(max_bytes_per_sec_)));
}

RebuildPacer::Plan RebuildPacer::plan(Clock::time_point now, std::uint64_t foreground_ops) {
  // The first look cannot tell how old the count is: it counts as activity, so a rebuild
  // that starts under a running application starts gently.
  if (!seen_any_ || foreground_ops != seen_ops_) {
    seen_any_ = true;
    seen_ops_ = foreground_ops;
    last_foreground_ = now;
  }
  const bool active = now - last_foreground_ < kQuietFor;
  if (active && !active_) {
    duty_ = kMinDuty;  // the application woke up: start gentle (see the top)
    duty_due_ = now;
  }
  active_ = active;
  Plan p;
  if (active) {
    p.mode = Mode::kYielding;
    p.op_bytes = kYieldOpBytes;
    p.window_ops = 1;
    p.not_before = std::max(cap_due_, duty_due_);
  } else {
    p.mode = Mode::kIdle;
    p.op_bytes = kIdleOpBytes;
    p.window_ops = kIdleWindowOps;
    p.not_before = cap_due_;
  }
  return p;
}

void RebuildPacer::copied(const Plan& p, Clock::time_point start, Clock::time_point end,
                          std::uint64_t bytes) {
  cap_due_ = std::max(cap_due_, start - kMaxBurst) + at_cap(bytes);
  if (p.mode == Mode::kIdle) {
    ++counters_.idle_copies;
    return;
  }
  ++counters_.yielding_copies;
  const auto took = std::max(end - start, Clock::duration(1));
  if (bytes == p.op_bytes * p.window_ops) {
    const double per_byte = double(std::chrono::nanoseconds(took).count()) / double(bytes);
    const bool slow = best_ns_per_byte_ > 0 && per_byte > kSlowFactor * best_ns_per_byte_;
    if (best_ns_per_byte_ == 0 || per_byte < best_ns_per_byte_) {
      best_ns_per_byte_ = per_byte;
    } else {
      best_ns_per_byte_ += (per_byte - best_ns_per_byte_) / 64;  // forgets a faster past slowly
    }
    if (slow) {
      duty_ = std::max(kMinDuty, duty_ / 2);
      ++counters_.backoffs;
    } else {
      duty_ = std::min(kMaxDuty, duty_ + kDutyStep);
    }
  }
  // Idle (1 - d) / d of the copy's time: the copy keeps the link a share d of the time.
  duty_due_ = end + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double, std::nano>(
                            double(std::chrono::nanoseconds(took).count()) * (1 - duty_) / duty_));
}

}  // namespace farmem::pool
