// Peers that stall rather than die. Six threads share one connection to a farmem-memserver
// process; the process is stopped (SIGSTOP) for several op timeouts while they run, then
// resumed or killed. Every call must return within its deadline with ok (and the right data),
// kTimedOut or kUnavailable; nothing may touch a batch after its wait returned, which ASan
// checks (each thread's Completions and buffers live on its stack). tcp natively, verbs in the
// soft-RoCE VM (there one-sided ops keep working while the process is stopped; its control
// calls stall, and the timeout that breaks the connection flushes the others' batches).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <tuple>

#include "test/support/processes.h"
#include "test/support/test_server.h"
#include "transport/connect.h"

namespace farmem::test {
namespace {

using Clock = std::chrono::steady_clock;
using transport::Completion;
using transport::Op;
using transport::OpKind;

constexpr int kThreads = 6;
constexpr std::uint32_t kPage = 4096;
constexpr std::uint32_t kOpsPerBatch = 4;
constexpr std::uint64_t kShareBytes = kOpsPerBatch * kPage;
constexpr auto kOpTimeout = std::chrono::milliseconds(300);
// The process stays stopped for several op timeouts, so every thread's wait runs out.
constexpr auto kStopFor = std::chrono::milliseconds(1200);
// How late a call may return past its own timeout: a timed-out wait first makes its batch
// finish (shutdown wakes the tcp reader; verbs flushes), which takes milliseconds; scheduling
// on a loaded 2-core host or a TCG VM adds more.
constexpr auto kReturnSlack = std::chrono::seconds(3);
// Bounds on each thread's loop.
constexpr int kMaxRounds = 100000;
constexpr auto kMaxRun = std::chrono::seconds(30);

struct ThreadResult {
  int ok = 0, timed_out = 0, unavailable = 0;
  std::string problem;  // first violation of the contract, if any
};

class Stall : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
 protected:
  void SetUp() override {
    if (backend() == "verbs") FARMEM_REQUIRE_RDMA_OR_SKIP();
    ASSERT_TRUE(server_.start(backend()).ok());
    transport::ConnectOptions co;
    co.token = kToken;
    auto c = transport::connect(server_.url(), co, nullptr);
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    conn_ = std::move(c).value();
    auto slab = transport::alloc_slab(*conn_, kThreads * kShareBytes, std::chrono::seconds(10));
    ASSERT_TRUE(slab.ok()) << slab.status().to_string();
    slab_ = *slab;
  }
  const std::string& backend() const { return std::get<0>(GetParam()); }
  bool kill_at_end() const { return std::get<1>(GetParam()) == "kill"; }

  // One thread's loop: write a pattern to its share, read it back, compare; every 8th round
  // a control call. Stops on `stop`, or at its own bounds.
  void run_thread(int t, const std::atomic<bool>& stop, ThreadResult& res) {
    // Registered per thread, on its own stack-lifetime vector: a write into it after a wait
    // returned is a heap-use-after-free under ASan once the thread ends.
    std::vector<std::byte> buf(2 * kShareBytes);
    auto reg = conn_->register_memory(buf.data(), buf.size());
    if (!reg.ok()) {
      res.problem = reg.status().to_string();
      return;
    }
    const auto started = Clock::now();
    for (int round = 0; round < kMaxRounds && !stop && Clock::now() - started < kMaxRun;
         ++round) {
      const bool control = round % 8 == 7;
      const auto t0 = Clock::now();
      Status st;
      if (control) {
        st = transport::server_stats(*conn_, kOpTimeout).status();
      } else {
        st = write_and_read(t, round, buf, (*reg)->lkey());
      }
      const auto took = Clock::now() - t0;
      if (took > kOpTimeout * 2 + kReturnSlack && res.problem.empty()) {
        res.problem = "a call took " +
                      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()) +
                      " ms";
      }
      switch (st.code()) {
        case StatusCode::kOk: ++res.ok; break;
        case StatusCode::kTimedOut: ++res.timed_out; break;
        case StatusCode::kUnavailable: ++res.unavailable; break;
        default:
          if (res.problem.empty()) res.problem = "unexpected status " + st.to_string();
      }
      if (!st.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  // A write batch then a read batch of the thread's share; ok only if the read returned what
  // was written (else a kInternal naming the mismatch).
  Status write_and_read(int t, int round, std::vector<std::byte>& buf, std::uint32_t lkey) {
    std::array<Op, kOpsPerBatch> ops{};
    for (std::uint32_t k = 0; k < kOpsPerBatch; ++k) {
      std::memset(buf.data() + k * kPage, (t * 31 + round + k) & 0xff, kPage);
      ops[k] = Op{OpKind::kWrite, kPage, buf.data() + k * kPage, lkey, slab_.rkey,
                  slab_.addr + t * kShareBytes + k * kPage};
    }
    {
      Completion w;
      FARMEM_RETURN_IF_ERROR(conn_->post(ops, w));
      FARMEM_RETURN_IF_ERROR(conn_->wait(w, kOpTimeout));
    }
    std::memset(buf.data() + kShareBytes, 0xEE, kShareBytes);
    for (auto& o : ops) {
      o.kind = OpKind::kRead;
      o.local = static_cast<std::byte*>(o.local) + kShareBytes;
    }
    Completion r;
    FARMEM_RETURN_IF_ERROR(conn_->post(ops, r));
    FARMEM_RETURN_IF_ERROR(conn_->wait(r, kOpTimeout));
    if (std::memcmp(buf.data(), buf.data() + kShareBytes, kShareBytes) != 0) {
      return Internal("thread " + std::to_string(t) + " read back other data than it wrote");
    }
    return Status::Ok();
  }

  MemserverProcess server_;  // stopped and killed at will
  std::unique_ptr<transport::Connection> conn_;
  proto::SlabInfo slab_{};
};

TEST_P(Stall, SixThreadsOnOneConnectionGetTimeoutsNotCorruption) {
  std::atomic<bool> stop{false};
  std::vector<ThreadResult> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] { run_thread(t, stop, results[t]); });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(server_.signal(SIGSTOP));
  std::this_thread::sleep_for(kStopFor);
  if (kill_at_end()) {
    ASSERT_TRUE(server_.signal(SIGKILL));
    ASSERT_NE(server_.reap(), -1);
  } else {
    ASSERT_TRUE(server_.signal(SIGCONT));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  for (auto& th : threads) th.join();

  int ok = 0, failed = 0;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(results[t].problem, "") << "thread " << t;
    ok += results[t].ok;
    failed += results[t].timed_out + results[t].unavailable;
  }
  EXPECT_GT(ok, 0) << "nothing succeeded before the stall";
  EXPECT_GT(failed, 0) << "the stall went unnoticed";
  // Broken for good after the stall, whatever happened to the process.
  EXPECT_EQ(transport::server_stats(*conn_, kOpTimeout).status().code(),
            StatusCode::kUnavailable);

  if (!kill_at_end()) {
    // The resumed memserver still serves: a new client writes and reads back.
    transport::ConnectOptions co;
    co.token = kToken;
    auto fresh = transport::connect(server_.url(), co, nullptr);
    ASSERT_TRUE(fresh.ok()) << fresh.status().to_string();
    auto slab = transport::alloc_slab(**fresh, 1 << 20, std::chrono::seconds(10));
    ASSERT_TRUE(slab.ok()) << slab.status().to_string();
    std::vector<std::byte> buf(kPage, std::byte{0x42});
    auto reg = std::move((*fresh)->register_memory(buf.data(), buf.size())).value();
    Op w{OpKind::kWrite, kPage, buf.data(), reg->lkey(), slab->rkey, slab->addr};
    ASSERT_TRUE((*fresh)->execute(w, std::chrono::seconds(10)).ok());
    std::fill(buf.begin(), buf.end(), std::byte{0});
    w.kind = OpKind::kRead;
    ASSERT_TRUE((*fresh)->execute(w, std::chrono::seconds(10)).ok());
    EXPECT_EQ(buf[kPage - 1], std::byte{0x42});
  }
}

std::string StallName(const ::testing::TestParamInfo<Stall::ParamType>& info) {
  std::string b = std::get<0>(info.param);
  b[0] = static_cast<char>(b[0] - 'a' + 'A');
  std::string e = std::get<1>(info.param);
  e[0] = static_cast<char>(e[0] - 'a' + 'A');
  return b + "_Then" + e;
}

INSTANTIATE_TEST_SUITE_P(Transports, Stall,
                         ::testing::Combine(::testing::Values("tcp", "verbs"),
                                            ::testing::Values("resume", "kill")),
                         StallName);

}  // namespace
}  // namespace farmem::test
