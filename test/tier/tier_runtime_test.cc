// The swap-like tier inside a Runtime, driven by made-up pressure (RuntimeOptions::
// pressure_source): the budget shrinks to its floor and grows back to its ceiling while four
// threads keep a shadow-checked far_vector workload running, and the process's RSS follows.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "farmem/farmem.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t kMiB = 1u << 20;

std::uint64_t rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;  // kB
  }
  return 0;
}

template <typename Pred>
bool eventually(Pred&& pred, std::chrono::seconds limit = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

TEST(TierRuntime, RejectsHalfOrInconsistentBounds) {
  RuntimeOptions o;
  o.cache_budget_bytes = 16 * kMiB;
  o.budget_floor = 4 * kMiB;  // no ceiling
  EXPECT_EQ(Runtime::open(o).status().code(), StatusCode::kInvalidArgument);
  o.budget_ceiling = 2 * kMiB;  // below the floor
  EXPECT_EQ(Runtime::open(o).status().code(), StatusCode::kInvalidArgument);
  o.budget_ceiling = 8 * kMiB;  // the start (cache_budget_bytes) above the ceiling
  auto r = Runtime::open(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cache_budget_bytes"), std::string::npos);
  o.cache_budget_bytes = 8 * kMiB;
  auto ok = Runtime::open(o);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_TRUE((*ok)->tier_stats().enabled);
  RuntimeOptions fixed;
  auto f = Runtime::open(fixed);
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE((*f)->tier_stats().enabled);
}

TEST(TierRuntime, BudgetFollowsPressureWhileFourThreadsStayCorrectAndRssFollows) {
  constexpr std::uint64_t kFloor = 4 * kMiB, kCeiling = 32 * kMiB;
  std::atomic<bool> stalling{false};
  std::atomic<std::uint64_t> stall_total{0};
  RuntimeOptions o;
  o.cache_budget_bytes = kCeiling;
  o.budget_floor = kFloor;
  o.budget_ceiling = kCeiling;
  o.tier_interval = 10ms;
  o.local_server_capacity = 256 * kMiB;
  o.pressure_source = [&]() -> Result<MemoryPressure> {
    MemoryPressure p;
    if (stalling.load()) stall_total += 50'000;  // 50 ms stalled per reading: heavy pressure
    p.stall_total_us = stall_total.load();
    return p;
  };
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  Runtime& r = **rt;

  // 48 MiB of data, 1.5x the ceiling; far memory is filled first, so later RSS changes are
  // the cache's frames, not the in-process memserver's slabs.
  constexpr std::size_t kN = 6u << 20;
  far_vector<std::uint64_t> v(r);
  std::vector<std::uint64_t> shadow(kN);
  for (std::size_t i = 0; i < kN; ++i) {
    shadow[i] = i * 3 + 1;
    ASSERT_TRUE(v.push_back(shadow[i]).ok());
  }

  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::atomic<std::uint64_t> ops{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      // Bounded in count and time: the test stops it, or it ends by itself.
      for (int op = 0; op < 50'000'000 && !stop.load(std::memory_order_relaxed); ++op) {
        const std::size_t i = (rng() % (kN / 4)) * 4 + t;  // each thread its own elements
        DerefScope s(r);
        if (op % 4 == 0) {
          auto p = v.try_get_mut(i, s);
          if (!p.ok()) { ++bad; continue; }
          **p = shadow[i] = rng();
        } else {
          auto p = v.try_get(i, s);
          if (!p.ok() || **p != shadow[i]) ++bad;
        }
        ops.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  auto budget = [&] { return r.tier_stats().budget_bytes; };
  auto resident = [&] { return r.cache_stats().resident_bytes; };

  // Calm: the cache fills toward the ceiling.
  ASSERT_TRUE(eventually([&] { return resident() >= kCeiling / 2; })) << resident();
  const std::uint64_t rss_full = rss_bytes();

  // Pressure: down to the floor, and the memory really goes.
  stalling = true;
  ASSERT_TRUE(eventually([&] { return budget() == kFloor; })) << budget();
  ASSERT_TRUE(eventually([&] { return resident() <= kFloor; })) << resident();
  const std::uint64_t rss_low = rss_bytes();
  EXPECT_GE(rss_full, rss_low + (kCeiling - kFloor) / 2)
      << "RSS " << rss_full << " with a full cache, " << rss_low << " at the floor";
  const std::uint64_t ops_at_floor = ops.load();

  // Calm again: back up to the ceiling, slowly.
  stalling = false;
  ASSERT_TRUE(eventually([&] { return budget() == kCeiling; })) << budget();
  ASSERT_TRUE(eventually([&] { return ops.load() > ops_at_floor + 1000; }));
  stop = true;
  for (auto& th : threads) th.join();

  EXPECT_EQ(bad.load(), 0);
  const TierStats ts = r.tier_stats();
  EXPECT_GT(ts.shrinks, 0u);
  EXPECT_GT(ts.grows, 0u);
  EXPECT_EQ(ts.read_errors, 0u);
  EXPECT_GE(ts.budget_bytes, kFloor);
  EXPECT_LE(ts.budget_bytes, kCeiling);
  std::size_t mismatches = 0;
  ASSERT_TRUE(v.for_each([&](std::size_t i, const std::uint64_t& x) { mismatches += x != shadow[i]; }).ok());
  EXPECT_EQ(mismatches, 0u);
}

// Over verbs the cache's arena is registered whole, which pins its pages: a frame the tier
// madvised away would be refilled by the NIC in the old page while the CPU reads a new zero
// one. The budget shrinks here below the arena and every element, refetched, must be right.
TEST(TierVerbs, PagesRefetchedAfterAShrinkAreCorrect) {
  FARMEM_REQUIRE_RDMA_OR_SKIP();
  auto server = TestServer::start("verbs");
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  constexpr std::uint64_t kFloor = 1 * kMiB, kCeiling = 8 * kMiB;
  std::atomic<bool> stalling{false};
  std::atomic<std::uint64_t> stall_total{0};
  RuntimeOptions o;
  o.servers = {(*server)->url()};
  o.auth_token = kToken;
  o.slab_bytes = 4 * kMiB;
  o.local_buffer_bytes = 1 * kMiB;
  o.cache_budget_bytes = kCeiling;
  o.budget_floor = kFloor;
  o.budget_ceiling = kCeiling;
  o.tier_interval = 10ms;
  o.pressure_source = [&]() -> Result<MemoryPressure> {
    MemoryPressure p;
    if (stalling.load()) stall_total += 50'000;
    p.stall_total_us = stall_total.load();
    return p;
  };
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  Runtime& r = **rt;
  constexpr std::size_t kN = 4u << 20;  // 32 MiB: 4x the ceiling
  far_vector<std::uint64_t> v(r);
  for (std::size_t i = 0; i < kN; ++i) ASSERT_TRUE(v.push_back(i * 7 + 3).ok());
  stalling = true;
  ASSERT_TRUE(eventually([&] { return r.tier_stats().budget_bytes == kFloor; }));
  // Two full scans at the floor (the pressure stays): every page is dropped and fetched again.
  for (int round = 0; round < 2; ++round) {
    std::size_t wrong = 0;
    ASSERT_TRUE(v.for_each([&](std::size_t i, const std::uint64_t& x) { wrong += x != i * 7 + 3; }).ok());
    EXPECT_EQ(wrong, 0u) << "round " << round;
  }
}

}  // namespace
}  // namespace farmem::test
