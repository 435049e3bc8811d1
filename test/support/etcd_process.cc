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

#include <algorithm>
#include <thread>

#include "registry/etcd_client.h"
#include "test/support/http_get.h"
#include "test/support/test_server.h"

namespace farmem::test {

namespace {

using Clock = std::chrono::steady_clock;

/// How long a child may take to come up on a loaded 2-core host.
constexpr auto kStartLimit = std::chrono::seconds(30);

/// fork + exec of argv; stdout to `stdout_fd`, stderr to `stderr_fd` (-1: inherited).
pid_t spawn_child(const std::vector<std::string>& argv, int stdout_fd, int stderr_fd) {
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

// ---- EtcdProcess ----

Result<std::unique_ptr<EtcdProcess>> EtcdProcess::prepare(std::vector<std::uint16_t>& taken) {
  auto e = std::unique_ptr<EtcdProcess>(new EtcdProcess);
  std::string tmpl = (std::filesystem::temp_directory_path() / "farmem-etcd-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) return Internal("mkdtemp failed");
  e->dir_ = tmpl;
  // A port just freed can come back from the next bind: several members need distinct ones.
  for (std::uint16_t* port : {&e->client_port_, &e->peer_port_}) {
    for (int tries = 0; *port == 0 || std::find(taken.begin(), taken.end(), *port) != taken.end();
         ++tries) {
      if (tries == 100) return Internal("no distinct free loopback ports for etcd");
      FARMEM_ASSIGN_OR_RETURN(*port, free_loopback_port());
    }
    taken.push_back(*port);
  }
  return e;
}

EtcdTlsSetup EtcdTlsSetup::from(const TestCerts& certs, bool client_cert_auth) {
  return {certs.ca, certs.server_cert, certs.server_key, client_cert_auth,
          {certs.ca, certs.client_cert, certs.client_key}};
}

Result<std::unique_ptr<EtcdProcess>> EtcdProcess::start(std::optional<EtcdTlsSetup> tls) {
  std::vector<std::uint16_t> taken;
  FARMEM_ASSIGN_OR_RETURN(auto e, prepare(taken));
  e->tls_ = std::move(tls);
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
    if (!initial_cluster_.empty()) {
      return InvalidArgument("a cluster member cannot restart with fresh data");
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_ / "data", ec);
  }
  return launch();
}

std::string EtcdProcess::registry_url() const {
  return "etcd://" + registry::to_string(endpoint());
}

std::string EtcdProcess::peer_url() const {
  return "http://127.0.0.1:" + std::to_string(peer_port_);
}

Status EtcdProcess::launch() {
  FARMEM_RETURN_IF_ERROR(spawn());
  return wait_healthy(Clock::now() + kStartLimit);
}

Status EtcdProcess::spawn() {
  const std::string client =
      (tls_ ? "https://" : "http://") + std::string("127.0.0.1:") + std::to_string(client_port_);
  const std::string peer = peer_url();
  std::vector<std::string> argv{
      "etcd", "--name", name_, "--data-dir", (dir_ / "data").string(),
      "--listen-client-urls", client, "--advertise-client-urls", client,
      "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
      "--initial-cluster", initial_cluster_.empty() ? name_ + "=" + peer : initial_cluster_,
      "--logger", "zap", "--log-level", "warn"};
  if (tls_) {
    argv.insert(argv.end(), {"--cert-file", tls_->server_cert, "--key-file", tls_->server_key,
                             "--trusted-ca-file", tls_->ca});
    if (tls_->client_cert_auth) argv.push_back("--client-cert-auth");
  }
  if (!initial_cluster_.empty()) {
    // Read only when the data dir is empty: a restarted member rejoins from its data.
    argv.insert(argv.end(), {"--initial-cluster-state", "new", "--initial-cluster-token",
                             cluster_token_});
  }
  const int log = open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return Internal("cannot open " + log_path().string());
  pid_ = spawn_child(argv, log, log);
  close(log);
  if (pid_ < 0) return Internal("fork failed");
  return Status::Ok();
}

Status EtcdProcess::wait_healthy(Clock::time_point deadline) {
  registry::EtcdClient client_api({{endpoint()}, std::chrono::milliseconds(500),
                                   tls_ ? tls_->client : registry::EtcdTls{}});
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
  return TimedOut("etcd " + name_ + " not healthy within 30 s: " + last.to_string() + "; see " +
                  log_path().string());
}

// ---- EtcdCluster ----

Result<std::unique_ptr<EtcdCluster>> EtcdCluster::start(std::size_t members) {
  if (members == 0 || members > 7) return InvalidArgument("an etcd test cluster has 1..7 members");
  auto c = std::unique_ptr<EtcdCluster>(new EtcdCluster);
  std::vector<std::uint16_t> taken;
  std::string initial;
  for (std::size_t i = 0; i < members; ++i) {
    FARMEM_ASSIGN_OR_RETURN(auto e, EtcdProcess::prepare(taken));
    e->name_ = "farmem-test-" + std::to_string(i);
    initial += (i == 0 ? "" : ",") + e->name_ + "=" + e->peer_url();
    c->members_.push_back(std::move(e));
  }
  // Unique per cluster, so that a member never joins another test's cluster by a reused port.
  const std::string token = "farmem-" + c->members_[0]->dir_.filename().string();
  for (auto& e : c->members_) {
    e->initial_cluster_ = initial;
    e->cluster_token_ = token;
    FARMEM_RETURN_IF_ERROR(e->spawn());
  }
  // All are running before any is waited for: a member is healthy only once a quorum elected
  // a leader.
  const auto deadline = Clock::now() + kStartLimit;
  for (auto& e : c->members_) FARMEM_RETURN_IF_ERROR(e->wait_healthy(deadline));
  return c;
}

std::string EtcdCluster::registry_url(std::size_t first) const {
  std::string url = "etcd://" + registry::to_string(members_.at(first)->endpoint());
  for (std::size_t i = 0; i < members_.size(); ++i) {
    if (i != first) url += "," + registry::to_string(members_[i]->endpoint());
  }
  return url;
}

Result<std::size_t> EtcdCluster::leader() const {
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    for (std::size_t i = 0; i < members_.size(); ++i) {
      if (!members_[i]->running()) continue;
      const auto [code, body] = http_get("http://127.0.0.1:" +
                                         std::to_string(members_[i]->client_port()) + "/metrics");
      if (code == 200 && prometheus_value(body, "etcd_server_is_leader") == 1) return i;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return TimedOut("no etcd member said it leads within 10 s");
}

std::vector<registry::EtcdEndpoint> EtcdCluster::endpoints() const {
  std::vector<registry::EtcdEndpoint> out;
  for (const auto& e : members_) out.push_back(e->endpoint());
  return out;
}

}  // namespace farmem::test
