// RebuildPacer (pool/rebuild_pacer.h): modes, duty and cap on a made-up clock, no pool.
#include "pool/rebuild_pacer.h"

#include <gtest/gtest.h>

#include <chrono>

namespace farmem::test {
namespace {

using pool::RebuildPacer;
using std::chrono::microseconds;
using std::chrono::milliseconds;
using Clock = RebuildPacer::Clock;

constexpr std::uint64_t kFastCap = 1ull << 40;  // a cap that never binds in these cases

TEST(RebuildPacer, YieldsWhileForegroundOpsStartAndGoesIdleAfterTheQuietTime) {
  RebuildPacer p(kFastCap);
  Clock::time_point t{};
  std::uint64_t ops = 100;
  // The first look cannot tell how old the count is: it yields.
  auto first = p.plan(t, ops);
  EXPECT_EQ(first.mode, RebuildPacer::Mode::kYielding);
  EXPECT_EQ(first.op_bytes, RebuildPacer::kYieldOpBytes);
  EXPECT_EQ(first.window_ops, 1u);
  // The count keeps moving: still yielding, however long it runs.
  for (int i = 0; i < 50; ++i) {
    t += milliseconds(30);
    ops += 7;
    EXPECT_EQ(p.plan(t, ops).mode, RebuildPacer::Mode::kYielding) << i;
  }
  // Quiet, but not for long enough yet.
  EXPECT_EQ(p.plan(t + RebuildPacer::kQuietFor - microseconds(1), ops).mode,
            RebuildPacer::Mode::kYielding);
  const auto idle = p.plan(t + RebuildPacer::kQuietFor, ops);
  EXPECT_EQ(idle.mode, RebuildPacer::Mode::kIdle);
  EXPECT_EQ(idle.op_bytes, RebuildPacer::kIdleOpBytes);
  EXPECT_EQ(idle.window_ops, RebuildPacer::kIdleWindowOps);
  EXPECT_GT(idle.op_bytes, first.op_bytes);
  // One more op: yielding again at once.
  EXPECT_EQ(p.plan(t + RebuildPacer::kQuietFor + microseconds(1), ops + 1).mode,
            RebuildPacer::Mode::kYielding);
}

// A yielding copy that took `took` at duty d may start the next one (1 - d) / d of that later;
// steady copies raise d to kMaxDuty, one much slower copy halves it.
TEST(RebuildPacer, TheDutyGrowsOnSteadyCopiesAndHalvesOnASlowOne) {
  RebuildPacer p(kFastCap);
  Clock::time_point t{};
  std::uint64_t ops = 1;
  const auto took = microseconds(500);
  double last_duty = 0;
  for (int i = 0; i < 100; ++i) {  // more than enough steps to reach kMaxDuty
    const auto plan = p.plan(t, ++ops);
    ASSERT_EQ(plan.mode, RebuildPacer::Mode::kYielding);
    t = std::max(t, plan.not_before);
    const double d = p.duty();
    p.copied(plan, t, t + took, plan.op_bytes);
    EXPECT_GE(p.duty(), d);
    last_duty = p.duty();
    t += took;
    // The next copy waits for the duty cycle: took * (1 - d) / d after this one ended.
    const auto next = p.plan(t, ++ops);
    const double gap_us = std::chrono::duration<double, std::micro>(next.not_before - t).count();
    EXPECT_NEAR(gap_us, 500.0 * (1 - last_duty) / last_duty, 1.0) << i;
    t = next.not_before;
  }
  EXPECT_DOUBLE_EQ(last_duty, RebuildPacer::kMaxDuty);
  EXPECT_EQ(p.counters().backoffs, 0u);
  EXPECT_EQ(p.counters().yielding_copies, 100u);
  EXPECT_EQ(p.counters().idle_copies, 0u);
  // A copy three times slower than the steady ones: the link is busy, back off.
  const auto plan = p.plan(t, ++ops);
  p.copied(plan, t, t + 3 * took, plan.op_bytes);
  EXPECT_DOUBLE_EQ(p.duty(), RebuildPacer::kMaxDuty / 2);
  EXPECT_EQ(p.counters().backoffs, 1u);
  // Halving stops at kMinDuty (0.125 -> 0.0625 -> 1/32, then no lower).
  for (int i = 0; i < 4; ++i) {
    t += milliseconds(100);
    const auto slow = p.plan(t, ++ops);
    p.copied(slow, t, t + 50 * took, slow.op_bytes);
  }
  EXPECT_DOUBLE_EQ(p.duty(), RebuildPacer::kMinDuty);
  EXPECT_EQ(p.counters().backoffs, 5u);
}

TEST(RebuildPacer, AnApplicationThatWakesUpGetsTheGentlestDutyAgain) {
  RebuildPacer p(kFastCap);
  Clock::time_point t{};
  for (int i = 0; i < 30; ++i) {
    const auto plan = p.plan(t, std::uint64_t(i));
    t = std::max(t, plan.not_before);
    p.copied(plan, t, t + microseconds(100), plan.op_bytes);
    t += microseconds(100);
  }
  EXPECT_GT(p.duty(), RebuildPacer::kMinDuty);
  t += RebuildPacer::kQuietFor;
  const auto idle = p.plan(t, 29);
  ASSERT_EQ(idle.mode, RebuildPacer::Mode::kIdle);
  p.copied(idle, t, t + milliseconds(1), idle.op_bytes * idle.window_ops);
  EXPECT_EQ(p.counters().idle_copies, 1u);
  t += milliseconds(1);
  const auto woke = p.plan(t, 30);
  EXPECT_EQ(woke.mode, RebuildPacer::Mode::kYielding);
  EXPECT_DOUBLE_EQ(p.duty(), RebuildPacer::kMinDuty);
  EXPECT_LE(woke.not_before, t);  // no pause owed from before the idle time
}

// The cap bounds both modes: bytes copied at the cap's rate, with at most kMaxBurst of
// credit saved up from an idle spell.
TEST(RebuildPacer, NeverCopiesFasterThanTheCap) {
  constexpr std::uint64_t kCap = 4u << 20;  // 4 MiB/s: 1 MiB is due every 250 ms
  RebuildPacer p(kCap);
  Clock::time_point t{};
  auto plan = p.plan(t, 0);
  t += RebuildPacer::kQuietFor;
  std::uint64_t copied = 0, window = 0;
  const Clock::time_point start = t;
  for (int i = 0; i < 20; ++i) {
    plan = p.plan(t, 0);
    ASSERT_EQ(plan.mode, RebuildPacer::Mode::kIdle);
    t = std::max(t, plan.not_before);
    window = plan.op_bytes * plan.window_ops;
    p.copied(plan, t, t + milliseconds(1), window);  // a link far faster than the cap
    copied += window;
    t += milliseconds(1);
  }
  // 20 windows at 4 MiB/s: the last may start no earlier than 19 windows' worth after the
  // first, less the saved-up burst.
  const double took_s = std::chrono::duration<double>(t - start).count();
  EXPECT_GE(took_s, double(copied - window) / kCap - 0.001 -
                        std::chrono::duration<double>(RebuildPacer::kMaxBurst).count());
  // After a long idle spell the credit is capped: the next window waits again soon.
  t += std::chrono::seconds(10);
  plan = p.plan(t, 0);
  EXPECT_LE(plan.not_before, t);
  p.copied(plan, t, t, 1u << 20);
  plan = p.plan(t, 0);
  EXPECT_GE(plan.not_before,
            t + std::chrono::milliseconds(250) - RebuildPacer::kMaxBurst - microseconds(1));
}

}  // namespace
}  // namespace farmem::test
