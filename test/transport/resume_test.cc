// Sessions that survive stalls and drops (tcp): a connection cut by a proxy resumes without
// the application seeing an error; a memserver stopped for twice op_timeout gives kTimedOut
// meanwhile and the session resumes when it runs again, with no far byte lost; a client that
// dies leaves its session to the lease grace.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>
#include <vector>

#include "farmem/farmem.h"
#include "test/support/memserver_process.h"
#include "test/support/tcp_proxy.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kPage = 4096;

std::uint16_t port_of(const std::string& url) {
  return static_cast<std::uint16_t>(std::stoi(url.substr(url.rfind(':') + 1)));
}

/// Far pages whose every 8-byte word holds a tag (page << 32 | version), and the tags each
/// page may hold: one after a write that succeeded, several after writes that timed out
/// (they may or may not have landed).
class TaggedPages {
 public:
  TaggedPages(Runtime& rt, FarRange range, std::size_t pages)
      : rt_(rt), range_(range), ok_(pages) {}
  std::size_t pages() const { return ok_.size(); }

  /// Writes version `v` to page p through the local buffer slice `buf`.
  Status write(std::size_t p, std::uint64_t v, std::span<std::byte> buf) {
    const std::uint64_t tag = (std::uint64_t{p} << 32) | v;
    for (std::size_t i = 0; i < kPage; i += 8) std::memcpy(buf.data() + i, &tag, 8);
    const Status st = rt_.write(range_.addr + p * kPage, buf.first(kPage));
    std::lock_guard lock(mu_);
    if (st.ok()) ok_[p] = {tag};
    else ok_[p].insert(tag);
    return st;
  }
  /// Reads page p; an ok read must hold one allowed tag in every word (else `wrong` is set).
  Status read(std::size_t p, std::span<std::byte> buf, bool* wrong) {
    const Status st = rt_.read(range_.addr + p * kPage, buf.first(kPage));
    if (!st.ok()) return st;
    std::uint64_t tag;
    std::memcpy(&tag, buf.data(), 8);
    bool uniform = true;
    for (std::size_t i = 8; i < kPage; i += 8) uniform &= std::memcmp(buf.data() + i, &tag, 8) == 0;
    std::lock_guard lock(mu_);
    if (!uniform || ok_[p].count(tag) == 0) {
      *wrong = true;
    } else {
      ok_[p] = {tag};
    }
    return st;
  }

 private:
  Runtime& rt_;
  FarRange range_;
  std::mutex mu_;
  std::vector<std::set<std::uint64_t>> ok_;
};

/// The state letter of /proc/PID/stat ('T': stopped), or 0.
char process_state(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = all.rfind(')');
  return close == std::string::npos || close + 2 >= all.size() ? 0 : all[close + 2];
}

RuntimeOptions options_for(const std::string& url) {
  RuntimeOptions o;
  o.servers = {url};
  o.auth_token = kToken;
  o.slab_bytes = 4u << 20;
  o.cache_budget_bytes = 1u << 20;
  o.local_buffer_bytes = 1u << 20;
  return o;
}

TEST(Resume, ACutConnectionResumesWithNoErrorAndNoByteLost) {
  MemserverProcess server;
  ASSERT_TRUE(server.start("tcp").ok());  // the default --lease-grace (60 s)
  auto proxy = TcpProxy::start("127.0.0.1", port_of(server.url()));
  ASSERT_TRUE(proxy.ok()) << proxy.status().to_string();
  auto rt = Runtime::open(options_for((*proxy)->url()));
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  constexpr std::size_t kPages = 128;
  auto range = (*rt)->allocate(kPages * kPage);
  ASSERT_TRUE(range.ok()) << range.status().to_string();
  TaggedPages pages(**rt, *range, kPages);
  auto buf = (*rt)->local_buffer();
  for (std::size_t p = 0; p < kPages; ++p) ASSERT_TRUE(pages.write(p, 0, buf.subspan(0, kPage)).ok());

  constexpr int kThreads = 4, kOps = 400, kCuts = 3;
  std::atomic<int> errors{0}, wrong{0}, done_ops{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto mine = buf.subspan((t + 1) * kPage, kPage);
      std::uint64_t state = 0x9E3779B97F4A7C15ull * (t + 1);
      for (int i = 0; i < kOps; ++i) {  // bounded
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        // Each thread owns the pages p % kThreads == t: no two threads write one page.
        const std::size_t p = (state % (kPages / kThreads)) * kThreads + t;
        bool bad = false;
        const Status st = (state >> 40) % 2 == 0 ? pages.write(p, i + 1, mine) : pages.read(p, mine, &bad);
        if (!st.ok()) {
          ADD_FAILURE() << st.to_string();
          errors.fetch_add(1);
        }
        wrong.fetch_add(bad ? 1 : 0);
        done_ops.fetch_add(1);
      }
    });
  }
  // Cut every connection a few times while the threads run.
  for (int c = 0; c < kCuts; ++c) {
    const int at = (c + 1) * kThreads * kOps / (kCuts + 1);
    EXPECT_TRUE(eventually([&] { return done_ops.load() >= at; }, std::chrono::seconds(60)));
    (*proxy)->cut();
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GE((*proxy)->accepted(), 1u + kCuts) << "the connection was not re-made after a cut";
  bool bad = false;
  for (std::size_t p = 0; p < kPages; ++p) ASSERT_TRUE(pages.read(p, buf.subspan(0, kPage), &bad).ok());
  EXPECT_FALSE(bad) << "a page lost its last write";
}

TEST(Resume, AMemserverStoppedForTwiceTheTimeoutTimesOutThenResumes) {
  MemserverProcess server;
  ASSERT_TRUE(server.start("tcp").ok());
  RuntimeOptions o = options_for(server.url());
  o.op_timeout = std::chrono::milliseconds(1000);
  o.connect_timeout = std::chrono::milliseconds(1000);
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  constexpr std::size_t kPages = 32;
  auto range = (*rt)->allocate(kPages * kPage);
  ASSERT_TRUE(range.ok());
  TaggedPages pages(**rt, *range, kPages);
  auto buf = (*rt)->local_buffer().subspan(0, kPage);
  for (std::size_t p = 0; p < kPages; ++p) ASSERT_TRUE(pages.write(p, 0, buf).ok());

  ASSERT_TRUE(server.signal(SIGSTOP).ok());
  // A signal lands a little later: wait until the kernel says the process is stopped.
  ASSERT_TRUE(eventually([&] { return process_state(server.pid()) == 'T'; }));
  const auto stopped = Clock::now();
  int timed_out = 0;
  std::uint64_t v = 1;
  // Accesses during the stall (2 x op_timeout): each succeeds or times out, never lies.
  for (int i = 0; i < 20 && Clock::now() - stopped < 2 * o.op_timeout; ++i, ++v) {
    bool bad = false;
    const std::size_t p = v % kPages;
    const Status st = i % 2 == 0 ? pages.write(p, v, buf) : pages.read(p, buf, &bad);
    EXPECT_FALSE(bad);
    EXPECT_TRUE(st.ok() || st.code() == StatusCode::kTimedOut) << st.to_string();
    timed_out += st.code() == StatusCode::kTimedOut;
  }
  EXPECT_GT(timed_out, 0) << "nothing waited on the stopped memserver";
  ASSERT_TRUE(server.signal(SIGCONT).ok());
  // The session resumes: an access succeeds again within a bounded while...
  bool resumed = false;
  for (int i = 0; i < 100 && !resumed; ++i, ++v) {
    const Status st = pages.write(v % kPages, v, buf);
    ASSERT_TRUE(st.ok() || st.code() == StatusCode::kTimedOut) << st.to_string();
    resumed = st.ok();
  }
  ASSERT_TRUE(resumed);
  // ...and every page holds what it may: no far byte was lost with the old connection.
  for (std::size_t p = 0; p < kPages; ++p) {
    bool bad = false;
    ASSERT_TRUE(pages.read(p, buf, &bad).ok());
    EXPECT_FALSE(bad) << "page " << p;
  }
}

TEST(Resume, ADeadClientsSessionIsKeptForTheGraceThenReclaimed) {
  memserver::CoreOptions co;
  co.capacity_bytes = 64u << 20;
  co.lease_grace = std::chrono::hours(1);  // reclaimed below by reap_expired, not by the clock
  auto s = TestServer::start("tcp", co);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  auto& server = **s;
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    execl(FARMEM_TEST_CLIENT, FARMEM_TEST_CLIENT, server.url().c_str(), kToken, "3", nullptr);
    _exit(127);
  }
  close(fds[1]);
  char line[16] = {};
  ASSERT_GT(read(fds[0], line, 6), 0);
  close(fds[0]);
  EXPECT_EQ(server.core().stats().slabs, 3u);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  waitpid(pid, nullptr, 0);
  ASSERT_TRUE(eventually([&] { return server.core().sessions_detached() == 1; },
                         std::chrono::seconds(30)));
  EXPECT_EQ(server.core().stats().slabs, 3u) << "reclaimed before the grace ran out";
  EXPECT_EQ(server.core().reap_expired(Clock::now() + std::chrono::hours(2)), 1u);
  EXPECT_EQ(server.core().stats().slabs, 0u);
  EXPECT_EQ(server.core().stats().used_bytes, 0u);
}

}  // namespace
}  // namespace farmem::test
