// FARMEM_DCHECK (runtime/common/dcheck.h): with checks on, a false one aborts naming its file,
// line, condition and message; with them off, the condition is not even evaluated. A build
// has one or the other (FARMEM_DCHECK_ON), so each case skips the half it cannot see.
#include "common/dcheck.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace farmem {
namespace {

constexpr const char* kOffBuild = "built without invariant checks (FARMEM_DCHECK_ON=0)";
constexpr const char* kOnBuild = "built with invariant checks (FARMEM_DCHECK_ON=1)";

enum class Phase : std::uint8_t { kIdle, kBusy };

class DcheckDeathTest : public testing::Test {
 protected:
  // The binary runs threads of other suites: re-execute rather than fork a threaded process.
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(DcheckDeathTest, FalseCheckAbortsWithFileLineConditionAndMessage) {
  if constexpr (!kDcheckOn) {
    GTEST_SKIP() << kOffBuild;
  } else {
    const int frame = 7;
    EXPECT_DEATH(FARMEM_DCHECK(frame == 8),
                 "dcheck failed at .*dcheck_test\\.cc:[0-9]+: frame == 8");
    EXPECT_DEATH(FARMEM_DCHECK_MSG(frame < 0, "frame {} is {}", frame, "free"),
                 "dcheck_test\\.cc:[0-9]+: frame < 0: frame 7 is free");
  }
}

TEST_F(DcheckDeathTest, ComparisonsPrintBothValues) {
  if constexpr (!kDcheckOn) {
    GTEST_SKIP() << kOffBuild;
  } else {
    const std::uint32_t in_use = 5;
    const std::size_t active = 4;
    EXPECT_DEATH(FARMEM_DCHECK_LE(in_use, active), "in_use <= active: 5 vs 4");
    const Phase p = Phase::kBusy;
    EXPECT_DEATH(FARMEM_DCHECK_EQ(p, Phase::kIdle), "p == Phase::kIdle: 1 vs 0");
    // Integers compare by value across signedness: -1 is less than any size_t.
    EXPECT_DEATH(FARMEM_DCHECK_GT(-1, std::size_t{0}), "-1 > std::size_t\\{0\\}: -1 vs 0");
  }
}

TEST(Dcheck, TrueCheckPassesAndEvaluatesItsConditionOnce) {
  if constexpr (!kDcheckOn) {
    GTEST_SKIP() << kOffBuild;
  } else {
    int evaluated = 0;
    FARMEM_DCHECK(++evaluated == 1);
    FARMEM_DCHECK_EQ(++evaluated, 2);
    FARMEM_DCHECK_LT(-1, std::size_t{0});
    EXPECT_EQ(evaluated, 2);
  }
}

TEST(Dcheck, OffChecksAreNotEvaluated) {
  if constexpr (kDcheckOn) {
    GTEST_SKIP() << kOnBuild;
  } else {
    int evaluated = 0;
    FARMEM_DCHECK(++evaluated < 0);  // false, and would abort if evaluated
    FARMEM_DCHECK_MSG(++evaluated < 0, "{}", ++evaluated);
    FARMEM_DCHECK_EQ(++evaluated, -1);
    EXPECT_EQ(evaluated, 0);
    std::atomic<std::uint64_t> calls{0};
    EXPECT_FALSE(dcheck_due(calls, 1));  // O(n) checks are off too
  }
}

TEST(Dcheck, FullChecksAreSampledByTheirSize) {
  if constexpr (!kDcheckOn) {
    GTEST_SKIP() << kOffBuild;
  } else {
    std::atomic<std::uint64_t> small{0}, large{0};
    int due_small = 0, due_large = 0;
    for (int i = 0; i < 12; ++i) {
      due_small += dcheck_due(small, kDcheckFullCheckItems) ? 1 : 0;
      due_large += dcheck_due(large, 3 * kDcheckFullCheckItems) ? 1 : 0;
    }
    EXPECT_EQ(due_small, 12);  // up to kDcheckFullCheckItems: every call
    EXPECT_EQ(due_large, 4);   // 3x as many items: one call in 3
  }
}

}  // namespace
}  // namespace farmem
