// Bounds how many lines a noisy event logs (rejected connections in a flood): at most
// `per_second` lines in each one-second window. Lines beyond that are only counted; the next
// allowed line, or a periodic take_suppressed() when no line comes, reports how many were
// dropped as one "N more suppressed" line. Thread-safe; the caller passes the time, so tests
// drive it without sleeping.
#pragma once

#include <chrono>
#include <cstdint>

#include "common/mutex.h"
#include "common/thread_annotations.h"

namespace farmem {

class LogRateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  /// The window the budget refills in.
  static constexpr Clock::duration kWindow = std::chrono::seconds(1);

  explicit LogRateLimiter(std::uint32_t per_second) : per_second_(per_second) {}

  struct Verdict {
    bool log = false;             ///< log this line
    std::uint64_t suppressed = 0;  ///< lines dropped before it: report them first (when log)
  };

  /// Asks to log one line now.
  Verdict admit(Clock::time_point now) FARMEM_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    roll_locked(now);
    if (in_window_ >= per_second_) {
      ++suppressed_;
      return {};
    }
    ++in_window_;
    const Verdict v{true, suppressed_};
    suppressed_ = 0;
    return v;
  }

  /// Lines dropped in a window that has ended and not reported yet (then reset to 0): for a
  /// periodic caller, so that the count of a burst's tail appears without a later line.
  std::uint64_t take_suppressed(Clock::time_point now) FARMEM_EXCLUDES(mu_) {
    MutexLock lock(mu_);
    if (now - window_start_ < kWindow) return 0;
    const std::uint64_t n = suppressed_;
    suppressed_ = 0;
    return n;
  }

 private:
  void roll_locked(Clock::time_point now) FARMEM_REQUIRES(mu_) {
    if (now - window_start_ >= kWindow) {
      window_start_ = now;
      in_window_ = 0;
    }
  }

  const std::uint32_t per_second_;
  /// Guards the window and the counts.
  Mutex mu_;
  Clock::time_point window_start_ FARMEM_GUARDED_BY(mu_){};
  std::uint32_t in_window_ FARMEM_GUARDED_BY(mu_) = 0;
  std::uint64_t suppressed_ FARMEM_GUARDED_BY(mu_) = 0;
};

}  // namespace farmem
