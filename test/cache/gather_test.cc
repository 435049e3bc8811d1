// Many misses in flight from one thread: Runtime::prefetch of a set of far addresses and
// far_vector::gather/scatter over random indices return the right data under eviction
// pressure (the vector is many times the cache), from several threads at once, and report
// bad indices and a dead memserver as errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "farmem/farmem.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using Page = std::array<std::uint64_t, 512>;  // one element a 4 KiB page

Page page_of(std::size_t i, std::uint64_t version) {
  Page p;
  for (std::size_t w = 0; w < p.size(); ++w) p[w] = (i << 20) ^ (version << 40) ^ w;
  return p;
}

class Gather : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = tcp_server_of(128);
    ASSERT_NE(server_, nullptr);
    RuntimeOptions o;
    o.servers = {server_->url()};
    o.auth_token = kToken;
    o.slab_bytes = 4u << 20;
    o.cache_budget_bytes = 1u << 20;  // 256 pages; the vector holds 2048
    o.prefetch = false;               // only the explicit batches fetch ahead
    auto rt = Runtime::open(o);
    ASSERT_TRUE(rt.ok()) << rt.status().to_string();
    rt_ = std::move(rt).value();
    v_ = std::make_unique<far_vector<Page>>(*rt_);
    ASSERT_TRUE(v_->append(kPages, [](std::size_t i) { return page_of(i, 0); }).ok());
    ASSERT_TRUE(rt_->flush().ok());
  }
  static constexpr std::size_t kPages = 2048;
  std::unique_ptr<TestServer> server_;
  std::unique_ptr<Runtime> rt_;
  std::unique_ptr<far_vector<Page>> v_;
};

TEST_F(Gather, RandomIndicesReadBackRightUnderEvictionPressure) {
  std::vector<std::size_t> idx(kPages);
  std::iota(idx.begin(), idx.end(), 0);
  std::shuffle(idx.begin(), idx.end(), std::mt19937_64(7));
  idx.push_back(idx[3]);  // a repeat, and neighbours on one page are fine too
  std::vector<Page> out(idx.size());
  const auto misses = rt_->cache_stats().misses;
  ASSERT_TRUE(v_->gather(idx, out).ok());
  for (std::size_t k = 0; k < idx.size(); ++k) {
    ASSERT_EQ(out[k], page_of(idx[k], 0)) << "index " << idx[k];
  }
  const CacheStats s = rt_->cache_stats();
  // The pages came in batches: most of them as prefetches, not one demand miss each.
  EXPECT_GT(s.prefetches_issued, kPages / 2) << "misses " << s.misses - misses;
  EXPECT_GT(s.evictions, 0u);
}

// Runtime::is_local follows a page through the cache: far, then local once read, then far
// again once dropped; a prefetched page turns local once its batch has arrived.
TEST_F(Gather, IsLocalSaysWhetherADerefWouldWait) {
  const FarAddr a = v_->addr_of(5), b = v_->addr_of(6);
  ASSERT_TRUE(rt_->advise(a, 2 * sizeof(Page), Advice::kDontNeed).ok());
  EXPECT_FALSE(rt_->is_local(a));
  EXPECT_FALSE(rt_->is_local(b));
  auto got = v_->load(5);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(*got, page_of(5, 0));
  EXPECT_TRUE(rt_->is_local(a));
  EXPECT_FALSE(rt_->is_local(b));
  ASSERT_TRUE(rt_->prefetch(std::span<const FarAddr>(&b, 1)).ok());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!rt_->is_local(b) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_TRUE(rt_->is_local(b)) << "the prefetched page never arrived";
  ASSERT_TRUE(rt_->advise(a, sizeof(Page), Advice::kDontNeed).ok());
  EXPECT_FALSE(rt_->is_local(a));
}

TEST_F(Gather, ScatterThenGatherFromFourThreads) {
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0}, failed{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      // Each thread owns the indices i with i % 4 == t, visited in its own random order.
      std::vector<std::size_t> idx;
      for (std::size_t i = t; i < kPages; i += 4) idx.push_back(i);
      std::shuffle(idx.begin(), idx.end(), std::mt19937_64(100 + t));
      std::vector<Page> values(idx.size()), out(idx.size());
      for (std::size_t k = 0; k < idx.size(); ++k) values[k] = page_of(idx[k], 1 + t);
      if (Status st = v_->scatter(idx, values); !st.ok()) {
        ++failed;
        ADD_FAILURE() << st.to_string();
      }
      std::shuffle(idx.begin(), idx.end(), std::mt19937_64(200 + t));
      if (Status st = v_->gather(idx, out); !st.ok()) {
        ++failed;
        ADD_FAILURE() << st.to_string();
      }
      for (std::size_t k = 0; k < idx.size(); ++k) {
        if (out[k] != page_of(idx[k], 1 + t)) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  // And it is all in far memory after a flush: read around the cache.
  ASSERT_TRUE(rt_->flush().ok());
  auto buf = rt_->local_buffer().first(sizeof(Page));
  for (std::size_t i : {std::size_t{0}, std::size_t{1}, kPages / 2 + 3, kPages - 1}) {
    ASSERT_TRUE(rt_->read(v_->addr_of(i), buf).ok());
    Page p;
    std::memcpy(&p, buf.data(), sizeof p);
    EXPECT_EQ(p, page_of(i, 1 + i % 4)) << i;
  }
}

TEST_F(Gather, BadInputIsAClearErrorAndLosesNothing) {
  std::vector<std::size_t> idx = {1, 2, kPages};  // the last is past the end
  std::vector<Page> out(idx.size());
  Status st = v_->gather(idx, out);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange) << st.to_string();
  std::vector<Page> short_out(1);
  st = v_->gather(std::vector<std::size_t>{1, 2}, short_out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  std::vector<FarAddr> too_many(Runtime::kMaxPrefetchBatch + 1, v_->addr_of(0));
  EXPECT_EQ(rt_->prefetch(too_many).code(), StatusCode::kInvalidArgument);
  // Nothing was changed.
  auto first = v_->load(1);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, page_of(1, 0));
}

TEST_F(Gather, AGatherWhoseMemserverDiedGetsTheError) {
  ASSERT_TRUE(rt_->advise(v_->addr_of(0), kPages * sizeof(Page), Advice::kDontNeed).ok());
  server_.reset();  // far memory is gone; nothing is resident
  std::vector<std::size_t> idx(256);
  std::iota(idx.begin(), idx.end(), 0);
  std::vector<Page> out(idx.size());
  const Status st = v_->gather(idx, out);
  EXPECT_FALSE(st.ok());
}

}  // namespace
}  // namespace farmem::test
