// The page cache through far_ptr, far_vector and far_hash_map, on every backend (verbs in the
// soft-RoCE VM): randomized reads and writes against shadow copies at 1 %, 10 % and 50 %
// budgets with 4 threads, the budget bound, eviction safety under DerefScopes, single fetch
// per missed page, write-back of dirty pages only, prefetch accuracy and failure reporting.
#include <gtest/gtest.h>

#include <barrier>
#include <cstring>
#include <random>
#include <thread>

#include "farmem/farmem.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

struct Rec {
  std::uint64_t id;
  std::uint64_t v[7];  // 64 bytes: 64 records a 4 KiB page
};

constexpr std::uint64_t kFarBytes = 8u << 20;  // 8 MiB of records
constexpr std::uint64_t kRecords = kFarBytes / sizeof(Rec);

// The parameter is a backend ("local", "tcp", "verbs"), or one with an "R2" suffix: two
// memservers of that backend and RuntimeOptions::replicas = 2, so that every case also runs
// with every write going to two copies.
class CacheTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const bool replicated = GetParam().ends_with("R2");
    const std::string backend = replicated ? GetParam().substr(0, GetParam().size() - 2) : GetParam();
    if (backend == "verbs") FARMEM_REQUIRE_RDMA_OR_SKIP();
    if (backend != "local") {
      memserver::CoreOptions co;
      co.capacity_bytes = 512u << 20;
      auto s = TestServer::start(backend, co);
      ASSERT_TRUE(s.ok()) << s.status().to_string();
      server_ = std::move(s).value();
      if (replicated) {
        auto second = TestServer::start(backend, co);
        ASSERT_TRUE(second.ok()) << second.status().to_string();
        replica_ = std::move(second).value();
      }
    }
  }
  std::unique_ptr<Runtime> open(std::uint64_t budget, bool prefetch = true,
                                std::uint32_t page = 4096) {
    RuntimeOptions o;
    o.servers = {server_ ? server_->url() : "local"};
    if (replica_) {
      o.servers.push_back(replica_->url());
      o.replicas = 2;
    }
    o.auth_token = kToken;
    o.local_buffer_bytes = 1u << 20;
    o.slab_bytes = 4u << 20;
    o.local_server_capacity = 512u << 20;
    o.cache_budget_bytes = budget;
    o.page_bytes = page;
    o.prefetch = prefetch;
    o.op_timeout = std::chrono::seconds(20);
    auto rt = Runtime::open(o);
    EXPECT_TRUE(rt.ok()) << rt.status().to_string();
    if (rt.ok()) {
      EXPECT_EQ((*rt)->stats().replicas, o.replicas);
    }
    return rt.ok() ? std::move(rt).value() : nullptr;
  }
  std::unique_ptr<TestServer> server_;
  std::unique_ptr<TestServer> replica_;  ///< the second copy's memserver ("R2" parameters)
};

// Reads the far bytes of a record around the cache (like a fresh cache would).
Rec read_raw(Runtime& rt, FarAddr a) {
  auto buf = rt.local_buffer().first(sizeof(Rec));
  EXPECT_TRUE(rt.read(a, buf).ok());
  Rec r;
  std::memcpy(&r, buf.data(), sizeof r);
  return r;
}

void far_ptr_shadow_run(Runtime& rt, std::uint64_t budget) {
  std::vector<far_ptr<Rec>> ptrs;
  std::vector<Rec> shadow(kRecords);
  for (std::uint64_t i = 0; i < kRecords; ++i) {
    shadow[i] = Rec{i, {i, i * 3, 0, 0, 0, 0, 0}};
    auto p = rt.make_far<Rec>(shadow[i]);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    ptrs.push_back(*p);
  }
  constexpr int kThreads = 4;
  std::atomic<int> bad{0};
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> max_frames{0};
  const std::uint64_t frames = budget / rt.page_bytes();
  std::thread monitor([&] {  // samples the cache's own accounting while threads run
    while (!done) {
      max_frames = std::max<std::uint64_t>(max_frames, rt.cache_frames_in_use());
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      for (int op = 0; op < 4000 && bad == 0; ++op) {
        // Thread t owns records with i % kThreads == t: the shadow needs no lock.
        const std::uint64_t i = (rng() % (kRecords / kThreads)) * kThreads + t;
        DerefScope scope(rt);
        if (rng() % 3 == 0) {
          Rec& r = ptrs[i].deref_mut(scope);
          r.v[2 + rng() % 5] = rng();
          std::memcpy(&shadow[i], &r, sizeof(Rec));
        } else if (std::memcmp(&ptrs[i].deref(scope), &shadow[i], sizeof(Rec)) != 0) {
          ++bad;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  done = true;
  monitor.join();
  ASSERT_EQ(bad.load(), 0) << "a far_ptr read disagreed with the shadow copy";
  EXPECT_LE(max_frames.load(), frames);
  EXPECT_LE(rt.cache_stats().resident_bytes, budget);
  ASSERT_TRUE(rt.flush().ok());
  for (std::uint64_t i = 0; i < kRecords; i += 7) {
    const Rec r = read_raw(rt, ptrs[i].addr());
    ASSERT_EQ(std::memcmp(&r, &shadow[i], sizeof r), 0) << "far memory lost record " << i;
  }
}

TEST_P(CacheTest, FarPtrShadowAtOnePercentBudget) {
  auto rt = open(kFarBytes / 100);
  ASSERT_TRUE(rt);
  far_ptr_shadow_run(*rt, kFarBytes / 100);
  EXPECT_GT(rt->cache_stats().evictions, 0u);
  EXPECT_GT(rt->cache_stats().writebacks, 0u);
}

TEST_P(CacheTest, FarPtrShadowAtTenPercentBudget) {
  auto rt = open(kFarBytes / 10);
  ASSERT_TRUE(rt);
  far_ptr_shadow_run(*rt, kFarBytes / 10);
}

TEST_P(CacheTest, FarPtrShadowAtHalfBudget) {
  auto rt = open(kFarBytes / 2);
  ASSERT_TRUE(rt);
  far_ptr_shadow_run(*rt, kFarBytes / 2);
}

TEST_P(CacheTest, FarVectorShadowWithLargePages) {
  auto rt = open(256u << 10, true, 16384);  // 16 KiB pages, 16 frames
  ASSERT_TRUE(rt);
  far_vector<std::uint64_t> v(*rt);
  constexpr std::size_t kN = 1u << 20;  // 8 MiB: 32x the budget
  for (std::size_t i = 0; i < kN; ++i) ASSERT_TRUE(v.push_back(i * 7).ok());
  std::vector<std::uint64_t> shadow(kN);
  for (std::size_t i = 0; i < kN; ++i) shadow[i] = i * 7;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int op = 0; op < 5000; ++op) {  // nearly all misses: keep it short under emulation
        const std::size_t i = (rng() % (kN / 4)) * 4 + t;
        DerefScope s(*rt);
        if (op % 4 == 0) {
          v.get_mut(i, s) = shadow[i] = rng();
        } else if (v.get(i, s) != shadow[i]) {
          ++bad;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  std::size_t mismatches = 0, seen = 0;
  ASSERT_TRUE(v.for_each([&](std::size_t i, const std::uint64_t& x) {
    mismatches += x != shadow[i];
    ++seen;
  }).ok());
  EXPECT_EQ(seen, kN);
  EXPECT_EQ(mismatches, 0u);
  // Iterators within one scope, over a stretch that fits the cache.
  DerefScope s(*rt);
  auto first = v.begin(s) + 1000;
  EXPECT_EQ(*first, shadow[1000]);
  EXPECT_EQ(first[7], shadow[1007]);
  EXPECT_EQ(std::count_if(first, first + 100, [](std::uint64_t) { return true; }), 100);
}

TEST_P(CacheTest, HashMapShadowWithFourThreads) {
  auto rt = open(kFarBytes / 10);
  ASSERT_TRUE(rt);
  struct Value {
    char bytes[48];
  };
  far_hash_map<std::uint64_t, Value> map(*rt, 64);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t + 10);
      std::unordered_map<std::uint64_t, Value> shadow;
      for (int op = 0; op < 6000; ++op) {
        const std::uint64_t k = (rng() % 4000) * 4 + t;  // disjoint keys per thread
        const int what = static_cast<int>(rng() % 10);
        if (what < 5) {
          Value v;
          std::memset(v.bytes, static_cast<int>(rng()), sizeof v.bytes);
          if (!map.put(k, v).ok()) ++bad;
          shadow[k] = v;
        } else if (what < 7) {
          auto erased = map.erase(k);
          if (!erased.ok() || *erased != (shadow.erase(k) == 1)) ++bad;
        } else {
          auto res = map.get(k);
          if (!res.ok()) { ++bad; continue; }
          const std::optional<Value>& got = *res;
          auto it = shadow.find(k);
          if (got.has_value() != (it != shadow.end())) ++bad;
          else if (got && std::memcmp(got->bytes, it->second.bytes, sizeof(Value)) != 0) ++bad;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_P(CacheTest, EvictionNeverTakesAPageInUseUnderADerefScope) {
  auto rt = open(64u << 10);  // 16 frames: constant eviction
  ASSERT_TRUE(rt);
  constexpr int kPinned = 4;
  std::vector<far_ptr<Rec>> pinned, churn;
  for (int i = 0; i < kPinned; ++i) pinned.push_back(*rt->make_far<Rec>(Rec{1000u + i, {}}));
  for (int i = 0; i < 4096; ++i) churn.push_back(*rt->make_far<Rec>(Rec{static_cast<std::uint64_t>(i), {}}));
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> churners;
  for (int t = 0; t < 2; ++t) {
    churners.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      while (!stop) {
        DerefScope s(*rt);
        const auto i = rng() % churn.size();
        if (churn[i].deref(s).id != i) ++bad;
      }
    });
  }
  std::uint64_t round = 0;
  // Until the churners have forced plenty of evictions (bounded in time: generous, because
  // under TCG on a busy host 2000 evictions took longer than 3 s once).
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  for (; round < 100000000 && (rt->cache_stats().evictions < 2000 ||
                            round < 300) && std::chrono::steady_clock::now() < until; ++round) {
    DerefScope s(*rt);
    // Hold references to every pinned record across many of the churners' evictions.
    std::vector<Rec*> refs;
    for (auto& p : pinned) refs.push_back(&p.deref_mut(s));
    for (int k = 0; k < 200; ++k) {
      for (int i = 0; i < kPinned; ++i) {
        if (refs[i]->id != 1000u + i) ++bad;      // the frame was reused under us
        refs[i]->v[0] = round;
      }
    }
  }
  stop = true;
  for (auto& th : churners) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GE(rt->cache_stats().evictions, 2000u);
  const std::uint64_t last = round - 1;
  // The writes made under the scope survived eviction (dirty pages were written back).
  for (auto& p : pinned) {
    for (auto& c : churn) { DerefScope s(*rt); (void)c.deref(s); }  // push pinned out
    DerefScope s(*rt);
    EXPECT_EQ(p.deref(s).v[0], last);
  }
}

TEST_P(CacheTest, ThreadsMissingTheSamePageFetchItOnce) {
  auto rt = open(1u << 20, /*prefetch=*/false);
  ASSERT_TRUE(rt);
  std::vector<far_ptr<Rec>> objs;
  for (int i = 0; i < 64 * 40; ++i) objs.push_back(*rt->make_far<Rec>(Rec{static_cast<std::uint64_t>(i), {}}));
  ASSERT_TRUE(rt->flush().ok());
  // Drop everything so every page is cold again.
  ASSERT_TRUE(rt->advise(objs.front().addr(), objs.back().addr().raw - objs.front().addr().raw + 64,
                         Advice::kDontNeed).ok());
  for (int page = 0; page < 20; ++page) {
    const auto before = rt->cache_stats();
    std::barrier sync(4);
    std::vector<std::thread> th;
    std::atomic<int> bad{0};
    for (int t = 0; t < 4; ++t) {
      th.emplace_back([&, t] {
        sync.arrive_and_wait();
        DerefScope s(*rt);
        const int i = page * 64 + t;  // same page, different records
        if (objs[i].deref(s).id != static_cast<std::uint64_t>(i)) ++bad;
      });
    }
    for (auto& x : th) x.join();
    EXPECT_EQ(bad.load(), 0);
    const auto after = rt->cache_stats();
    EXPECT_EQ(after.misses - before.misses, 1u) << "page " << page;
    EXPECT_EQ(after.bytes_read - before.bytes_read, rt->page_bytes());
  }
}

// The bulk paths: append() and for_each_mut() open a scope per page, not per element. Both
// start and end mid-page here, and the vector is 16x the budget, so nearly every page of the
// final check is read back from far memory.
TEST_P(CacheTest, AppendAndForEachMutMatchAShadowPastTheBudget) {
  auto rt = open(512u << 10);  // 128 frames
  ASSERT_TRUE(rt);
  far_vector<std::uint64_t> v(*rt);
  constexpr std::size_t kHead = 100, kN = (1u << 20) + 37;  // 8 MiB and a bit
  for (std::size_t i = 0; i < kHead; ++i) ASSERT_TRUE(v.push_back(i).ok());
  std::size_t calls = 0;
  const CacheStats before = rt->cache_stats();
  ASSERT_TRUE(v.append(kN - kHead, [&](std::size_t i) {
    ++calls;
    return i * 3 + 1;
  }).ok());
  ASSERT_EQ(v.size(), kN);
  EXPECT_EQ(calls, kN - kHead);
  // Whole pages are overwritten, not fetched: only the partial first page could be read.
  const CacheStats filled = rt->cache_stats();
  const std::uint64_t whole_pages = (kN - 512) / 512;  // per page: 512 elements of 4 KiB
  EXPECT_GE(filled.overwrite_fills - before.overwrite_fills, whole_pages);
  EXPECT_LE(filled.bytes_read - before.bytes_read, rt->page_bytes()) << "fresh pages fetched";
  EXPECT_GT(filled.writebacks, before.writebacks);  // the filled pages went to far memory
  ASSERT_TRUE(v.append(0, [](std::size_t) -> std::uint64_t { return 0; }).ok());
  EXPECT_EQ(v.size(), kN);
  ASSERT_TRUE(v.for_each_mut([](std::size_t i, std::uint64_t& x) { x += i; }).ok());
  ASSERT_TRUE(rt->flush().ok());
  std::size_t wrong = 0, seen = 0;
  ASSERT_TRUE(v.for_each([&](std::size_t i, const std::uint64_t& x) {
    const std::uint64_t want = i < kHead ? 2 * i : i * 4 + 1;
    wrong += x != want;
    ++seen;
  }).ok());
  EXPECT_EQ(seen, kN);
  EXPECT_EQ(wrong, 0u);
  EXPECT_GT(rt->cache_stats().evictions, 0u);
}

TEST_P(CacheTest, OnlyDirtyPagesAreWrittenBack) {
  auto rt = open(256u << 10, /*prefetch=*/false);
  ASSERT_TRUE(rt);
  far_vector<std::uint64_t> v(*rt);
  ASSERT_TRUE(v.resize(1u << 20).ok());  // 8 MiB, 32x the budget
  ASSERT_TRUE(rt->flush().ok());
  const auto base = rt->cache_stats().writebacks;
  for (std::size_t i = 0; i < v.size(); i += 512) {  // read-only pass, evicting all along
    DerefScope s(*rt);
    ASSERT_EQ(v.get(i, s), 0u);
  }
  const auto ro = rt->cache_stats();
  EXPECT_GT(ro.evictions, 100u);
  EXPECT_EQ(ro.writebacks, base) << "clean pages were written back";
  for (std::size_t i = 0; i < v.size(); i += 512) {  // one write per page
    DerefScope s(*rt);
    v.get_mut(i, s) = i;
  }
  ASSERT_TRUE(rt->flush().ok());
  EXPECT_GE(rt->cache_stats().writebacks - base, v.size() / 512);
  EXPECT_LE(rt->cache_stats().writebacks - base, v.size() / 512 + 64);
}

TEST_P(CacheTest, PrefetchIsAccurateOnScansAndQuietOnRandomAccess) {
  auto rt = open(1u << 20);  // 256 frames; the vector is 16x that
  ASSERT_TRUE(rt);
  far_vector<std::uint64_t> v(*rt);
  const std::size_t per_page = rt->page_bytes() / sizeof(std::uint64_t);
  // Long scans, so that the few pages prefetched past the end weigh little.
  const std::size_t pages = 16 * 256;
  ASSERT_TRUE(v.resize(pages * per_page).ok());
  ASSERT_TRUE(rt->flush().ok());
  ASSERT_TRUE(rt->advise(v.addr_of(0), pages * rt->page_bytes(), Advice::kDontNeed).ok());

  auto scan = [&](std::size_t stride_pages) {
    const auto before = rt->cache_stats();
    for (std::size_t p = 0; p < pages; p += stride_pages) {
      DerefScope s(*rt);
      EXPECT_EQ(v.get(p * per_page, s), 0u);
    }
    // Let in-flight prefetches land before counting.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto after = rt->cache_stats();
    CacheStats d;
    d.prefetches_issued = after.prefetches_issued - before.prefetches_issued;
    d.prefetches_used = after.prefetches_used - before.prefetches_used;
    d.misses = after.misses - before.misses;
    return d;
  };
  const auto seq = scan(1);
  EXPECT_GT(seq.prefetches_issued, pages / 4) << "prefetch should cover much of a scan; misses " << seq.misses << " used " << seq.prefetches_used;
  EXPECT_GE(seq.prefetch_accuracy(), 0.9) << seq.prefetches_used << "/" << seq.prefetches_issued;
  ASSERT_TRUE(rt->advise(v.addr_of(0), pages * rt->page_bytes(), Advice::kDontNeed).ok());
  const auto strided = scan(3);
  EXPECT_GT(strided.prefetches_issued, pages / 12) << "prefetch should cover much of a scan";
  EXPECT_GE(strided.prefetch_accuracy(), 0.9)
      << strided.prefetches_used << "/" << strided.prefetches_issued;

  ASSERT_TRUE(rt->advise(v.addr_of(0), pages * rt->page_bytes(), Advice::kDontNeed).ok());
  const auto before = rt->cache_stats();
  constexpr int kAccesses = 2000;
  std::thread([&] {  // a thread of its own: a fresh stream, no trend history
    std::mt19937_64 rng(5);
    for (int i = 0; i < kAccesses; ++i) {
      DerefScope s(*rt);
      (void)v.get((rng() % pages) * per_page, s);
    }
  }).join();
  const auto issued = rt->cache_stats().prefetches_issued - before.prefetches_issued;
  EXPECT_LT(issued, kAccesses / 50u) << "random access should prefetch almost nothing";
}

// Needs a memserver that can die: the network backends only.
class CacheFailureTest : public CacheTest {};

TEST_P(CacheFailureTest, WriteBackFailureReachesTheApplication) {
  auto rt = open(256u << 10, false);
  ASSERT_TRUE(rt);
  std::vector<far_ptr<Rec>> objs;
  for (int i = 0; i < 256; ++i) objs.push_back(*rt->make_far<Rec>(Rec{static_cast<std::uint64_t>(i), {}}));
  ASSERT_TRUE(rt->flush().ok());
  {
    DerefScope s(*rt);
    objs[0].deref_mut(s).v[0] = 42;  // dirty, and only in the cache
  }
  const auto wb = rt->cache_stats().writebacks;
  server_.reset();  // the memserver dies with a dirty page unwritten
  auto st = rt->flush();
  EXPECT_FALSE(st.ok()) << "flush claimed success with the memserver gone";
  EXPECT_EQ(rt->cache_stats().writebacks, wb) << "a failed write-back was counted as written";
  // The page is still dirty and resident: the data is not silently dropped.
  DerefScope s(*rt);
  EXPECT_EQ(objs[0].deref(s).v[0], 42u);
}

TEST_P(CacheFailureTest, HashMapReturnsFetchErrorsInsteadOfAborting) {
  auto rt = open(64u << 10, false);  // 16 pages: the table below does not fit
  ASSERT_TRUE(rt);
  struct Value {
    std::uint64_t v[64];
  };
  far_hash_map<std::uint64_t, Value> map(*rt, 1024);
  for (std::uint64_t k = 0; k < 400; ++k) ASSERT_TRUE(map.put(k, Value{{k}}).ok()) << k;
  ASSERT_TRUE(rt->flush().ok());
  server_.reset();  // far memory goes away: pages not resident cannot be fetched
  int put_errors = 0, get_errors = 0, erase_errors = 0;
  for (std::uint64_t k = 0; k < 400; ++k) {
    Status st = map.put(k, Value{{k + 1}});
    if (!st.ok()) {
      ++put_errors;
      EXPECT_TRUE(st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kTimedOut ||
                  st.code() == StatusCode::kResourceExhausted)
          << st.to_string();
    }
    if (!map.get(k).ok()) ++get_errors;
    if (!map.erase(k + 1000).ok()) ++erase_errors;
  }
  EXPECT_GT(put_errors, 0);
  EXPECT_GT(get_errors, 0);
  EXPECT_GT(erase_errors, 0);
}

INSTANTIATE_TEST_SUITE_P(Transports, CacheTest,
                         ::testing::Values("local", "tcp", "verbs", "tcpR2", "verbsR2"),
                         BackendName{});
INSTANTIATE_TEST_SUITE_P(Transports, CacheFailureTest, ::testing::Values("tcp", "verbs"),
                         BackendName{});

TEST(FarPtr, RejectsObjectsLargerThanAPageAndDoubleFrees) {
  RuntimeOptions o;
  o.cache_budget_bytes = 1u << 20;
  auto rt = std::move(Runtime::open(o)).value();
  struct Big {
    char b[4097];
  };
  EXPECT_EQ(rt->make_far<Big>().status().code(), StatusCode::kInvalidArgument);
  auto p = rt->make_far<std::uint64_t>(7u);
  ASSERT_TRUE(p.ok());
  auto copy = *p;
  ASSERT_TRUE(rt->destroy(*p).ok());
  EXPECT_TRUE(p->is_null());
  EXPECT_EQ(rt->destroy(copy).code(), StatusCode::kInvalidArgument);
  DerefScope s(*rt);
  EXPECT_FALSE(far_ptr<int>().try_deref(s).ok());  // null far_ptr: an error, not a crash
}

}  // namespace
}  // namespace farmem::test
