// A client whose network vanishes (no FIN, no RST: its end sits in a network namespace this
// test made, whose link is then deleted) loses its slabs once the memserver's idle timeout
// and lease grace run out; a client that only stalls (SIGSTOP) keeps them, and resumes its
// session when it runs again. Needs root (network namespaces); skipped without it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "memserver/server.h"
#include "test/support/memserver_process.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using Clock = std::chrono::steady_clock;

/// iproute2's ip (run_program wants a path).
std::string ip_path() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "ip";
}

Status ip(const std::vector<std::string>& args) {
  std::vector<std::string> argv{ip_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_program(argv, std::chrono::seconds(10));
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    return Internal(cmd + "exited " + std::to_string(r->exit_code));
  }
  return Status::Ok();
}

/// A client process (farmem_test_client) run inside a network namespace.
struct Client {
  pid_t pid = -1;
  FILE* out = nullptr;
  ~Client() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    if (out != nullptr) std::fclose(out);
  }
  bool start(const std::string& ns, const std::string& url, const char* mode) {
    int fds[2];
    if (pipe(fds) != 0) return false;
    pid = fork();
    if (pid == 0) {
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      const std::string ipp = ip_path();
      execl(ipp.c_str(), "ip", "netns", "exec", ns.c_str(), FARMEM_TEST_CLIENT, url.c_str(), kToken, "2",
             mode, nullptr);
      _exit(127);
    }
    close(fds[1]);
    out = fdopen(fds[0], "r");
    return pid > 0 && out != nullptr;
  }
  /// The next line it prints ("" at its end).
  std::string line() {
    char buf[256] = {};
    return std::fgets(buf, sizeof buf, out) != nullptr ? std::string(buf) : std::string();
  }
};

class VanishTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: the clients sit in network namespaces";
    const std::string id = std::to_string(getpid());
    srv_ = "fmsrv" + id, a_ = "fmcla" + id, b_ = "fmclb" + id;
    for (const std::string& ns : {srv_, a_, b_}) {
      ASSERT_TRUE(ip({"netns", "add", ns}).ok()) << ns;
      made_.push_back(ns);
      ASSERT_TRUE(ip({"-n", ns, "link", "set", "lo", "up"}).ok());
    }
    // One veth pair from each client namespace to the server's: 10.231.N.1 is the server.
    int n = 1;
    for (const std::string& ns : {a_, b_}) {
      const std::string s = "fmv" + std::to_string(n) + "s" + id, c = "fmv" + std::to_string(n) + "c" + id;
      const std::string net = "10.231." + std::to_string(n) + ".";
      ASSERT_TRUE(ip({"link", "add", s, "netns", srv_, "type", "veth", "peer", "name", c, "netns", ns}).ok());
      ASSERT_TRUE(ip({"-n", srv_, "addr", "add", net + "1/24", "dev", s}).ok());
      ASSERT_TRUE(ip({"-n", ns, "addr", "add", net + "2/24", "dev", c}).ok());
      ASSERT_TRUE(ip({"-n", srv_, "link", "set", s, "up"}).ok());
      ASSERT_TRUE(ip({"-n", ns, "link", "set", c, "up"}).ok());
      links_.push_back(s);
      ++n;
    }
  }
  void TearDown() override {
    a_client_.reset();
    b_client_.reset();
    server_.reset();
    for (const std::string& ns : made_) (void)ip({"netns", "del", ns});
  }
  /// An in-process memserver inside the server's namespace: a thread enters it and starts
  /// the server, whose sockets and threads stay there.
  Status start_server(memserver::ServerOptions o) {
    Status st = Internal("not started");
    std::thread([&] {
      const int fd = ::open(("/var/run/netns/" + srv_).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
        st = Internal("cannot enter " + srv_);
        if (fd >= 0) ::close(fd);
        return;
      }
      ::close(fd);
      auto s = memserver::Server::start(std::move(o));
      if (!s.ok()) {
        st = s.status();
        return;
      }
      server_ = std::move(s).value();
      st = Status::Ok();
    }).join();
    return st;
  }

  std::string srv_, a_, b_;
  std::vector<std::string> made_, links_;
  std::unique_ptr<memserver::Server> server_;
  std::unique_ptr<Client> a_client_, b_client_;
};

TEST_F(VanishTest, AVanishedClientLosesItsSlabsAfterTheGraceAStalledOneKeepsAndResumes) {
  memserver::ServerOptions o;
  o.core.capacity_bytes = 64u << 20;
  o.core.token = kToken;
  o.core.lease_grace = std::chrono::hours(1);  // run out below by reap_expired, not by waiting
  o.tcp = memserver::ListenAddress{"0.0.0.0", 0};
  o.tcp_options.idle_timeout = std::chrono::milliseconds(500);
  ASSERT_TRUE(start_server(o).ok());
  memserver::Core& core = server_->core();
  const std::string port = std::to_string(server_->tcp_port());

  a_client_ = std::make_unique<Client>();
  b_client_ = std::make_unique<Client>();
  ASSERT_TRUE(a_client_->start(a_, "tcp://10.231.1.1:" + port, nullptr));  // no resume, no PING
  ASSERT_TRUE(b_client_->start(b_, "tcp://10.231.2.1:" + port, "resume"));
  ASSERT_EQ(a_client_->line(), "ready\n");
  ASSERT_EQ(b_client_->line(), "ready\n");
  ASSERT_EQ(core.stats().slabs, 4u);

  // A's network vanishes (its link is deleted: no FIN, no RST); B stops.
  ASSERT_EQ(kill(b_client_->pid, SIGSTOP), 0);
  ASSERT_TRUE(ip({"-n", srv_, "link", "del", links_[0]}).ok());
  // The idle timeout finds both silent: both sessions are detached, their slabs kept.
  ASSERT_TRUE(eventually([&] { return core.sessions_detached() == 2; }, std::chrono::seconds(30)));
  EXPECT_EQ(core.stats().slabs, 4u);

  // B runs again: its heartbeat finds the connection closed, it reconnects and resumes, and
  // its data is there.
  ASSERT_EQ(kill(b_client_->pid, SIGCONT), 0);
  ASSERT_TRUE(eventually([&] { return core.sessions_resumed() == 1; }, std::chrono::seconds(30)));
  std::string l;
  for (int i = 0; i < 50 && l != "intact\n"; ++i) {  // bounded: B prints every 100 ms
    l = b_client_->line();
    ASSERT_NE(l, "WRONG DATA\n");
    ASSERT_NE(l, "");
  }
  EXPECT_EQ(l, "intact\n");
  // The grace runs out: only the vanished client's slabs go.
  EXPECT_EQ(core.reap_expired(Clock::now() + std::chrono::hours(2)), 1u);
  EXPECT_EQ(core.stats().slabs, 2u);
  EXPECT_EQ(core.sessions_detached(), 0u);
}

}  // namespace
}  // namespace farmem::test
