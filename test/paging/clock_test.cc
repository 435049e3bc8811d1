// CLOCK eviction as pure logic: reference bits and the victim search, no frames behind them.
#include "paging/clock.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

namespace farmem::paging {
namespace {

const auto kAll = [](std::uint32_t) { return true; };

TEST(ReferenceBits, MarkTestAndClear) {
  ReferenceBits ref(4);
  EXPECT_EQ(ref.frames(), 4u);
  EXPECT_FALSE(ref.is_set(2));
  ref.mark(2);
  ref.mark(2);  // idempotent
  EXPECT_TRUE(ref.is_set(2));
  EXPECT_FALSE(ref.is_set(1));
  EXPECT_TRUE(ref.test_and_clear(2));
  EXPECT_FALSE(ref.is_set(2));
  EXPECT_FALSE(ref.test_and_clear(2));
  ref.mark(3);
  ref.clear(3);
  EXPECT_FALSE(ref.is_set(3));
}

TEST(Clock, UnreferencedFramesArePickedFirst) {
  ReferenceBits ref(6);
  Clock clock(6);
  for (std::uint32_t f : {0u, 2u, 3u, 5u}) ref.mark(f);
  std::vector<std::uint32_t> out;
  EXPECT_EQ(clock.pick(2, ref, kAll, out), 2u);
  EXPECT_EQ(out, (std::vector<std::uint32_t>{1, 4}));
  // The referenced frames the hand passed got their second chance: bits cleared.
  for (std::uint32_t f : {0u, 2u, 3u}) EXPECT_FALSE(ref.is_set(f)) << f;
  EXPECT_TRUE(ref.is_set(5));  // the hand stopped at 4 and never reached 5
}

TEST(Clock, ReferencedFramesSurviveOneSweep) {
  ReferenceBits ref(4);
  Clock clock(4);
  for (std::uint32_t f = 0; f < 4; ++f) ref.mark(f);
  std::vector<std::uint32_t> out;
  // Every frame referenced: the first sweep only clears, the second finds victims in order.
  EXPECT_EQ(clock.pick(1, ref, kAll, out), 1u);
  EXPECT_EQ(out, (std::vector<std::uint32_t>{0}));
  for (std::uint32_t f = 0; f < 4; ++f) EXPECT_FALSE(ref.is_set(f)) << f;
}

TEST(Clock, ReMarkedFrameGetsAnotherChance) {
  ReferenceBits ref(4);
  Clock clock(4);
  std::vector<std::uint32_t> out;
  ASSERT_EQ(clock.pick(1, ref, kAll, out), 1u);  // 0; hand now at 1
  ref.mark(1);                                   // touched again before the hand arrives
  out.clear();
  ASSERT_EQ(clock.pick(1, ref, kAll, out), 1u);
  EXPECT_EQ(out, (std::vector<std::uint32_t>{2}));
}

TEST(Clock, NeverReturnsAFrameTwiceInOneCall) {
  ReferenceBits ref(5);
  Clock clock(5);
  ref.mark(1);
  ref.mark(3);
  std::vector<std::uint32_t> out;
  // 0, 2, 4 in the first sweep; 1, 3 in the second; the second sweep must skip 0, 2, 4.
  EXPECT_EQ(clock.pick(10, ref, kAll, out), 5u);
  EXPECT_EQ(out, (std::vector<std::uint32_t>{0, 2, 4, 1, 3}));
}

TEST(Clock, PinnedFramesAreNeverPickedAndKeepTheirBits) {
  ReferenceBits ref(8);
  Clock clock(8);
  const std::set<std::uint32_t> pinned = {1, 2, 6};
  ref.mark(2);
  auto evictable = [&](std::uint32_t f) { return !pinned.contains(f); };
  std::vector<std::uint32_t> out;
  EXPECT_EQ(clock.pick(100, ref, evictable, out), 5u);
  for (std::uint32_t f : out) EXPECT_FALSE(pinned.contains(f)) << f;
  EXPECT_TRUE(ref.is_set(2));  // skipped, not given a second chance
}

TEST(Clock, TerminatesWhenEverythingIsPinned) {
  constexpr std::uint32_t kFrames = 1000;
  ReferenceBits ref(kFrames);
  Clock clock(kFrames);
  std::uint64_t looked_at = 0;
  auto none = [&](std::uint32_t) {
    ++looked_at;
    return false;
  };
  std::vector<std::uint32_t> out;
  EXPECT_EQ(clock.pick(10, ref, none, out), 0u);
  EXPECT_TRUE(out.empty());
  EXPECT_LE(looked_at, Clock::kMaxSweeps * kFrames);
  EXPECT_GE(looked_at, kFrames);  // it did look at every frame before giving up
}

TEST(Clock, EmptyClockAndZeroWant) {
  ReferenceBits ref(0);
  Clock empty(0);
  std::vector<std::uint32_t> out;
  EXPECT_EQ(empty.pick(3, ref, kAll, out), 0u);
  ReferenceBits ref4(4);
  Clock clock(4);
  EXPECT_EQ(clock.pick(0, ref4, kAll, out), 0u);
  EXPECT_EQ(clock.hand(), 0u);
  EXPECT_TRUE(out.empty());
}

TEST(Clock, HandPersistsAcrossCalls) {
  ReferenceBits ref(6);
  Clock clock(6);
  std::vector<std::uint32_t> out;
  ASSERT_EQ(clock.pick(2, ref, kAll, out), 2u);
  EXPECT_EQ(clock.hand(), 2u);
  ASSERT_EQ(clock.pick(3, ref, kAll, out), 3u);  // continues where it stopped, appends
  EXPECT_EQ(out, (std::vector<std::uint32_t>{0, 1, 2, 3, 4}));
  ASSERT_EQ(clock.pick(2, ref, kAll, out), 2u);  // wraps around
  EXPECT_EQ(out.back(), 0u);
  EXPECT_EQ(clock.hand(), 1u);
}

// Random reference bits and pins: victims are distinct, evictable, count
// min(want, evictable frames), and when enough frames were unreferenced at the start, only
// those are picked (the referenced ones keep their second chance).
TEST(Clock, RandomizedProperties) {
  std::mt19937 rng(12345);
  for (int round = 0; round < 500; ++round) {
    const std::uint32_t frames = 1 + rng() % 64;
    ReferenceBits ref(frames);
    Clock clock(frames);
    std::vector<bool> pinned(frames);
    std::vector<std::uint32_t> out;
    ASSERT_LE(clock.pick(rng() % frames, ref, kAll, out), frames);  // random hand start
    std::size_t evictable = 0, unreferenced = 0;
    std::vector<bool> referenced(frames);
    for (std::uint32_t f = 0; f < frames; ++f) {
      pinned[f] = rng() % 4 == 0;
      referenced[f] = rng() % 2 == 0;
      if (referenced[f]) {
        ref.mark(f);
      } else {
        ref.clear(f);
      }
      evictable += pinned[f] ? 0 : 1;
      unreferenced += (!pinned[f] && !referenced[f]) ? 1 : 0;
    }
    const std::size_t want = rng() % (frames + 2);
    out.clear();
    const std::size_t got = clock.pick(want, ref, [&](std::uint32_t f) { return !pinned[f]; }, out);
    ASSERT_EQ(got, out.size());
    EXPECT_EQ(got, std::min(want, evictable)) << "round " << round;
    std::set<std::uint32_t> seen;
    for (std::uint32_t f : out) {
      EXPECT_FALSE(pinned[f]) << "round " << round;
      EXPECT_TRUE(seen.insert(f).second) << "duplicate victim, round " << round;
      EXPECT_FALSE(ref.is_set(f));
      if (want <= unreferenced) {
        EXPECT_FALSE(referenced[f]) << "round " << round;
      }
    }
    for (std::uint32_t f = 0; f < frames; ++f) {
      if (pinned[f]) {
        EXPECT_EQ(ref.is_set(f), referenced[f]) << "pinned bit touched";
      }
    }
  }
}

}  // namespace
}  // namespace farmem::paging
