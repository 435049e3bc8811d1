// farmem-memserver run as a service, as its own process: readiness through a fake systemd
// NOTIFY_SOCKET, SIGHUP reopening --log-file (logrotate), --config files agreeing with flags,
// and farmemctl reading it. Loopback only; every child is killed and reaped by its owner.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "farmem/farmem.h"
#include "test/support/http_get.h"
#include "test/support/memserver_process.h"
#include "test/support/test_server.h"
#include "transport/connect.h"

namespace farmem::test {
namespace {

namespace fs = std::filesystem;
constexpr auto kTimeout = std::chrono::seconds(10);

/// A unix datagram socket playing systemd's notification socket (abstract namespace: nothing
/// to clean up on disk).
class FakeNotifySocket {
 public:
  FakeNotifySocket() {
    static int n = 0;
    name_ = "@farmem-test-notify-" + std::to_string(getpid()) + "-" + std::to_string(n++);
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path + 1, name_.data() + 1, name_.size() - 1);  // [0] = '\0': abstract
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size());
    bound_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&a), len) == 0;
  }
  ~FakeNotifySocket() {
    if (fd_ >= 0) close(fd_);
  }
  bool bound() const { return bound_; }
  const std::string& name() const { return name_; }
  /// The next datagram within `deadline` ("" when none came).
  std::string next(std::chrono::milliseconds deadline = kTimeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(deadline.count())) <= 0) return "";
    char buf[4096];
    const ssize_t n = recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
  }

 private:
  std::string name_;
  int fd_ = -1;
  bool bound_ = false;
};

bool has_line(const std::string& msg, const std::string& line) {
  std::istringstream in(msg);
  std::string l;
  while (std::getline(in, l)) {
    if (l == line) return true;
  }
  return false;
}

Result<std::unique_ptr<transport::Connection>> connect_tcp(std::uint16_t port) {
  transport::ConnectOptions co;
  co.token = kToken;
  return transport::connect("tcp://127.0.0.1:" + std::to_string(port), co);
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// A scratch folder, removed with everything in it.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "farmem-service-XXXXXX").string();
    if (mkdtemp(t.data()) != nullptr) path = t;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

TEST(Service, NotifiesReadyWhenServingReloadingOnHupAndStoppingOnTerm) {
  FakeNotifySocket notify;
  ASSERT_TRUE(notify.bound());
  MemserverProcess ms;
  ASSERT_TRUE(ms.start({"--tcp", "127.0.0.1:0", "--token", kToken, "--capacity", "64M",
                        "--log-level", "error"},
                       {"tcp"}, {{"NOTIFY_SOCKET", notify.name()}})
                  .ok());
  const std::string ready = notify.next();
  ASSERT_TRUE(has_line(ready, "READY=1")) << "got: '" << ready << "'";
  EXPECT_TRUE(has_line(ready, "STATUS=serving tcp port " + std::to_string(ms.port("tcp"))))
      << ready;
  auto c = connect_tcp(ms.port("tcp"));  // ready means serving
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  ASSERT_TRUE(transport::alloc_slab(**c, 2u << 20, kTimeout).ok());

  ASSERT_TRUE(ms.signal(SIGHUP).ok());
  EXPECT_TRUE(has_line(notify.next(), "RELOADING=1"));
  EXPECT_TRUE(has_line(notify.next(), "READY=1"));
  auto st = transport::server_stats(**c, kTimeout);  // the same session survived the HUP
  ASSERT_TRUE(st.ok()) << st.status().to_string();
  EXPECT_EQ(st->used_bytes, 2u << 20);

  ASSERT_TRUE(ms.signal(SIGTERM).ok());
  EXPECT_TRUE(has_line(notify.next(), "STOPPING=1"));
  auto code = ms.wait_exit(kTimeout);
  ASSERT_TRUE(code.ok()) << code.status().to_string();
  EXPECT_EQ(*code, 0);
}

TEST(Service, HupReopensTheLogFileAfterItWasRotatedAndKeepsServing) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const fs::path log = dir.path / "memserver.log", rotated = dir.path / "memserver.log.1";
  MemserverProcess ms;
  ASSERT_TRUE(ms.start({"--tcp", "127.0.0.1:0", "--token", kToken, "--log-level", "info",
                        "--log-file", log.string()},
                       {"tcp"})
                  .ok());
  {
    auto c = connect_tcp(ms.port("tcp"));
    ASSERT_TRUE(c.ok());
  }
  ASSERT_TRUE(eventually([&] { return read_file(log).find("closed") != std::string::npos; }));
  fs::rename(log, rotated);  // logrotate's move
  ASSERT_TRUE(ms.signal(SIGHUP).ok());
  ASSERT_TRUE(eventually([&] { return fs::exists(log); })) << "no new log after SIGHUP";

  auto c = connect_tcp(ms.port("tcp"));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  ASSERT_TRUE(transport::set_label(**c, "after-rotation", kTimeout).ok());
  ASSERT_TRUE(transport::alloc_slab(**c, 2u << 20, kTimeout).ok());
  // Both lines, whichever thread writes last: the reopen's line comes from the signal thread.
  ASSERT_TRUE(eventually([&] {
    const std::string now = read_file(log);
    return now.find("after-rotation") != std::string::npos &&
           now.find("log reopened") != std::string::npos;
  })) << read_file(log);
  EXPECT_EQ(read_file(rotated).find("after-rotation"), std::string::npos);
  EXPECT_NE(read_file(rotated).find("opened"), std::string::npos);  // the old lines stayed
  EXPECT_EQ(kill(ms.pid(), 0), 0);  // still running
}

TEST(Service, ConfigFileAndFlagsAgree) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  const fs::path conf = dir.path / "memserver.conf";
  std::ofstream(conf) << "# a test config\ntcp = \"127.0.0.1:0\"\ncapacity = \"48M\"\n"
                      << "chunk = \"4M\"\ntoken = \"" << kToken << "\"\nlog-level = \"error\"\n"
                      << "metrics = \"127.0.0.1:0\"\n";
  const std::vector<std::string> flags{"--tcp", "127.0.0.1:0", "--capacity", "48M", "--chunk",
                                       "4M", "--token", kToken, "--log-level", "error",
                                       "--metrics", "127.0.0.1:0"};
  std::vector<std::string> by_flags{FARMEM_MEMSERVER_BIN};
  by_flags.insert(by_flags.end(), flags.begin(), flags.end());
  by_flags.push_back("--print-config");
  auto a = run_program(by_flags);
  auto b = run_program({FARMEM_MEMSERVER_BIN, "--config", conf.string(), "--print-config"});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->exit_code, 0);
  EXPECT_EQ(b->exit_code, 0);
  EXPECT_NE(a->out.find("capacity=\"48M\""), std::string::npos) << a->out;
  EXPECT_EQ(a->out, b->out);

  // And the server started from the file behaves as the flags say: capacity, chunk, metrics.
  MemserverProcess ms;
  ASSERT_TRUE(ms.start({"--config", conf.string()}, {"tcp", "metrics"}).ok());
  auto c = connect_tcp(ms.port("tcp"));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  auto st = transport::server_stats(**c, kTimeout);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->capacity_bytes, 48u << 20);
  auto slab = transport::alloc_slab(**c, 1, kTimeout);
  ASSERT_TRUE(slab.ok());
  EXPECT_EQ(slab->bytes, 4u << 20);  // the file's chunk
  ASSERT_NE(ms.port("metrics"), 0);  // the file's metrics endpoint, scraped
  auto [code, body] = http_get("http://127.0.0.1:" + std::to_string(ms.port("metrics")) + "/metrics");
  EXPECT_EQ(code, 200) << body;
  EXPECT_EQ(prometheus_value(body, "farmem_memserver_capacity_bytes"), 48u << 20);
  EXPECT_EQ(prometheus_value(body, "farmem_memserver_used_bytes"), 4u << 20);
  EXPECT_EQ(prometheus_value(body, "farmem_memserver_sessions"), 1);

  // A flag wins over the file; a misspelt key in the file is an error, not ignored.
  MemserverProcess over;
  ASSERT_TRUE(over.start({"--config", conf.string(), "--capacity", "32M"}, {"tcp"}).ok());
  auto c2 = connect_tcp(over.port("tcp"));
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(transport::server_stats(**c2, kTimeout)->capacity_bytes, 32u << 20);
  std::ofstream(conf, std::ios::app) << "capacty = \"1G\"\n";
  auto bad = run_program({FARMEM_MEMSERVER_BIN, "--config", conf.string(), "--print-config"});
  ASSERT_TRUE(bad.ok());
  EXPECT_NE(bad->exit_code, 0);
}

TEST(Farmemctl, ListsServersAndOneRuntimesFootprint) {
  MemserverProcess ms;
  ASSERT_TRUE(ms.start({"--tcp", "127.0.0.1:0", "--token", kToken, "--capacity", "96M",
                        "--log-level", "error"},
                       {"tcp"})
                  .ok());
  const std::string url = "tcp://127.0.0.1:" + std::to_string(ms.port("tcp"));
  RuntimeOptions ro;
  ro.servers = {url};
  ro.auth_token = kToken;
  ro.slab_bytes = 16u << 20;
  ro.local_buffer_bytes = 1u << 20;
  ro.cache_budget_bytes = 1u << 20;
  ro.client_label = "ctl-test-client";
  auto rt = Runtime::open(ro);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  ASSERT_TRUE((*rt)->allocate(32u << 20).ok());

  auto servers = run_program({FARMEMCTL_BIN, "--token", kToken, "--json", "servers", url});
  ASSERT_TRUE(servers.ok());
  EXPECT_EQ(servers->exit_code, 0) << servers->out;
  const auto s = nlohmann::json::parse(servers->out, nullptr, false);
  ASSERT_TRUE(s.is_array() && s.size() == 1) << servers->out;
  EXPECT_EQ(s[0]["capacity_bytes"], 96u << 20);
  EXPECT_EQ(s[0]["used_bytes"], 32u << 20);
  EXPECT_EQ(s[0]["free_bytes"], 64u << 20);
  EXPECT_EQ(s[0]["clients"], 1);

  auto sessions = run_program({FARMEMCTL_BIN, "--token", kToken, "--json", "sessions", url});
  ASSERT_TRUE(sessions.ok());
  EXPECT_EQ(sessions->exit_code, 0) << sessions->out;
  const auto l = nlohmann::json::parse(sessions->out, nullptr, false);
  ASSERT_TRUE(l.is_array() && l.size() == 1) << sessions->out;  // farmemctl's own left out
  EXPECT_EQ(l[0]["client"], "ctl-test-client");
  EXPECT_EQ(l[0]["leased_bytes"], 32u << 20);
  EXPECT_EQ(l[0]["slabs"], 1);  // larger than a slab: one slab of its own

  auto fp = run_program({FARMEMCTL_BIN, "--token", kToken, "--json", "footprint", "--client",
                         "ctl-test-client", url, "tcp://127.0.0.1:1"});
  ASSERT_TRUE(fp.ok());
  EXPECT_EQ(fp->exit_code, 1);  // one server was unreachable
  const auto f = nlohmann::json::parse(fp->out, nullptr, false);
  ASSERT_TRUE(f.is_object()) << fp->out;
  EXPECT_EQ(f["leased_bytes"], 32u << 20);
  EXPECT_EQ(f["servers"][0]["leased_bytes"], 32u << 20);
  EXPECT_EQ(f["servers"][1]["ok"], false);

  auto table = run_program({FARMEMCTL_BIN, "--token", kToken, "footprint", "--client",
                            "ctl-test-client", url});
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->exit_code, 0);
  EXPECT_NE(table->out.find("32.0 MiB"), std::string::npos) << table->out;
  auto nobody = run_program({FARMEMCTL_BIN, "--token", kToken, "footprint", "--client", "nobody", url});
  ASSERT_TRUE(nobody.ok());
  EXPECT_EQ(nobody->exit_code, 1);
  auto wrong = run_program({FARMEMCTL_BIN, "--token", "wrong", "servers", url});
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(wrong->exit_code, 1);
  EXPECT_NE(wrong->out.find("unreachable"), std::string::npos) << wrong->out;
}

}  // namespace
}  // namespace farmem::test
