// Clients that die under a memserver: their slabs must return to the pool. For the network
// backends; verbs instances run in the soft-RoCE VM. (A memserver that goes away under a
// client is a case of the contract suite, conformance_test.cc.)
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using Clock = std::chrono::steady_clock;

class PeerFailure : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "verbs") FARMEM_REQUIRE_RDMA_OR_SKIP();
    auto s = TestServer::start(GetParam());
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    server_ = std::move(s).value();
  }
  std::unique_ptr<TestServer> server_;
};

// Runs farmem_test_client and returns its pid once it printed "ready".
pid_t spawn_client(const std::string& url, int slabs, FILE** out, bool mid_batch = false) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    const std::string n = std::to_string(slabs);
    execl(FARMEM_TEST_CLIENT, FARMEM_TEST_CLIENT, url.c_str(), kToken, n.c_str(),
          mid_batch ? "mid-batch" : nullptr, nullptr);
    _exit(127);
  }
  close(fds[1]);
  *out = fdopen(fds[0], "r");
  return pid;
}

TEST_P(PeerFailure, KilledClientsSlabsReturnToThePool) {
  constexpr int kSlabs = 3;
  FILE* out = nullptr;
  const pid_t pid = spawn_client(server_->url(), kSlabs, &out);
  ASSERT_GT(pid, 0);
  char line[64] = {};
  ASSERT_NE(std::fgets(line, sizeof line, out), nullptr) << "client died before ready";
  ASSERT_STREQ(line, "ready\n");
  auto st = server_->core().stats();
  EXPECT_EQ(st.slabs, static_cast<std::uint64_t>(kSlabs));
  EXPECT_EQ(st.sessions, 1u);
  EXPECT_GT(st.used_bytes, 0u);

  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  std::fclose(out);
  // The server notices the dead peer and reclaims; give it a bounded while.
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (server_->core().stats().slabs != 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  st = server_->core().stats();
  EXPECT_EQ(st.slabs, 0u);
  EXPECT_EQ(st.used_bytes, 0u);
  EXPECT_EQ(st.sessions, 0u);
  EXPECT_EQ(st.slabs_reclaimed, static_cast<std::uint64_t>(kSlabs));
}

TEST_P(PeerFailure, ClientKilledWithABatchInFlightHasItsSlabsReclaimed) {
  constexpr int kSlabs = 2;
  FILE* out = nullptr;
  const pid_t pid = spawn_client(server_->url(), kSlabs, &out, /*mid_batch=*/true);
  ASSERT_GT(pid, 0);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  char line[64] = {};
  const bool ready = std::fgets(line, sizeof line, out) != nullptr;
  std::fclose(out);
  ASSERT_TRUE(ready && std::string(line) == "ready\n") << "client failed before its batch";
  ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
      << "the client did not die with its batch in flight";
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  while (server_->core().stats().slabs != 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto st = server_->core().stats();
  EXPECT_EQ(st.slabs, 0u);
  EXPECT_EQ(st.used_bytes, 0u);
  EXPECT_EQ(st.sessions, 0u);
  EXPECT_EQ(st.slabs_reclaimed, static_cast<std::uint64_t>(kSlabs));
  // The memserver still serves: a new client allocates, writes and reads back.
  auto conn = server_->connect();
  ASSERT_TRUE(conn.ok()) << conn.status().to_string();
  auto slab = transport::alloc_slab(**conn, 1 << 20, std::chrono::seconds(10));
  ASSERT_TRUE(slab.ok());
  std::vector<std::byte> buf(4096, std::byte{9});
  auto reg = std::move((*conn)->register_memory(buf.data(), buf.size())).value();
  transport::Op w{transport::OpKind::kWrite, 4096, buf.data(), reg->lkey(), slab->rkey, slab->addr};
  ASSERT_TRUE((*conn)->execute(w, std::chrono::seconds(10)).ok());
  std::fill(buf.begin(), buf.end(), std::byte{0});
  w.kind = transport::OpKind::kRead;
  ASSERT_TRUE((*conn)->execute(w, std::chrono::seconds(10)).ok());
  EXPECT_EQ(buf[4095], std::byte{9});
}

INSTANTIATE_TEST_SUITE_P(Transports, PeerFailure, ::testing::Values("tcp", "verbs"),
                         BackendName{});

}  // namespace
}  // namespace farmem::test
