// Far memory that grows across memservers: servers added to a running runtime, and
// allocations larger than a slab striped over several servers.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <random>
#include <vector>

#include "farmem/farmem.h"
#include "test/support/memserver_process.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

RuntimeOptions options_for(std::vector<std::string> servers) {
  RuntimeOptions o;
  o.servers = std::move(servers);
  o.auth_token = kToken;
  o.local_buffer_bytes = 4u << 20;
  o.slab_bytes = 4u << 20;
  o.cache_budget_bytes = 2u << 20;  // far_vector pages get evicted and written back
  return o;
}

std::uint64_t used_of(TestServer& s) { return s.core().stats().used_bytes; }

TEST(Growth, AServerAddedAtRuntimeTakesNewSlabsAndTheCacheUsesIt) {
  auto a = tcp_server_of(8);
  ASSERT_TRUE(a);
  std::unique_ptr<TestServer> b;  // outlives the runtime, which returns its slabs
  auto rt = Runtime::open(options_for({a->url()}));
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  Runtime& r = **rt;

  // A far_vector fills the only server (its cache arena is registered by then).
  far_vector<std::uint64_t> v(r);
  std::uint64_t n = 0;
  for (;; ++n) {
    auto st = v.push_back(n * 0x9e3779b97f4a7c15ull);
    if (!st.ok()) {
      EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.to_string();
      break;
    }
    ASSERT_LT(n, 2u << 20) << "an 8 MiB server never filled";
  }
  ASSERT_GT(n, 0u);
  EXPECT_EQ(used_of(*a), 8u << 20);

  // Bad URLs fail clearly and add nothing.
  EXPECT_FALSE(r.add_server("tcp://127.0.0.1:1").ok());
  EXPECT_EQ(r.add_server("bogus://x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.server_stats()->size(), 1u);

  // A second server joins: growth continues there, old and new data stay right.
  b = tcp_server_of(32);
  ASSERT_TRUE(b);
  ASSERT_TRUE(r.add_server(b->url()).ok());
  const std::uint64_t target = n + (4u << 20) / sizeof(std::uint64_t);  // +4 MiB of elements
  for (std::uint64_t i = n; i < target; ++i) {
    ASSERT_TRUE(v.push_back(i * 0x9e3779b97f4a7c15ull).ok()) << i;
  }
  EXPECT_GT(used_of(*b), 0u);
  ASSERT_TRUE(r.flush().ok());
  for (std::uint64_t i = 0; i < target; ++i) {
    DerefScope scope(r);  // one page at a time: the 2 MiB budget holds a fraction
    ASSERT_EQ(v.get(i, scope), i * 0x9e3779b97f4a7c15ull) << i;
  }
  // Raw reads and writes reach the new server through the registered local buffer too.
  auto far = r.allocate(1u << 20);
  ASSERT_TRUE(far.ok()) << far.status().to_string();
  auto buf = r.local_buffer().first(1u << 20);
  std::memset(buf.data(), 0x5a, buf.size());
  ASSERT_TRUE(r.write(far->addr, buf).ok());
  std::memset(buf.data(), 0, buf.size());
  ASSERT_TRUE(r.read(far->addr, buf).ok());
  EXPECT_EQ(buf[buf.size() - 1], std::byte{0x5a});

  // Known URLs: adding again is ok and reopens a closed server.
  ASSERT_TRUE(r.close_server(b->url()).ok());
  auto stats = r.server_stats();
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->size(), 2u);
  EXPECT_TRUE((*stats)[1].closed);
  EXPECT_GT((*stats)[1].leased_by_me, 0u);
  ASSERT_TRUE(r.add_server(b->url()).ok());
  EXPECT_FALSE(r.server_stats()->at(1).closed);
  EXPECT_EQ(r.server_stats()->size(), 2u);
  ASSERT_TRUE(r.free(*far).ok());
}

TEST(Growth, ADeadServerIsSkippedAndNamedWhenNothingElseHasRoom) {
  auto a = tcp_server_of(8), b = tcp_server_of(64);
  ASSERT_TRUE(a && b);
  auto rt = Runtime::open(options_for({a->url(), b->url()}));
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  Runtime& r = **rt;
  const std::string dead = b->url();
  b.reset();  // the roomier server goes away: its connection breaks
  std::vector<FarRange> got;
  for (int i = 0; i < 2; ++i) {
    auto f = r.allocate(4u << 20);
    ASSERT_TRUE(f.ok()) << i << ": " << f.status().to_string();
    got.push_back(*f);
  }
  EXPECT_EQ(used_of(*a), 8u << 20);
  auto none = r.allocate(4u << 20);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(none.status().message().find(dead.substr(6)), std::string::npos)
      << none.status().to_string();
  EXPECT_NE(none.status().message().find("full"), std::string::npos) << none.status().to_string();
  for (auto& f : got) ASSERT_TRUE(r.free(f).ok());
}

TEST(Growth, AStalledServerDelaysOnlyTheLeaseThatAsksItNotReadsAndWrites) {
  MemserverProcess stalled;  // a farmem-memserver process, stopped below
  ASSERT_TRUE(stalled.start({"--tcp", "127.0.0.1:0", "--token", kToken, "--capacity", "64M",
                             "--log-level", "error"}, {"tcp"}).ok());
  const std::string stalled_url = "tcp://127.0.0.1:" + std::to_string(stalled.port("tcp"));
  auto good = tcp_server_of(64);
  ASSERT_TRUE(good);
  auto o = options_for({good->url(), stalled_url});
  o.op_timeout = std::chrono::milliseconds(500);
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  Runtime& r = **rt;
  // Far memory on the good server (the other closed meanwhile, then reopened).
  ASSERT_TRUE(r.close_server(stalled_url).ok());
  auto placed = r.allocate(4u << 20);
  ASSERT_TRUE(placed.ok()) << placed.status().to_string();
  ASSERT_TRUE(r.add_server(stalled_url).ok());
  ASSERT_TRUE(stalled.stop().ok());

  // A reader keeps reading the placed memory while a lease asks the stalled server for its
  // free room: the lease waits out op_timeout there, but reads must go on meanwhile.
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> reads{0};
  std::atomic<bool> read_error{false};
  std::thread reader([&] {
    auto buf = r.local_buffer().first(4096);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!stop.load() && std::chrono::steady_clock::now() < end) {
      if (!r.read(placed->addr, buf).ok()) read_error = true;
      reads.fetch_add(1);
    }
  });
  while (reads.load() == 0) std::this_thread::yield();
  const std::uint64_t before = reads.load();
  auto leased = r.allocate(4u << 20);  // needs a new slab: asks both servers
  const std::uint64_t during = reads.load() - before;
  stop = true;
  reader.join();
  ASSERT_TRUE(leased.ok()) << leased.status().to_string();
  EXPECT_FALSE(read_error.load());
  EXPECT_GT(during, 0u) << "reads stopped while a lease waited on a stalled server";
  EXPECT_EQ(good->core().stats().used_bytes, 8u << 20);
  // The stalled server's connection broke on the timeout: the next lease skips it at once.
  auto next = r.allocate(4u << 20);
  ASSERT_TRUE(next.ok()) << next.status().to_string();
  ASSERT_TRUE(stalled.signal(SIGCONT).ok());
  for (auto f : {*placed, *leased, *next}) ASSERT_TRUE(r.free(f).ok());
}

// Writes a pattern over [0, bytes) of `far` through the local buffer in `chunk`-sized pieces
// that start at an odd offset, so pieces straddle stripe boundaries; reads it back the same.
void write_and_check(Runtime& r, FarRange far, std::uint64_t chunk, std::uint64_t seed) {
  auto buf = r.local_buffer();
  ASSERT_LE(chunk, buf.size());
  auto byte_at = [&](std::uint64_t i) { return std::byte((i * 131 + seed + (i >> 12)) & 0xff); };
  for (std::uint64_t at = 0; at < far.bytes;) {
    const std::uint64_t n = std::min(at == 0 ? 4097 : chunk, far.bytes - at);
    for (std::uint64_t i = 0; i < n; ++i) buf[i] = byte_at(at + i);
    ASSERT_TRUE(r.write(far.addr + at, buf.first(n)).ok()) << at;
    at += n;
  }
  for (std::uint64_t at = 0; at < far.bytes;) {
    const std::uint64_t n = std::min(at == 0 ? 777 : chunk, far.bytes - at);
    std::memset(buf.data(), 0, n);
    ASSERT_TRUE(r.read(far.addr + at, buf.first(n)).ok()) << at;
    for (std::uint64_t i = 0; i < n; ++i) ASSERT_EQ(buf[i], byte_at(at + i)) << at + i;
    at += n;
  }
}

TEST(Growth, AllocationsLargerThanASlabAreStripedOverServers) {
  auto a = tcp_server_of(64), b = tcp_server_of(64), c = tcp_server_of(64);
  ASSERT_TRUE(a && b && c);
  auto rt = Runtime::open(options_for({a->url(), b->url(), c->url()}));
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  Runtime& r = **rt;

  // 24 MiB, slabs of 4: one stripe set over all three, 8 MiB each.
  auto big = r.allocate(24u << 20);
  ASSERT_TRUE(big.ok()) << big.status().to_string();
  EXPECT_EQ(used_of(*a), 8u << 20);
  EXPECT_EQ(used_of(*b), 8u << 20);
  EXPECT_EQ(used_of(*c), 8u << 20);
  write_and_check(r, *big, 3u << 20, 1);
  // Bytes of one stripe went to one server only: a read spanning a stripe boundary
  // (1 MiB) in one call is split, and the halves agree with what was written.
  auto buf = r.local_buffer().first(8192);
  ASSERT_TRUE(r.read(big->addr + ((1u << 20) - 4096), buf).ok());
  ASSERT_TRUE(r.free(*big).ok());
  EXPECT_EQ(used_of(*a) + used_of(*b) + used_of(*c), 0u);

  // Fill a to 60 MiB of 64: a 24 MiB allocation is striped over b and c only (12 each).
  std::vector<FarRange> filler;
  ASSERT_TRUE(r.close_server(b->url()).ok());
  ASSERT_TRUE(r.close_server(c->url()).ok());
  for (int i = 0; i < 15; ++i) filler.push_back(*r.allocate(4u << 20));
  EXPECT_EQ(used_of(*a), 60u << 20);
  ASSERT_TRUE(r.add_server(b->url()).ok());
  ASSERT_TRUE(r.add_server(c->url()).ok());
  auto two = r.allocate(24u << 20);
  ASSERT_TRUE(two.ok()) << two.status().to_string();
  EXPECT_EQ(used_of(*a), 60u << 20);
  EXPECT_EQ(used_of(*b), 12u << 20);
  EXPECT_EQ(used_of(*c), 12u << 20);
  write_and_check(r, *two, 4u << 20, 2);

  // 100 MiB more fits in no single server (52 free on b and c) but does striped.
  auto huge = r.allocate(100u << 20);
  ASSERT_TRUE(huge.ok()) << huge.status().to_string();
  EXPECT_EQ(used_of(*b), 62u << 20);
  EXPECT_EQ(used_of(*c), 62u << 20);
  // Now nothing has room for a share of 8 MiB: a clear kResourceExhausted naming the servers.
  auto none = r.allocate(8u << 20);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(none.status().message().find(b->url().substr(6)), std::string::npos)
      << none.status().to_string();
  ASSERT_TRUE(r.free(*huge).ok());
  ASSERT_TRUE(r.free(*two).ok());
  for (auto& f : filler) ASSERT_TRUE(r.free(f).ok());
  EXPECT_EQ(used_of(*a) + used_of(*b) + used_of(*c), 0u);
}

// Run with each slab unreplicated and replicated (RuntimeOptions::replicas): striped slabs
// then have two copies of each stripe position on distinct servers.
class GrowthReplicas : public ::testing::TestWithParam<std::uint32_t> {};

TEST_P(GrowthReplicas, AStripedRegionEvictsAndFaultsAcrossStripes) {
  auto a = tcp_server_of(32), b = tcp_server_of(32), c = tcp_server_of(32);
  ASSERT_TRUE(a && b && c);
  auto o = options_for({a->url(), b->url(), c->url()});
  o.replicas = GetParam();
  o.cache_budget_bytes = 1u << 20;  // 256 pages for a 12 MiB region: most writes evict
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  auto region = (*rt)->map(12u << 20);
  ASSERT_TRUE(region.ok()) << region.status().to_string();
  EXPECT_GT(used_of(*a), 0u);
  EXPECT_GT(used_of(*b), 0u);
  EXPECT_GT(used_of(*c), 0u);
  EXPECT_EQ(used_of(*a) + used_of(*b) + used_of(*c), GetParam() * (12u << 20));
  auto* p = reinterpret_cast<std::uint64_t*>((*region)->data());
  const std::size_t words = (12u << 20) / sizeof(std::uint64_t);
  for (std::size_t i = 0; i < words; ++i) p[i] = i ^ 0xabcdef;  // sequential: coalesced runs
  ASSERT_TRUE((*region)->flush().ok());
  std::mt19937_64 rng(5);
  for (int k = 0; k < 20000; ++k) {
    const std::size_t i = rng() % words;
    ASSERT_EQ(p[i], i ^ 0xabcdef) << i;
  }
  for (std::size_t i = 0; i < words; ++i) ASSERT_EQ(p[i], i ^ 0xabcdef) << i;
}

INSTANTIATE_TEST_SUITE_P(Replicas, GrowthReplicas, ::testing::Values(1u, 2u),
                         [](const auto& p) { return "Replicas" + std::to_string(p.param); });

}  // namespace
}  // namespace farmem::test
