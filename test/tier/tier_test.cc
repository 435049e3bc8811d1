// The tier's pressure parsers, system source (on a made-up /proc and cgroup tree) and budget
// policy: pure logic, no system pressure needed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "common/meminfo.h"
#include "tier/policy.h"
#include "tier/pressure.h"

namespace farmem::tier {
namespace {

using std::chrono::microseconds;
constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kMiB = 1u << 20;

TEST(TierPressure, ParsesPsiCgroupValuesMeminfoAndTheCgroupPath) {
  auto psi = parse_psi("some avg10=1.50 avg60=0.20 avg300=0.05 total=123456\n"
                       "full avg10=0.00 avg60=0.00 avg300=0.00 total=42\n");
  ASSERT_TRUE(psi.ok()) << psi.status().to_string();
  EXPECT_EQ(psi->stall_total_us, 123456u);
  EXPECT_DOUBLE_EQ(psi->stall_avg10, 1.5);
  EXPECT_EQ(parse_psi("full avg10=0 total=1\n").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(parse_psi("some avg10=0.00 total=x\n").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(parse_psi("some avg10=0.00\n").status().code(), StatusCode::kInvalidArgument);

  EXPECT_EQ(*parse_cgroup_value("max\n"), std::nullopt);
  EXPECT_EQ(*parse_cgroup_value("1048576\n"), std::optional<std::uint64_t>(kMiB));
  EXPECT_EQ(parse_cgroup_value("lots").status().code(), StatusCode::kInvalidArgument);

  auto avail = parse_mem_available("MemTotal: 100 kB\nMemFree: 5 kB\nMemAvailable:   2048 kB\n");
  ASSERT_TRUE(avail.ok());
  EXPECT_EQ(*avail, 2048u * 1024);
  EXPECT_FALSE(parse_mem_available("MemTotal: 100 kB\n").ok());

  EXPECT_EQ(parse_cgroup_v2_path("12:pids:/x\n0::/user.slice/app.scope\n"),
            std::optional<std::string>("/user.slice/app.scope"));
  EXPECT_EQ(parse_cgroup_v2_path("4:memory:/x\n"), std::nullopt);
}

class FakeTree : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() /
            ("farmem-tier-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(root_);
    std::filesystem::create_directories(root_ / "proc/self");
    std::filesystem::create_directories(root_ / "proc/pressure");
    std::filesystem::create_directories(root_ / "cg/app");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  void put(const std::string& rel, const std::string& text) {
    std::ofstream(root_ / rel) << text;
  }
  SystemPaths paths() const { return {(root_ / "proc").string(), (root_ / "cg").string()}; }
  std::filesystem::path root_;
};

TEST_F(FakeTree, SystemSourceReadsTheProcessCgroup) {
  put("proc/self/cgroup", "0::/app\n");
  put("proc/meminfo", "MemAvailable: 4096 kB\n");
  put("proc/pressure/memory", "some avg10=9.00 avg60=0 avg300=0 total=999\n");
  put("cg/app/memory.pressure", "some avg10=0.25 avg60=0 avg300=0 total=77\n");
  put("cg/app/memory.current", "1000\n");
  put("cg/app/memory.high", "max\n");
  put("cg/app/memory.max", "2000\n");
  SystemPressureSource src(paths());
  EXPECT_EQ(src.cgroup_dir(), (root_ / "cg/app").string());
  auto r = src.read();
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->stall_total_us, 77u);  // the cgroup's PSI, not the host's
  EXPECT_EQ(r->cgroup_current, std::optional<std::uint64_t>(1000));
  EXPECT_EQ(r->cgroup_high, std::nullopt);
  EXPECT_EQ(r->cgroup_max, std::optional<std::uint64_t>(2000));
  EXPECT_EQ(r->mem_available, std::optional<std::uint64_t>(4096u * 1024));
}

TEST_F(FakeTree, SystemSourceFallsBackToHostPressureAndFailsClearlyWithoutPsi) {
  put("proc/self/cgroup", "0::/app\n");  // a cgroup without memory.pressure
  put("proc/pressure/memory", "some avg10=0.00 avg60=0 avg300=0 total=5\n");
  SystemPressureSource src(paths());
  auto r = src.read();
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->stall_total_us, 5u);
  EXPECT_EQ(r->mem_available, std::nullopt);
  std::filesystem::remove(root_ / "proc/pressure/memory");
  auto none = src.read();
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(none.status().message().find("pressure"), std::string::npos);
}

TierPolicyOptions bounds(std::uint64_t floor, std::uint64_t ceiling) {
  TierPolicyOptions o;
  o.floor_bytes = floor;
  o.ceiling_bytes = ceiling;
  o.page_bytes = kPage;
  return o;
}

PressureReading stalls(std::uint64_t total_us) {
  PressureReading r;
  r.stall_total_us = total_us;
  return r;
}

TEST(TierPolicy, ChecksItsOptions) {
  EXPECT_TRUE(check(bounds(kMiB, 8 * kMiB)).ok());
  EXPECT_EQ(check(bounds(8 * kMiB, kMiB)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(check(bounds(0, kMiB)).code(), StatusCode::kInvalidArgument);
  auto o = bounds(kMiB, 8 * kMiB);
  o.shrink_step = 1.5;
  EXPECT_EQ(check(o).code(), StatusCode::kInvalidArgument);
}

TEST(TierPolicy, ShrinksUnderStallsDownToTheFloorAndNoFurther) {
  TierPolicy p(bounds(16 * kMiB, 64 * kMiB));
  std::uint64_t budget = 64 * kMiB;
  std::uint64_t total = 1000;
  EXPECT_EQ(p.next(stalls(total), microseconds(100'000), budget).decision, Decision::kHold);
  std::uint64_t last = budget;
  for (int i = 0; i < 40; ++i) {
    total += 5'000;  // 5 ms stalled per 100 ms: 5 %
    const Step s = p.next(stalls(total), microseconds(100'000), budget);
    EXPECT_NEAR(s.stall_share, 0.05, 1e-9);
    EXPECT_LE(s.budget, last);
    EXPECT_GE(s.budget, 16 * kMiB);
    EXPECT_EQ(s.budget % kPage, 0u);
    budget = last = s.budget;
  }
  EXPECT_EQ(budget, 16 * kMiB);  // reached the floor and stayed
  EXPECT_EQ(p.next(stalls(total + 5'000), microseconds(100'000), budget).decision, Decision::kHold);
}

TEST(TierPolicy, GrowsSlowlyWhenCalmUpToTheCeiling) {
  TierPolicy p(bounds(16 * kMiB, 64 * kMiB));
  std::uint64_t budget = 16 * kMiB;
  (void)p.next(stalls(0), microseconds(100'000), budget);
  int grows = 0, holds = 0;
  for (int i = 0; i < 400; ++i) {
    const Step s = p.next(stalls(0), microseconds(100'000), budget);
    if (s.decision == Decision::kGrow) {
      ++grows;
      EXPECT_GT(s.budget, budget);
      EXPECT_LE(s.budget - budget, 64 * kMiB / 50 + kPage);  // one grow_step of the ceiling
    } else {
      ++holds;
    }
    budget = s.budget;
  }
  EXPECT_EQ(budget, 64 * kMiB);
  EXPECT_GT(holds, 2 * grows);  // calm_intervals readings per growth step, then held
}

TEST(TierPolicy, ACgroupNearItsLimitOrALowHostShrinksWithoutStalls) {
  TierPolicy p(bounds(kMiB, 64 * kMiB));
  (void)p.next(stalls(0), microseconds(100'000), 64 * kMiB);
  PressureReading r = stalls(0);
  r.cgroup_current = 960 * kMiB;  // 60 MiB over the roomy line: the budget goes to 4 MiB
  r.cgroup_max = 1000 * kMiB;
  Step s = p.next(r, microseconds(100'000), 64 * kMiB);
  EXPECT_EQ(s.decision, Decision::kShrink);
  EXPECT_STREQ(s.reason, "cgroup near its memory limit");
  r.cgroup_current = 100 * kMiB;  // room again
  r.mem_available = 10 * kMiB;    // but the host is short
  s = p.next(r, microseconds(100'000), s.budget);
  EXPECT_EQ(s.decision, Decision::kShrink);
  EXPECT_STREQ(s.reason, "host MemAvailable low");
  // memory.high counts before memory.max.
  r.mem_available.reset();
  r.cgroup_high = 101 * kMiB;
  EXPECT_EQ(p.next(r, microseconds(100'000), s.budget).decision, Decision::kShrink);
}

TEST(TierPolicy, ACgroupOverItsLimitGivesBackTheExcessInOneReading) {
  TierPolicy p(bounds(4 * kMiB, 40 * kMiB));
  (void)p.next(stalls(0), microseconds(100'000), 40 * kMiB);
  PressureReading r = stalls(0);
  r.cgroup_max = 64 * kMiB;
  r.cgroup_high = 56 * kMiB;
  r.cgroup_current = 60 * kMiB;  // 4 MiB above memory.high: a neighbour joined
  Step s = p.next(r, microseconds(100'000), 40 * kMiB);
  EXPECT_EQ(s.decision, Decision::kShrink);
  // The roomy line is 90 % of memory.high (50.4 MiB): 9.6 MiB go, more than a tenth (4 MiB).
  const double roomy = 56.0 * kMiB * 0.9;
  EXPECT_LE(static_cast<double>(s.budget), 40.0 * kMiB - (60.0 * kMiB - roomy));
  EXPECT_GT(static_cast<double>(s.budget), 40.0 * kMiB - (60.0 * kMiB - roomy) - kPage);
  // A small excess still gives back a tenth; a huge one stops at the floor.
  r.cgroup_current = 54 * kMiB;
  EXPECT_EQ(p.next(r, microseconds(100'000), 40 * kMiB).budget, 36 * kMiB);
  r.cgroup_current = 200 * kMiB;
  EXPECT_EQ(p.next(r, microseconds(100'000), 40 * kMiB).budget, 4 * kMiB);
}

TEST(TierPolicy, ACounterResetIsABaselineNotAStall) {
  TierPolicy p(bounds(kMiB, 64 * kMiB));
  (void)p.next(stalls(1'000'000), microseconds(100'000), 64 * kMiB);
  const Step s = p.next(stalls(10), microseconds(100'000), 64 * kMiB);  // total went back
  EXPECT_EQ(s.decision, Decision::kHold);
  EXPECT_STREQ(s.reason, "baseline");
}

}  // namespace
}  // namespace farmem::tier
