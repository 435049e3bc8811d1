// Coroutines on far memory (farmem/task.h): many misses in flight from one thread return the
// right data under eviction pressure, nested tasks return values and exceptions, misuse is
// a clear error, and a coroutine suspended on a page whose memserver dies gets the error.
#include <gtest/gtest.h>

#include <csignal>
#include <numeric>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "farmem/farmem.h"
#include "test/support/memserver_process.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using Word = std::uint64_t;
constexpr std::size_t kWordsPerPage = 4096 / sizeof(Word);

Word word_of(std::size_t i, Word version) { return (i * 0x9E3779B97F4A7C15ull) ^ version; }

RuntimeOptions small_cache(const std::string& url) {
  RuntimeOptions o;
  o.servers = {url};
  o.auth_token = kToken;
  o.slab_bytes = 4u << 20;
  o.cache_budget_bytes = 1u << 20;  // 256 pages; the vectors below hold 2048
  o.prefetch = false;               // only the scheduler's batches fetch ahead
  return o;
}

class Coroutines : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = tcp_server_of(128);
    ASSERT_NE(server_, nullptr);
    auto rt = Runtime::open(small_cache(server_->url()));
    ASSERT_TRUE(rt.ok()) << rt.status().to_string();
    rt_ = std::move(rt).value();
    v_ = std::make_unique<far_vector<Word>>(*rt_);
    ASSERT_TRUE(v_->append(kWords, [](std::size_t i) { return word_of(i, 0); }).ok());
    ASSERT_TRUE(rt_->flush().ok());
    ASSERT_TRUE(rt_->advise(v_->addr_of(0), kWords * sizeof(Word), Advice::kDontNeed).ok());
  }
  static constexpr std::size_t kWords = 2048 * kWordsPerPage;
  std::unique_ptr<TestServer> server_;
  std::unique_ptr<Runtime> rt_;
  std::unique_ptr<far_vector<Word>> v_;
};

// One coroutine: `n` random words, each read and checked, then rewritten with `version`.
Task<> visit(far_vector<Word>& v, std::uint64_t seed, int n, Word version, int* wrong,
             int* failed) {
  std::mt19937_64 rng(seed);
  for (int k = 0; k < n; ++k) {
    const std::size_t i = rng() % v.size();
    Result<Word> w = co_await load(v, i);
    if (!w.ok()) {
      ++*failed;
      continue;
    }
    // Words are only ever rewritten from version 0 to their owner's version.
    if (*w != word_of(i, 0) && *w != word_of(i, i % 7 + 1)) ++*wrong;
    if (i % 7 + 1 == version) {
      if (!(co_await store(v, i, word_of(i, version))).ok()) ++*failed;
    }
  }
}

TEST_F(Coroutines, ManyMissesInFlightFromOneThreadReadRightUnderEviction) {
  Scheduler sched(*rt_);
  int wrong = 0, failed = 0;
  for (int c = 0; c < 256; ++c) {
    sched.spawn(visit(*v_, 1000 + c, 16, static_cast<Word>(c % 7 + 1), &wrong, &failed));
  }
  const CacheStats before = rt_->cache_stats();
  ASSERT_TRUE(sched.run().ok());
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(failed, 0);
  const Scheduler::Stats s = sched.stats();
  const CacheStats after = rt_->cache_stats();
  // The misses overlapped: many pages were requested at once, in batches, and most arrived
  // as prefetches rather than one demand miss each.
  EXPECT_GT(s.suspensions, 2000u);
  EXPECT_GT(s.peak_in_flight, 8u);
  EXPECT_LE(s.peak_in_flight, rt_->prefetch_window());
  EXPECT_LT(s.batches, s.pages_requested / 2);
  EXPECT_GT(after.prefetches_issued - before.prefetches_issued, s.suspensions / 2);
  EXPECT_GT(after.evictions, before.evictions);  // the cache was far too small to hold them
  // Every write reached far memory: read each word around the cache after a flush.
  ASSERT_TRUE(rt_->flush().ok());
  int bad = 0;
  for (std::size_t i = 0; i < kWords; i += 997) {
    auto w = v_->load(i);
    ASSERT_TRUE(w.ok());
    if (*w != word_of(i, 0) && *w != word_of(i, i % 7 + 1)) ++bad;
  }
  EXPECT_EQ(bad, 0);
}

Task<int> add_two(far_vector<Word>& v, std::size_t i, std::size_t j) {
  auto a = co_await load(v, i);
  auto b = co_await load(v, j);
  if (!a.ok() || !b.ok()) throw std::runtime_error("a load failed");
  co_return static_cast<int>((*a + *b) & 0xFFFF);
}

Task<> nested(far_vector<Word>& v, int* out) { *out = co_await add_two(v, 5, 5 + 100000); }

Task<> throws() {
  throw std::logic_error("from a root");
  co_return;
}

TEST_F(Coroutines, NestedTasksReturnValuesAndRootExceptionsReachRun) {
  Scheduler sched(*rt_);
  int out = -1;
  sched.spawn(nested(*v_, &out));
  ASSERT_TRUE(sched.run().ok());
  EXPECT_EQ(out, static_cast<int>((word_of(5, 0) + word_of(100005, 0)) & 0xFFFF));
  EXPECT_GE(sched.stats().suspensions, 1u);
  sched.spawn(throws());
  EXPECT_THROW((void)sched.run(), std::logic_error);
}

Task<> run_inside(Scheduler& sched, Status* st) {
  *st = sched.run();
  co_return;
}

Task<> bad_index(far_vector<Word>& v, Status* st) { *st = co_await store(v, v.size(), Word{1}); }

TEST_F(Coroutines, MisuseAndBadIndicesAreClearErrors) {
  Scheduler sched(*rt_);
  Status inner = Status::Ok(), index = Status::Ok();
  sched.spawn(run_inside(sched, &inner));
  sched.spawn(bad_index(*v_, &index));
  ASSERT_TRUE(sched.run().ok());
  EXPECT_EQ(inner.code(), StatusCode::kInvalidArgument) << inner.to_string();
  EXPECT_EQ(index.code(), StatusCode::kOutOfRange) << index.to_string();
  // A Task made earlier runs when awaited, here from a root of a second scheduler.
  Task<int> t = add_two(*v_, 1, 2);
  Scheduler solo(*rt_);
  int got = -1;
  solo.spawn([](Task<int> task, int* out) -> Task<> { *out = co_await std::move(task); }(
      std::move(t), &got));
  ASSERT_TRUE(solo.run().ok());
  EXPECT_EQ(got, static_cast<int>((word_of(1, 0) + word_of(2, 0)) & 0xFFFF));
}

Task<> load_into(far_vector<Word>& v, std::size_t i, Result<Word>* out) {
  *out = co_await load(v, i);
}

TEST_F(Coroutines, AnotherRuntimesFarMemoryIsFetchedInLine) {
  // A second runtime (its own session and cache) on the same memserver: its pages must not
  // be looked up in, or requested through, the scheduler's runtime.
  auto other = Runtime::open(small_cache(server_->url()));
  ASSERT_TRUE(other.ok()) << other.status().to_string();
  far_vector<Word> w(**other);
  ASSERT_TRUE(w.append(4 * kWordsPerPage, [](std::size_t i) { return word_of(i, 9); }).ok());
  ASSERT_TRUE((*other)->flush().ok());
  ASSERT_TRUE((*other)->advise(w.addr_of(0), 4 * 4096, Advice::kDontNeed).ok());
  Scheduler sched(*rt_);
  Result<Word> got = InvalidArgument("not run");
  sched.spawn(load_into(w, 3 * kWordsPerPage + 5, &got));
  ASSERT_TRUE(sched.run().ok());
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(*got, word_of(3 * kWordsPerPage + 5, 9));
  EXPECT_EQ(sched.stats().suspensions, 0u);
  EXPECT_EQ(sched.stats().pages_requested, 0u);
}

Task<> read_one(far_vector<Word>& v, std::size_t i, Status* st, int* wrong) {
  Result<Word> w = co_await load(v, i);
  *st = w.status();
  if (w.ok() && *w != word_of(i, 0)) ++*wrong;
}

// The memserver is a real process, stopped (SIGSTOP) so the batch of requests stays in
// flight, then killed (SIGKILL): every suspended coroutine gets an error, none wrong data.
TEST(CoroutinesDeadMemserver, ASuspendedCoroutineGetsTheError) {
  MemserverProcess ms;
  ASSERT_TRUE(ms.start("tcp").ok());
  RuntimeOptions o = small_cache(ms.url());
  o.op_timeout = std::chrono::seconds(5);
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  far_vector<Word> v(**rt);
  constexpr std::size_t kPages = 64;
  ASSERT_TRUE(v.append(kPages * kWordsPerPage, [](std::size_t i) { return word_of(i, 0); }).ok());
  ASSERT_TRUE((*rt)->flush().ok());
  ASSERT_TRUE((*rt)->advise(v.addr_of(0), kPages * 4096, Advice::kDontNeed).ok());

  Scheduler sched(**rt, kPages);
  std::vector<Status> got(kPages, Status::Ok());
  int wrong = 0;
  for (std::size_t p = 0; p < kPages; ++p) sched.spawn(read_one(v, p * kWordsPerPage, &got[p], &wrong));
  ASSERT_TRUE(ms.stop().ok());
  Status run = InvalidArgument("not run");
  std::thread runner([&] { run = sched.run(); });
  // The batch is posted (and stuck in the stopped server) before the server dies.
  EXPECT_TRUE(eventually([&] { return (*rt)->cache_stats().prefetch_pages_in_flight == kPages; },
                         std::chrono::seconds(20)));
  ASSERT_TRUE(ms.signal(SIGKILL).ok());
  runner.join();
  EXPECT_TRUE(run.ok()) << run.to_string();
  EXPECT_EQ(wrong, 0);
  int failed = 0;
  for (const Status& st : got) {
    if (st.ok()) continue;
    ++failed;
    EXPECT_TRUE(st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kTimedOut ||
                st.code() == StatusCode::kDataLoss || st.code() == StatusCode::kIoError)
        << st.to_string();
  }
  EXPECT_EQ(failed, static_cast<int>(kPages));  // no page was local, no server is left
  EXPECT_EQ((*rt)->cache_stats().prefetch_pages_in_flight, 0u);
}

}  // namespace
}  // namespace farmem::test
