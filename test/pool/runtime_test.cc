// The Runtime facade: opening, far allocation across servers, reads/writes and batches.
#include <gtest/gtest.h>

#include <algorithm>

#include <cstring>
#include <random>
#include <thread>
#include <atomic>

#include "farmem/farmem.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

RuntimeOptions local_options() {
  RuntimeOptions o;
  o.auth_token = kToken;
  o.local_buffer_bytes = 4u << 20;
  o.slab_bytes = 4u << 20;
  o.local_server_capacity = 64u << 20;
  return o;
}

std::unique_ptr<Runtime> open_or_die(RuntimeOptions o) {
  auto rt = Runtime::open(std::move(o));
  EXPECT_TRUE(rt.ok()) << rt.status().to_string();
  return rt.ok() ? std::move(rt).value() : nullptr;
}

TEST(Runtime, WritesAndReadsBackFarMemoryLargerThanItsBuffer) {
  auto rt = open_or_die(local_options());
  ASSERT_TRUE(rt);
  auto buf = rt->local_buffer();
  std::vector<FarRange> ranges;
  for (int i = 0; i < 8; ++i) {  // 8 x 4 MiB far, through one 4 MiB buffer
    auto r = rt->allocate(buf.size());
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    for (std::size_t k = 0; k < buf.size(); ++k) buf[k] = std::byte(k * 31 + i);
    ASSERT_TRUE(rt->write(r->addr, buf).ok());
    ranges.push_back(*r);
  }
  for (int i = 0; i < 8; ++i) {
    std::memset(buf.data(), 0, buf.size());
    ASSERT_TRUE(rt->read(ranges[i].addr, buf).ok());
    for (std::size_t k = 0; k < buf.size(); k += 4093) ASSERT_EQ(buf[k], std::byte(k * 31 + i));
  }
  EXPECT_EQ(rt->stats().far_bytes_allocated, 8u * buf.size());
  for (auto r : ranges) ASSERT_TRUE(rt->free(r).ok());
  EXPECT_EQ(rt->stats().slabs, 0u);  // empty slabs go back to the memserver
  auto ss = rt->server_stats();
  ASSERT_TRUE(ss.ok());
  EXPECT_EQ((*ss)[0].used_bytes, 0u);
}

TEST(Runtime, RejectsBadAccessesWithClearErrors) {
  auto rt = open_or_die(local_options());
  ASSERT_TRUE(rt);
  auto r = *rt->allocate(1000);
  std::vector<std::byte> unregistered(64);
  EXPECT_EQ(rt->read(r.addr, unregistered).code(), StatusCode::kInvalidArgument);
  auto buf = rt->local_buffer();
  EXPECT_EQ(rt->read(FarAddr{}, buf.first(8)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(rt->read(r.addr + (4u << 20), buf.first(8)).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(rt->read(r.addr, buf.first(0)).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(rt->free(r).ok());
  EXPECT_EQ(rt->free(r).code(), StatusCode::kInvalidArgument);  // double free
  EXPECT_EQ(rt->read(r.addr, buf.first(8)).code(), StatusCode::kOutOfRange);  // freed slab
  EXPECT_EQ(rt->allocate(0).status().code(), StatusCode::kInvalidArgument);
}

TEST(Runtime, RegisteredUserMemoryWorksAndOverlapsAreRefused) {
  auto rt = open_or_die(local_options());
  ASSERT_TRUE(rt);
  std::vector<std::byte> mine(8192, std::byte{3});
  ASSERT_TRUE(rt->register_memory(mine).ok());
  EXPECT_EQ(rt->register_memory(std::span(mine).subspan(100, 10)).code(),
            StatusCode::kInvalidArgument);
  auto r = *rt->allocate(8192);
  ASSERT_TRUE(rt->write(r.addr, mine).ok());
  std::vector<std::byte> back(8192);
  ASSERT_TRUE(rt->register_memory(back).ok());
  ASSERT_TRUE(rt->read(r.addr, back).ok());
  EXPECT_EQ(back, mine);
  ASSERT_TRUE(rt->unregister_memory(mine).ok());
  EXPECT_EQ(rt->write(r.addr, mine).code(), StatusCode::kInvalidArgument);
}

TEST(Runtime, BatchesReadAndWriteManyRanges) {
  auto rt = open_or_die(local_options());
  ASSERT_TRUE(rt);
  auto buf = rt->local_buffer();
  constexpr int kN = 512;
  constexpr std::size_t kLen = 4096;
  std::vector<FarRange> ranges;
  IoBatch batch;
  for (int i = 0; i < kN; ++i) {
    ranges.push_back(*rt->allocate(kLen));
    std::memset(buf.data() + i * kLen, i & 0xFF, kLen);
    batch.write(ranges.back().addr, buf.subspan(i * kLen, kLen));
  }
  ASSERT_TRUE(rt->submit(batch).ok());
  ASSERT_TRUE(rt->wait(batch).ok());
  std::memset(buf.data(), 0xAA, kN * kLen);
  batch.clear();
  for (int i = kN - 1; i >= 0; --i) batch.read(ranges[i].addr, buf.subspan(i * kLen, kLen));
  ASSERT_TRUE(rt->submit(batch).ok());
  ASSERT_TRUE(rt->wait(batch).ok());
  for (int i = 0; i < kN; ++i) ASSERT_EQ(buf[i * kLen + 17], std::byte(i & 0xFF)) << i;
  EXPECT_EQ(rt->stats().reads, static_cast<std::uint64_t>(kN));
}

TEST(Runtime, RefusesBadOptionsAndUnreachableServers) {
  auto o = local_options();
  {
    o.servers = {};  // the default: the in-process memserver when there is no registry
    auto by_default = Runtime::open(o);
    ASSERT_TRUE(by_default.ok()) << by_default.status().to_string();
    EXPECT_EQ((*by_default)->transports(), std::vector<std::string>{"local"});
  }
  o.servers = {"carrier-pigeon://x:1"};
  EXPECT_EQ(Runtime::open(o).status().code(), StatusCode::kInvalidArgument);
  o.servers = {"local"};
  o.auth_token = std::string(2000, 'x');
  EXPECT_EQ(Runtime::open(o).status().code(), StatusCode::kInvalidArgument);

  auto server = std::move(TestServer::start("tcp")).value();
  o = local_options();
  o.servers = {server->url()};
  o.auth_token = "not-the-token";
  auto denied = Runtime::open(o);
  EXPECT_EQ(denied.status().code(), StatusCode::kPermissionDenied)
      << denied.status().to_string();
  const auto port = server->url().substr(server->url().rfind(':') + 1);
  server.reset();  // nobody listens there any more
  o.auth_token = kToken;
  o.servers = {"tcp://127.0.0.1:" + port};
  EXPECT_EQ(Runtime::open(o).status().code(), StatusCode::kUnavailable);
}

// Each option combination that could only fail later fails at open, naming the field.
TEST(Runtime, ChecksOptionCombinationsAtOpen) {
  struct Case {
    const char* field;
    void (*bad)(RuntimeOptions&);
  };
  const Case cases[] = {
      {"cache_budget_bytes", [](RuntimeOptions& o) { o.cache_budget_bytes = 8192; }},
      {"cache_budget_bytes", [](RuntimeOptions& o) { o.page_bytes = 1u << 20; o.cache_budget_bytes = 2u << 20; }},
      {"local_server_capacity", [](RuntimeOptions& o) { o.local_server_capacity = 1u << 20; }},
      {"page_bytes", [](RuntimeOptions& o) { o.page_bytes = 3000; }},
      {"page_bytes", [](RuntimeOptions& o) { o.slab_bytes = 6u << 20; o.page_bytes = 4u << 20; }},
      {"slab_bytes", [](RuntimeOptions& o) { o.slab_bytes = 0; }},
      {"op_timeout", [](RuntimeOptions& o) { o.op_timeout = std::chrono::milliseconds(0); }},
      {"connect_timeout", [](RuntimeOptions& o) { o.connect_timeout = std::chrono::milliseconds(-1); }},
      {"max_prefetch_pages", [](RuntimeOptions& o) { o.max_prefetch_pages = 0; }},
      {"max_cache_threads", [](RuntimeOptions& o) { o.max_cache_threads = 0; }},
      {"auth_token", [](RuntimeOptions& o) { o.auth_token = std::string(1025, 't'); }},
      {"auth_tenant", [](RuntimeOptions& o) { o.auth_tenant = std::string(33, 't'); }},
      {"auth_tenant", [](RuntimeOptions& o) { o.auth_token.clear(); o.auth_tenant = "kv"; }},
      {"local_buffer_bytes", [](RuntimeOptions& o) { o.local_buffer_bytes = 0; }},
  };
  for (const Case& c : cases) {
    auto o = local_options();
    c.bad(o);
    auto rt = Runtime::open(o);
    ASSERT_FALSE(rt.ok()) << c.field;
    EXPECT_EQ(rt.status().code(), StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(rt.status().message().find(c.field), std::string::npos)
        << "the error does not name " << c.field << ": " << rt.status().to_string();
  }
  // The smallest budget that passes works end to end.
  auto o = local_options();
  o.cache_budget_bytes = 4 * 4096;
  auto rt = open_or_die(o);
  ASSERT_TRUE(rt);
  auto p = rt->make_far<std::uint64_t>(42u);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  DerefScope s(*rt);
  EXPECT_EQ(p->deref(s), 42u);
}

TEST(Runtime, ValueOfAnErrorReportsTheError) {
  Result<int> r = NotFound("no such thing");
  try {
    (void)r.value();
    FAIL() << "value() of an error returned";
  } catch (const BadResultAccess& e) {
    EXPECT_EQ(e.status().code(), StatusCode::kNotFound);
    EXPECT_NE(std::string(e.what()).find("not found: no such thing"), std::string::npos)
        << e.what();
  }
  auto o = local_options();
  o.cache_budget_bytes = 8192;
  EXPECT_THROW((void)Runtime::open(o).value(), BadResultAccess);
}

TEST(Runtime, ThreadsPastTheCacheLimitGetAnErrorNotAnAbort) {
  auto o = local_options();
  o.max_cache_threads = 2;
  auto rt = open_or_die(o);
  ASSERT_TRUE(rt);
  auto p = rt->make_far<std::uint64_t>(5u);  // this thread holds one slot from here on
  ASSERT_TRUE(p.ok());
  std::atomic<int> inside{0};
  std::atomic<bool> release{false};
  std::thread holder([&] {  // the second slot, held inside a scope
    DerefScope s(*rt);
    EXPECT_EQ(p->deref(s), 5u);
    inside = 1;
    for (int i = 0; i < 5000 && !release; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  for (int i = 0; i < 5000 && inside == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Status third;
  std::thread([&] {
    DerefScope s(*rt);
    auto r = p->try_deref(s);
    third = r.status();
  }).join();
  release = true;
  holder.join();
  EXPECT_EQ(third.code(), StatusCode::kResourceExhausted) << third.to_string();
  EXPECT_NE(third.message().find("max_cache_threads"), std::string::npos) << third.to_string();
  // Once the holder has exited, a new thread gets its slot.
  Status again = Internal("not run");
  std::thread([&] {
    DerefScope s(*rt);
    again = p->try_deref(s).status();
  }).join();
  EXPECT_TRUE(again.ok()) << again.to_string();
}

// Run unreplicated and with two copies of every slab (RuntimeOptions::replicas): each copy
// takes a slab of its own, on the other server.
class RuntimeReplicas : public ::testing::TestWithParam<std::uint32_t> {};

TEST_P(RuntimeReplicas, PlacesSlabsOnEveryServerAndSpillsWhenOneIsFull) {
  memserver::CoreOptions small;
  small.capacity_bytes = 8u << 20;  // two 4 MiB slabs each
  auto a = std::move(TestServer::start("tcp", small)).value();
  auto b = std::move(TestServer::start("tcp", small)).value();
  auto o = local_options();
  o.servers = {a->url(), b->url()};
  o.replicas = GetParam();
  auto rt = open_or_die(o);
  ASSERT_TRUE(rt);
  const int fit = 4 / static_cast<int>(GetParam());  // allocations the two servers hold
  std::vector<FarRange> got;
  for (int i = 0; i < fit; ++i) {
    auto r = rt->allocate(4u << 20);
    ASSERT_TRUE(r.ok()) << i << ": " << r.status().to_string();
    got.push_back(*r);
  }
  EXPECT_EQ(a->core().stats().slabs, 2u);
  EXPECT_EQ(b->core().stats().slabs, 2u);
  auto full = rt->allocate(4u << 20);
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find(a->url().substr(6)), std::string::npos)
      << full.status().to_string();
  // Data lands on the right server: write them all, read all back.
  auto buf = rt->local_buffer();
  for (int i = 0; i < fit; ++i) {
    std::memset(buf.data(), 'a' + i, buf.size());
    ASSERT_TRUE(rt->write(got[i].addr, buf).ok());
  }
  for (int i = 0; i < fit; ++i) {
    ASSERT_TRUE(rt->read(got[i].addr, buf).ok());
    EXPECT_EQ(buf[buf.size() - 1], std::byte('a' + i));
  }
  EXPECT_EQ(rt->stats().replicas, GetParam());
  EXPECT_EQ(rt->stats().far_bytes_leased, 16u << 20);
}

INSTANTIATE_TEST_SUITE_P(Replicas, RuntimeReplicas, ::testing::Values(1u, 2u),
                         [](const auto& p) { return "Replicas" + std::to_string(p.param); });

TEST(Runtime, PlacesSlabsByFreeRoomSkipsFullAndClosedServers) {
  // Three memservers of 32, 64 and 128 MiB; slabs of 4 MiB.
  std::vector<std::unique_ptr<TestServer>> servers;
  for (std::uint64_t mib : {32u, 64u, 128u}) {
    memserver::CoreOptions co;
    co.capacity_bytes = std::uint64_t{mib} << 20;
    servers.push_back(std::move(TestServer::start("tcp", co)).value());
  }
  auto o = local_options();
  o.servers = {servers[0]->url(), servers[1]->url(), servers[2]->url()};
  auto rt = open_or_die(o);
  ASSERT_TRUE(rt);
  auto free_of = [&](std::size_t i) {
    const auto st = servers[i]->core().stats();
    return st.capacity_bytes - st.used_bytes;
  };
  // 128 MiB of the 224: placement by free room (power of two choices drawn by free bytes,
  // the emptier by free fraction first) gives each server a share of the far bytes close to
  // its share of the capacity (1/7, 2/7, 4/7). Stated tolerance: every share within 0.08 of
  // its target (two 4 MiB slabs of the 32 placed).
  std::vector<FarRange> got;
  for (int i = 0; i < 32; ++i) {
    auto r = rt->allocate(4u << 20);
    ASSERT_TRUE(r.ok()) << i << ": " << r.status().to_string();
    got.push_back(*r);
  }
  for (std::size_t i = 0; i < 3; ++i) {
    const double share = double(servers[i]->core().stats().used_bytes) / double(128u << 20);
    const double target = double(std::uint64_t{1} << i) / 7.0;
    EXPECT_NEAR(share, target, 0.08) << "server " << i << " free MiB: " << (free_of(0) >> 20)
                                     << " " << (free_of(1) >> 20) << " " << (free_of(2) >> 20);
  }
  EXPECT_GT(servers[2]->core().stats().slabs, servers[1]->core().stats().slabs);
  EXPECT_GT(servers[1]->core().stats().slabs, servers[0]->core().stats().slabs);

  // A closed server gets no new slabs; the others fill up, and then allocation fails clearly.
  ASSERT_TRUE(rt->close_server(servers[2]->url()).ok());
  EXPECT_EQ(rt->close_server("tcp://127.0.0.1:1").code(), StatusCode::kNotFound);
  const std::uint64_t closed_slabs = servers[2]->core().stats().slabs;
  int more = 0;
  for (;; ++more) {
    auto r = rt->allocate(4u << 20);
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().to_string();
      EXPECT_NE(r.status().message().find("full"), std::string::npos) << r.status().to_string();
      break;
    }
    got.push_back(*r);
    ASSERT_LT(more, 64) << "allocation never ran out";
  }
  EXPECT_EQ(servers[2]->core().stats().slabs, closed_slabs);
  EXPECT_EQ(free_of(0), 0u);  // the full servers were used to the last slab
  EXPECT_EQ(free_of(1), 0u);
  // Far memory on the closed server stays usable.
  auto buf = rt->local_buffer().first(4096);
  for (const FarRange& r : got) {
    std::memset(buf.data(), 7, buf.size());
    ASSERT_TRUE(rt->write(r.addr, buf).ok());
  }
  for (const FarRange& r : got) ASSERT_TRUE(rt->free(r).ok());
}

class RuntimeVerbs : public ::testing::Test {};

TEST_F(RuntimeVerbs, WritesAndReadsThroughRdma) {
  FARMEM_REQUIRE_RDMA_OR_SKIP();
  auto server = TestServer::start("verbs");
  ASSERT_TRUE(server.ok()) << server.status().to_string();
  auto o = local_options();
  o.servers = {(*server)->url()};
  auto rt = open_or_die(o);
  ASSERT_TRUE(rt);
  EXPECT_EQ(rt->transports(), std::vector<std::string>{"verbs"});
  auto r = rt->allocate(16u << 20);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  auto buf = rt->local_buffer();
  std::mt19937_64 rng(3);
  std::vector<std::byte> shadow(16u << 20);
  for (auto& b : shadow) b = std::byte(rng());
  for (std::size_t off = 0; off < shadow.size(); off += buf.size()) {
    std::memcpy(buf.data(), shadow.data() + off, buf.size());
    ASSERT_TRUE(rt->write(r->addr + off, buf).ok());
  }
  for (std::size_t off = 0; off < shadow.size(); off += buf.size()) {
    ASSERT_TRUE(rt->read(r->addr + off, buf).ok());
    ASSERT_EQ(std::memcmp(buf.data(), shadow.data() + off, buf.size()), 0) << off;
  }
}

}  // namespace
}  // namespace farmem::test
