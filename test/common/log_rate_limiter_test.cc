// LogRateLimiter (runtime/common/log_rate_limiter.h): a budget of lines per one-second
// window, the dropped lines counted and reported once, by the next allowed line or by
// take_suppressed() after the window. Time is passed in, so nothing sleeps.
#include "common/log_rate_limiter.h"

#include <gtest/gtest.h>

namespace farmem {
namespace {

using namespace std::chrono_literals;
using Clock = LogRateLimiter::Clock;

TEST(LogRateLimiter, AllowsTheBudgetThenCountsTheRest) {
  LogRateLimiter limit(3);
  const auto t0 = Clock::now();
  for (int i = 0; i < 3; ++i) {
    const auto v = limit.admit(t0 + i * 1ms);
    EXPECT_TRUE(v.log) << i;
    EXPECT_EQ(v.suppressed, 0u) << i;
  }
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(limit.admit(t0 + 10ms).log) << i;
  // The next window's first line carries the count of what was dropped, once.
  const auto next = limit.admit(t0 + 1s + 10ms);
  EXPECT_TRUE(next.log);
  EXPECT_EQ(next.suppressed, 5u);
  EXPECT_EQ(limit.admit(t0 + 1s + 11ms).suppressed, 0u);
}

TEST(LogRateLimiter, TakeSuppressedReportsOnlyAfterTheWindowAndOnlyOnce) {
  LogRateLimiter limit(1);
  const auto t0 = Clock::now();
  EXPECT_TRUE(limit.admit(t0).log);
  EXPECT_FALSE(limit.admit(t0 + 1ms).log);
  EXPECT_FALSE(limit.admit(t0 + 2ms).log);
  EXPECT_EQ(limit.take_suppressed(t0 + 500ms), 0u);  // the window is still open
  EXPECT_EQ(limit.take_suppressed(t0 + 1s), 2u);
  EXPECT_EQ(limit.take_suppressed(t0 + 2s), 0u);
  const auto v = limit.admit(t0 + 2s);
  EXPECT_TRUE(v.log);
  EXPECT_EQ(v.suppressed, 0u);  // already reported by take_suppressed
}

TEST(LogRateLimiter, ZeroBudgetLogsNothingButCountsEverything) {
  LogRateLimiter limit(0);
  const auto t0 = Clock::now();
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(limit.admit(t0).log);
  EXPECT_EQ(limit.take_suppressed(t0 + 1s), 4u);
}

}  // namespace
}  // namespace farmem
