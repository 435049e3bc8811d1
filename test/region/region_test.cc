// Mapped regions: plain loads and stores against a shadow copy under tight budgets, from many
// threads; durability (flush, reopen, far memory read directly); dirty-only write-back;
// memserver failure; hints, pull order, prefetch; the page table's victim choice.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <random>
#include <thread>

#include "paging/budget.h"
#include "farmem/farmem.h"
#include "farmem/region.h"
#include "region/region_constants.h"
#include "region/page_table.h"
#include "region/region.h"
#include "test/region/region_support.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using paging::Budget;
using region::kPageSize;
using region::RegionOptions;

RuntimeOptions runtime_options(std::string server = "local") {
  RuntimeOptions o;
  o.servers = {std::move(server)};
  o.auth_token = kToken;
  o.local_buffer_bytes = 1u << 20;
  o.slab_bytes = 64u << 20;
  o.local_server_capacity = 256u << 20;
  return o;
}

std::unique_ptr<Runtime> open_runtime(RuntimeOptions o = runtime_options()) {
  auto rt = Runtime::open(std::move(o));
  EXPECT_TRUE(rt.ok()) << rt.status().to_string();
  return rt.ok() ? std::move(rt).value() : nullptr;
}

std::unique_ptr<Region> map(Runtime& rt, Budget& budget, FarRange far, RegionOptions o = {}) {
  auto r = region::make_region(detail::io_service(rt), budget, far, o);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

/// Internal region options with the given fault mode.
RegionOptions in_mode(FaultMode mode) {
  RegionOptions o;
  o.fault_mode = mode;
  return o;
}

const char* mode_name(FaultMode m) {
  return m == FaultMode::kHandlerThread ? "HandlerThread" : "FaultingThread";
}

/// Pages of the region the kernel has mapped right now (mincore(2)): the OS's view.
std::size_t os_resident_pages(const Region& r) {
  const std::size_t pages = (r.size() + kPageSize - 1) / kPageSize;
  std::vector<unsigned char> vec(pages);
  EXPECT_EQ(::mincore(r.data(), pages * kPageSize, vec.data()), 0);
  std::size_t n = 0;
  for (unsigned char v : vec) n += v & 1u;
  return n;
}

bool os_resident(const Region& r, std::size_t page) {
  unsigned char v = 0;
  EXPECT_EQ(::mincore(r.data() + page * kPageSize, kPageSize, &v), 0);
  return (v & 1u) != 0;
}

/// Reads the far range directly (no region involved) and compares it with `expected`.
void expect_far_equals(Runtime& rt, FarRange far, const std::vector<std::byte>& expected) {
  auto buf = rt.local_buffer();
  for (std::size_t off = 0; off < far.bytes; off += buf.size()) {
    const std::size_t n = std::min(buf.size(), far.bytes - off);
    ASSERT_TRUE(rt.read(far.addr + off, buf.first(n)).ok());
    ASSERT_EQ(std::memcmp(buf.data(), expected.data() + off, n), 0) << "far bytes at " << off;
  }
}

/// Random reads (checked) and writes (mirrored) of 1 byte to 3 pages, within [lo, hi).
void random_ops(std::byte* mem, std::vector<std::byte>& shadow, std::size_t lo, std::size_t hi,
                int ops, std::uint32_t seed, const std::function<void(int)>& every_1000 = {}) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> tmp(3 * kPageSize);
  for (int i = 0; i < ops; ++i) {
    const std::size_t len = 1 + rng() % std::min<std::size_t>(3 * kPageSize, hi - lo);
    const std::size_t off = lo + rng() % (hi - lo - len + 1);
    if (rng() % 2 == 0) {
      std::memcpy(tmp.data(), mem + off, len);  // through the region: plain loads
      ASSERT_EQ(std::memcmp(tmp.data(), shadow.data() + off, len), 0) << "op " << i;
    } else {
      const std::byte v = std::byte(rng());
      std::memset(mem + off, static_cast<int>(v), len);  // plain stores
      std::memset(shadow.data() + off, static_cast<int>(v), len);
    }
    if (every_1000 && i % 1000 == 999) every_1000(i);
  }
}

// ---- single thread against a shadow, at 1 %, 10 %, 50 % of the region in budget ----

class RegionShadow : public ::testing::TestWithParam<std::tuple<int, FaultMode>> {};

TEST_P(RegionShadow, PlainAccessesMatchShadowAndBudgetHolds) {
  constexpr std::size_t kBytes = 16u << 20;  // 4096 pages: 1 % is 40 pages
  auto rt = open_runtime();
  ASSERT_TRUE(rt);
  const FarRange far = *rt->allocate(kBytes);
  auto shadow = fill_far(*rt, far, 7);
  Budget budget(kBytes * std::get<0>(GetParam()) / 100);
  const std::size_t limit_pages = budget.limit() / kPageSize;
  auto r = map(*rt, budget, far, in_mode(std::get<1>(GetParam())));
  ASSERT_TRUE(r);
  random_ops(r->data(), shadow, 0, kBytes, 20'000, 11, [&](int) {
    ASSERT_LE(os_resident_pages(*r), limit_pages);  // the kernel agrees with the budget
  });
  ASSERT_EQ(std::memcmp(r->data(), shadow.data(), kBytes), 0);
  EXPECT_LE(budget.peak(), budget.limit());
  EXPECT_LE(os_resident_pages(*r), limit_pages);
  const CacheStats s = r->stats();
  EXPECT_GT(s.misses, 0u);
  EXPECT_GT(s.evictions, 0u);
  EXPECT_GT(s.writebacks, 0u);
  EXPECT_LE(s.resident_bytes, budget.limit());
  EXPECT_EQ(s.fault_latency.total(), s.misses);
  ASSERT_TRUE(r->flush().ok());
  expect_far_equals(*rt, far, shadow);  // every byte durable in far memory
}

INSTANTIATE_TEST_SUITE_P(
    BudgetPercent, RegionShadow,
    ::testing::Combine(::testing::Values(1, 10, 50),
                       ::testing::Values(FaultMode::kHandlerThread, FaultMode::kFaultingThread)),
    [](const auto& param_info) {
      return std::to_string(std::get<0>(param_info.param)) + "Percent" +
             mode_name(std::get<1>(param_info.param));
    });

// ---- four threads at once ----

TEST(Region, FourThreadsOnDisjointPagesMatchTheirShadows) {
  constexpr std::size_t kBytes = 16u << 20;
  auto rt = open_runtime();
  ASSERT_TRUE(rt);
  const FarRange far = *rt->allocate(kBytes);
  auto shadow = fill_far(*rt, far, 3);
  Budget budget(kBytes / 50);  // 2 %: constant eviction while four threads fault
  auto r = map(*rt, budget, far);
  ASSERT_TRUE(r);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      random_ops(r->data(), shadow, t * kBytes / 4, (t + 1) * kBytes / 4, 8'000, 100 + t);
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(std::memcmp(r->data(), shadow.data(), kBytes), 0);
  EXPECT_LE(budget.peak(), budget.limit());
  EXPECT_LE(os_resident_pages(*r), budget.limit() / kPageSize);
  ASSERT_TRUE(r->flush().ok());
  expect_far_equals(*rt, far, shadow);
}

TEST(Region, FourThreadsWritingTheSamePagesLoseNoStore) {
  // Each thread owns every 4th 8-byte slot, so all four write every page at once, racing
  // with eviction (re-protect, copy, drop) and WP faults on the same pages.
  constexpr std::size_t kBytes = 4u << 20;
  constexpr std::size_t kSlots = kBytes / sizeof(std::uint64_t);
  constexpr std::size_t kHotSlotsPerThread = 8 * kPageSize / sizeof(std::uint64_t) / 4;
  auto rt = open_runtime();
  ASSERT_TRUE(rt);
  const FarRange far = *rt->allocate(kBytes);
  fill_far(*rt, far, 5);
  Budget budget(32 * kPageSize);
  auto r = map(*rt, budget, far);
  ASSERT_TRUE(r);
  auto* slots = reinterpret_cast<std::uint64_t*>(r->data());
  std::vector<std::vector<std::uint64_t>> mine(4, std::vector<std::uint64_t>(kSlots / 4));
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      auto& m = mine[t];
      for (std::size_t i = 0; i < m.size(); ++i) slots[i * 4 + t] = m[i] = rng();
      for (int op = 0; op < 40'000; ++op) {
        // Half the ops hit 8 hot pages (written while eviction takes them), half drive
        // eviction by touching the whole region.
        const std::size_t i = rng() % (op % 2 == 0 ? kHotSlotsPerThread : m.size());
        if (op % 3 == 0) {
          ASSERT_EQ(slots[i * 4 + t], m[i]) << "thread " << t << " slot " << i;
        } else {
          slots[i * 4 + t] = m[i] = rng();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(r->flush().ok());
  std::vector<std::byte> expected(kBytes);
  auto* e = reinterpret_cast<std::uint64_t*>(expected.data());
  for (std::size_t t = 0; t < 4; ++t) {
    for (std::size_t i = 0; i < kSlots / 4; ++i) e[i * 4 + t] = mine[t][i];
  }
  EXPECT_EQ(std::memcmp(r->data(), expected.data(), kBytes), 0);
  expect_far_equals(*rt, far, expected);
  EXPECT_LE(budget.peak(), budget.limit());
  EXPECT_GT(r->stats().evictions, 0u);
}

// ---- durability and write-back ----

TEST(Region, FlushedRegionReopensWithEveryByteOverTcp) {
  auto server = TestServer::start("tcp");
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  auto rt = open_runtime(runtime_options((*server)->url()));
  ASSERT_TRUE(rt);
  constexpr std::size_t kBytes = (4u << 20) + 1000;  // a partial last page too
  const FarRange far = *rt->allocate(kBytes);
  Budget budget(kBytes / 4);
  std::vector<std::byte> shadow(kBytes);
  {
    auto r = map(*rt, budget, far);
    ASSERT_TRUE(r);
    std::mt19937 rng(9);
    for (std::size_t i = 0; i < kBytes; ++i) r->data()[i] = shadow[i] = std::byte(rng());
    ASSERT_TRUE(r->flush().ok());
    EXPECT_GT(r->stats().writebacks, 0u);
    expect_far_equals(*rt, far, shadow);
  }  // unmapped
  EXPECT_EQ(budget.used(), 0u);
  auto again = map(*rt, budget, far);
  ASSERT_TRUE(again);
  EXPECT_EQ(std::memcmp(again->data(), shadow.data(), kBytes), 0);
  EXPECT_LE(budget.peak(), budget.limit());
}

TEST(Region, ReadOnlyPassWritesNothingBack) {
  constexpr std::size_t kBytes = 8u << 20;
  auto rt = open_runtime();
  ASSERT_TRUE(rt);
  const FarRange far = *rt->allocate(kBytes);
  auto shadow = fill_far(*rt, far, 1);
  const std::uint64_t far_writes_before = rt->stats().writes;
  Budget budget(kBytes / 20);
  auto r = map(*rt, budget, far);
  ASSERT_TRUE(r);
  for (int pass = 0; pass < 2; ++pass) {
    ASSERT_EQ(std::memcmp(r->data(), shadow.data(), kBytes), 0);
  }
  ASSERT_TRUE(r->flush().ok());
  const CacheStats s = r->stats();
  EXPECT_GT(s.evictions, 0u);
  EXPECT_EQ(s.writebacks, 0u);
  EXPECT_EQ(s.bytes_written, 0u);
  EXPECT_EQ(rt->stats().writes, far_writes_before);
}

TEST(Region, OnlyDirtyPagesAreWrittenBackAndWritesAfterFlushAreSeen) {
  constexpr std::size_t kPages = 256;
  auto rt = open_runtime();
  ASSERT_TRUE(rt);
  const FarRange far = *rt->allocate(kPages * kPageSize);
  auto shadow = fill_far(*rt, far, 2);
  Budget budget(2 * kPages * kPageSize);  // everything fits: no eviction
  auto r = map(*rt, budget, far);
  ASSERT_TRUE(r);
  ASSERT_EQ(std::memcmp(r->data(), shadow.data(), far.bytes), 0);  // all resident, clean
  for (std::size_t p = 0; p < 37; ++p) r->data()[p * 7 * kPageSize / 2 + 5] = std::byte{0xAB};
  ASSERT_TRUE(r->flush().ok());
  EXPECT_EQ(r->stats().writebacks, 37u);
  ASSERT_TRUE(r->flush().ok());
  EXPECT_EQ(r->stats().writebacks, 37u);  // clean after the first flush
  r->data()[3] = std::byte{0xCD};          // re-protected at flush: this store is seen
  ASSERT_TRUE(r->flush().ok());
  EXPECT_EQ(r->stats().writebacks, 38u);
  EXPECT_EQ(r->stats().evictions, 0u);
  std::vector<std::byte> expected(r->data(), r->data() + far.bytes);
  expect_far_equals(*rt, far, expected);
}

TEST(Region, MemserverLossMakesFlushFailAndKeepsDirtyData) {
  auto server = TestServer::start("tcp");
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  RuntimeOptions o = runtime_options((*server)->url());
  o.op_timeout = std::chrono::milliseconds(500);
  auto rt = open_runtime(o);
  ASSERT_TRUE(rt);
  constexpr std::size_t kPages = 64;
  const FarRange far = *rt->allocate(kPages * kPageSize);
  // Room for every page plus the free reserve: nothing is evicted before the memserver goes.
  Budget budget(2 * kPages * kPageSize);
  auto r = map(*rt, budget, far);
  ASSERT_TRUE(r);
  std::vector<std::byte> shadow(far.bytes);
  for (std::size_t i = 0; i < far.bytes; i += 64) r->data()[i] = shadow[i] = std::byte(i >> 6);
  server->reset();  // the memserver goes away with every page dirty
  Status st = r->flush();
  EXPECT_FALSE(st.ok()) << "flush claimed success with its memserver gone";
  EXPECT_EQ(r->stats().writebacks, 0u);
  // Another consumer needs memory: eviction must fail to write back and drop nothing.
  EXPECT_FALSE(budget.charge(budget.limit() - budget.used() + kPageSize));
  EXPECT_EQ(r->stats().evictions, 0u);
  EXPECT_EQ(std::memcmp(r->data(), shadow.data(), far.bytes), 0);  // still all here
  EXPECT_EQ(os_resident_pages(*r), kPages);
  EXPECT_LE(budget.peak(), budget.limit());
}

// ---- hints, pull order, prefetch ----

template <typename Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 500; ++i) {  // up to 5 s
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

TEST(Region, PullOrderFillsOnlyFreeBudgetInOrder) {
  constexpr std::size_t kPages = 1024;
  auto rt = open_runtime();
  ASSERT_TRUE(rt);
  const FarRange far = *rt->allocate(kPages * kPageSize);
  auto shadow = fill_far(*rt, far, 4);
  Budget budget(64 * kPageSize);
  auto r = map(*rt, budget, far);
  ASSERT_TRUE(r);
  std::vector<std::size_t> order;
  for (std::size_t p = kPages; p > 0; --p) order.push_back(p - 1);  // last page first
  ASSERT_TRUE(r->set_pull_order(order).ok());
  // Pulls fill the budget but for the pager's free reserve (1/8 of it), which keeps faults
  // from evicting.
  constexpr std::size_t kPulled = 64 - 64 / region::kReserveShareOfBudget;
  ASSERT_TRUE(eventually([&] { return r->stats().resident_bytes == kPulled * kPageSize; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // give it a chance to overdo it
  EXPECT_EQ(r->stats().resident_bytes, kPulled * kPageSize);
  EXPECT_EQ(r->stats().evictions, 0u);                        // never evicts for a pull
  EXPECT_EQ(r->stats().prefetches_issued, kPulled);
  for (std::size_t p = kPages - kPulled; p < kPages; ++p) EXPECT_TRUE(os_resident(*r, p)) << p;
  const std::size_t off = (kPages - kPulled) * kPageSize;
  EXPECT_EQ(std::memcmp(r->data() + off, shadow.data() + off, kPulled * kPageSize), 0);
  EXPECT_EQ(r->stats().misses, 0u);  // they were there before the touch
  EXPECT_EQ(r->set_pull_order({kPages}).code(), StatusCode::kOutOfRange);
}

TEST(Region, WillNeedPullsAndDontNeedWritesBackAndDrops) {
  constexpr std::size_t kPages = 128;
  auto rt = open_runtime();
  ASSERT_TRUE(rt);
  const FarRange far = *rt->allocate(kPages * kPageSize);
  auto shadow = fill_far(*rt, far, 6);
  Budget budget(kPages * kPageSize);
  auto r = map(*rt, budget, far);
  ASSERT_TRUE(r);
  ASSERT_TRUE(r->advise(10 * kPageSize, 20 * kPageSize, Advice::kWillNeed).ok());
  ASSERT_TRUE(eventually([&] { return os_resident_pages(*r) == 20; }));
  EXPECT_EQ(std::memcmp(r->data() + 10 * kPageSize, shadow.data() + 10 * kPageSize,
                        20 * kPageSize), 0);
  EXPECT_EQ(r->stats().misses, 0u);
  for (std::size_t p = 10; p < 20; ++p) r->data()[p * kPageSize] = shadow[p * kPageSize] = std::byte{1};
  ASSERT_TRUE(r->advise(0, 30 * kPageSize, Advice::kDontNeed).ok());
  EXPECT_EQ(os_resident_pages(*r), 0u);
  EXPECT_EQ(r->stats().writebacks, 10u);
  EXPECT_EQ(budget.used(), 0u);
  EXPECT_EQ(std::memcmp(r->data(), shadow.data(), far.bytes), 0);  // refetched intact
  EXPECT_EQ(r->advise(far.bytes, 1, Advice::kDontNeed).code(), StatusCode::kOutOfRange);
}

TEST(Region, SequentialScanIsPrefetchedAndRandomAdviceStopsIt) {
  constexpr std::size_t kPages = 2048;
  auto rt = open_runtime();
  ASSERT_TRUE(rt);
  const FarRange far = *rt->allocate(kPages * kPageSize);
  auto shadow = fill_far(*rt, far, 8);
  Budget budget(kPages * kPageSize / 4);
  auto r = map(*rt, budget, far);
  ASSERT_TRUE(r);
  ASSERT_EQ(std::memcmp(r->data(), shadow.data(), far.bytes), 0);
  // The last fault's prefetch is mapped after its demand page woke the scan: let it land.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(r->advise(0, far.bytes, Advice::kDontNeed).ok());
  CacheStats s = r->stats();
  EXPECT_LT(s.misses, kPages / 4) << s.to_json();
  EXPECT_GT(s.prefetches_used, s.prefetches_issued * 8 / 10) << s.to_json();
  ASSERT_TRUE(r->advise(0, far.bytes, Advice::kRandom).ok());
  ASSERT_EQ(std::memcmp(r->data(), shadow.data(), far.bytes), 0);
  EXPECT_EQ(r->stats().prefetches_issued, s.prefetches_issued);
  // The last fault is counted just after it woke the scan: wait for the count to settle.
  EXPECT_TRUE(eventually([&] { return r->stats().misses == s.misses + kPages; }))
      << r->stats().misses << " vs " << s.misses + kPages;
}

TEST(Region, TwoRegionsShareOneBudgetAndReclaimFromEachOther) {
  constexpr std::size_t kPages = 1024;
  auto rt = open_runtime();
  ASSERT_TRUE(rt);
  const FarRange fa = *rt->allocate(kPages * kPageSize);
  const FarRange fb = *rt->allocate(kPages * kPageSize);
  auto sa = fill_far(*rt, fa, 12);
  auto sb = fill_far(*rt, fb, 13);
  Budget budget(64 * kPageSize);
  auto a = map(*rt, budget, fa);
  auto b = map(*rt, budget, fb);
  ASSERT_TRUE(a && b);
  std::thread ta([&] { random_ops(a->data(), sa, 0, fa.bytes, 6'000, 21); });
  std::thread tb([&] { random_ops(b->data(), sb, 0, fb.bytes, 6'000, 22); });
  ta.join();
  tb.join();
  EXPECT_EQ(std::memcmp(a->data(), sa.data(), fa.bytes), 0);
  EXPECT_EQ(std::memcmp(b->data(), sb.data(), fb.bytes), 0);
  EXPECT_LE(budget.peak(), budget.limit());
  EXPECT_LE(os_resident_pages(*a) + os_resident_pages(*b), 64u);
  EXPECT_GT(a->stats().evictions, 0u);
  EXPECT_GT(b->stats().evictions, 0u);
}

TEST(Region, RejectsEmptyRanges) {
  auto rt = open_runtime();
  ASSERT_TRUE(rt);
  Budget budget(1u << 20);
  EXPECT_EQ(region::make_region(detail::io_service(*rt), budget, FarRange{}).status().code(),
            StatusCode::kInvalidArgument);
}

// ---- the page table alone ----

TEST(RegionPageTable, TracksResidencyProtectionAndFrames) {
  region::PageTable t(8);
  EXPECT_EQ(t.frame(3), region::kNoFrame);
  t.install(3, 5, region::kWriteProtected);
  t.install(4, 6, 0);
  EXPECT_TRUE(t.has(3, region::kResident | region::kWriteProtected));
  EXPECT_FALSE(t.has(4, region::kWriteProtected));
  EXPECT_EQ(t.frame(3), 5u);
  EXPECT_EQ(t.resident_pages(), 2u);
  t.remove(3);
  EXPECT_FALSE(t.has(3, region::kResident));
  EXPECT_EQ(t.frame(3), region::kNoFrame);
  EXPECT_EQ(t.resident_pages(), 1u);
}

}  // namespace
}  // namespace farmem::test

namespace farmem::test {
namespace {

// ---- the same through Runtime::map on every backend (verbs in the soft-RoCE VM) ----

class RegionTransports
    : public ::testing::TestWithParam<std::tuple<std::string, FaultMode>> {};

TEST_P(RegionTransports, FourThreadsMatchShadowAtTenPercentBudget) {
  // A backend, or one with an "R2" suffix: two memservers and replicas = 2.
  const std::string param = std::get<0>(GetParam());
  const bool replicated = param.ends_with("R2");
  const std::string backend = replicated ? param.substr(0, param.size() - 2) : param;
  if (backend == "verbs") FARMEM_REQUIRE_RDMA_OR_SKIP();
  std::unique_ptr<TestServer> server, replica;
  auto o = runtime_options();
  if (backend != "local") {
    auto s = TestServer::start(backend);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server = std::move(s).value();
    o.servers = {server->url()};
  }
  if (replicated) {
    auto s = TestServer::start(backend);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    replica = std::move(s).value();
    o.servers.push_back(replica->url());
    o.replicas = 2;
  }
  constexpr std::size_t kBytes = 8u << 20;
  o.cache_budget_bytes = kBytes / 10;
  auto rt = open_runtime(o);
  ASSERT_TRUE(rt);
  farmem::RegionOptions ro;
  ro.fault_mode = std::get<1>(GetParam());
  auto mapped = rt->map(kBytes, ro);
  ASSERT_TRUE(mapped.ok()) << mapped.status().to_string();
  Region& r = **mapped;
  std::vector<std::byte> shadow(kBytes, std::byte{0});  // fresh far memory reads as zeros
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::size_t quarter = kBytes / 4;
      random_ops(r.data(), shadow, t * quarter, (t + 1) * quarter, 3000, 20 + t);
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(std::memcmp(r.data(), shadow.data(), kBytes), 0);
  EXPECT_LE(os_resident_pages(r), o.cache_budget_bytes / kPageSize);
  EXPECT_GT(r.stats().evictions, 0u);
  ASSERT_TRUE(rt->flush().ok());  // the runtime's flush reaches its regions
  EXPECT_GT(r.stats().writebacks, 0u);
  expect_far_equals(*rt, r.far(), shadow);
}

INSTANTIATE_TEST_SUITE_P(
    Transports, RegionTransports,
    ::testing::Combine(::testing::Values("local", "tcp", "verbs", "tcpR2", "verbsR2"),
                       ::testing::Values(FaultMode::kHandlerThread, FaultMode::kFaultingThread)),
    [](const auto& param_info) {
      std::string n = std::get<0>(param_info.param);
      n[0] = static_cast<char>(n[0] - 'a' + 'A');
      return n + mode_name(std::get<1>(param_info.param));
    });

}  // namespace
}  // namespace farmem::test
