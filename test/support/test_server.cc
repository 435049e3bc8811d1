#include "test/support/test_server.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "transport/connect.h"
#include "transport/fault/fault.h"

namespace farmem::test {

namespace {
std::string ipv4_of(const std::string& netdev) {
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return "";
  std::string out;
  for (ifaddrs* i = ifs; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    if (netdev != i->ifa_name) continue;
    char buf[INET_ADDRSTRLEN];
    auto* sin = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
    if (inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf) != nullptr) out = buf;
    break;
  }
  freeifaddrs(ifs);
  return out;
}
}  // namespace

std::string rdma_test_address() {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path root = "/sys/class/infiniband";
  if (!fs::exists(root, ec)) return "";
  for (const auto& dev : fs::directory_iterator(root, ec)) {
    // rxe and RoCE devices name their netdev in the GID attributes of port 1.
    std::ifstream in(dev.path() / "ports/1/gid_attrs/ndevs/0");
    std::string netdev;
    if (in >> netdev) {
      auto addr = ipv4_of(netdev);
      if (!addr.empty()) return addr;
    }
  }
  return "";
}

bool rdma_required() {
  const char* v = std::getenv("FARMEM_REQUIRE_RDMA");
  return v != nullptr && std::string(v) == "1";
}

Result<std::unique_ptr<TestServer>> TestServer::start(const std::string& backend,
                                                      memserver::CoreOptions options,
                                                      memserver::RdmaListenerOptions rdma) {
  if (options.token.empty()) options.token = kToken;
  auto ts = std::unique_ptr<TestServer>(new TestServer);
  ts->backend_ = backend;
  if (backend == "local") {
    ts->local_core_ = std::make_shared<memserver::Core>(std::move(options));
    ts->url_ = "local";
    return ts;
  }
  memserver::ServerOptions so;
  so.core = std::move(options);
  if (backend == "tcp" || backend == "fault") {
    so.tcp = memserver::ListenAddress{"127.0.0.1", 0};
  } else if (backend == "verbs") {
    const auto addr = rdma_test_address();
    if (addr.empty()) return Unavailable("no RDMA device with an IPv4 address");
    so.rdma = memserver::ListenAddress{addr, 0};
    so.rdma_options = rdma;
  } else {
    return InvalidArgument("unknown backend " + backend);
  }
  FARMEM_ASSIGN_OR_RETURN(ts->server_, memserver::Server::start(std::move(so)));
  if (backend == "tcp" || backend == "fault") {
    ts->url_ = "tcp://127.0.0.1:" + std::to_string(ts->server_->tcp_port());
  } else {
    ts->url_ = "rdma://" + rdma_test_address() + ":" + std::to_string(ts->server_->rdma_port());
  }
  return ts;
}

TestServer::~TestServer() = default;

Result<std::unique_ptr<transport::Connection>> TestServer::connect() const {
  return connect(kToken);
}

Result<std::unique_ptr<transport::Connection>> TestServer::connect_unchecked() const {
  transport::ConnectOptions co;
  co.token = kToken;
  co.check_leases = false;
  return transport::connect(url_, co, local_core_);
}

Result<std::unique_ptr<transport::Connection>> TestServer::connect(
    const std::string& token) const {
  transport::ConnectOptions co;
  co.token = token;
  FARMEM_ASSIGN_OR_RETURN(auto conn, transport::connect(url_, co, local_core_));
  if (backend_ != "fault") return conn;
  // No faults planned: the wrapper must pass the whole contract on its own; tests that
  // inject faults change the plan through the FaultConnection.
  return std::unique_ptr<transport::Connection>(
      transport::wrap_with_faults(std::move(conn), transport::FaultPlan{}));
}

}  // namespace farmem::test
