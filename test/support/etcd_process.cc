#include "test/support/etcd_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "registry/etcd_client.h"
#include "test/support/test_server.h"

namespace farmem::test {

namespace {

using Clock = std::chrono::steady_clock;

/// How long a child may take to come up on a loaded 2-core host.
constexpr auto kStartLimit = std::chrono::seconds(30);

/// fork + exec of argv; stdout to `stdout_fd`, stderr to `stderr_fd` (-1: inherited).
pid_t spawn(const std::vector<std::string>& argv, int stdout_fd, int stderr_fd) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (stdout_fd >= 0) dup2(stdout_fd, STDOUT_FILENO);
    if (stderr_fd >= 0) dup2(stderr_fd, STDERR_FILENO);
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

/// One line from `f` within `limit` (poll first: a hung child must not hang the test).

}  // namespace

Result<std::uint16_t> free_loopback_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Internal("socket failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return Internal("cannot bind a loopback port");
  }
  close(fd);
  return static_cast<std::uint16_t>(ntohs(a.sin_port));
}

// ---- MemserverProcess ----

Result<std::unique_ptr<EtcdProcess>> EtcdProcess::start() {
  auto e = std::unique_ptr<EtcdProcess>(new EtcdProcess);
  std::string tmpl = (std::filesystem::temp_directory_path() / "farmem-etcd-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) return Internal("mkdtemp failed");
  e->dir_ = tmpl;
  FARMEM_ASSIGN_OR_RETURN(e->client_port_, free_loopback_port());
  FARMEM_ASSIGN_OR_RETURN(e->peer_port_, free_loopback_port());
  FARMEM_RETURN_IF_ERROR(e->launch());
  return e;
}

EtcdProcess::~EtcdProcess() {
  kill_now();
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

void EtcdProcess::kill_now() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

Status EtcdProcess::restart(bool fresh_data) {
  kill_now();
  if (fresh_data) {
    std::error_code ec;
    std::filesystem::remove_all(dir_ / "data", ec);
  }
  return launch();
}

std::string EtcdProcess::registry_url() const {
  return "etcd://127.0.0.1:" + std::to_string(client_port_);
}

Status EtcdProcess::launch() {
  const std::string client = "http://127.0.0.1:" + std::to_string(client_port_);
  const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  const std::vector<std::string> argv{
      "etcd", "--name", "farmem-test", "--data-dir", (dir_ / "data").string(),
      "--listen-client-urls", client, "--advertise-client-urls", client,
      "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
      "--initial-cluster", "farmem-test=" + peer, "--logger", "zap", "--log-level", "warn"};
  const int log = open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return Internal("cannot open " + log_path().string());
  pid_ = spawn(argv, log, log);
  close(log);
  if (pid_ < 0) return Internal("fork failed");
  registry::EtcdClient client_api({"127.0.0.1", client_port_, std::chrono::milliseconds(500)});
  const auto deadline = Clock::now() + kStartLimit;
  Status last;
  while (Clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Unavailable("etcd exited at start (status " + std::to_string(status) +
                         "; 127: no etcd binary, run ci/install-deps build); see " +
                         log_path().string());
    }
    last = client_api.health();
    if (last.ok()) return Status::Ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return TimedOut("etcd not healthy within 30 s: " + last.to_string() + "; see " +
                  log_path().string());
}

}  // namespace farmem::test
