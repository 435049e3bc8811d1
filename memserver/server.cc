#include "memserver/server.h"

#include <charconv>
#include <set>
#include <string_view>

#include "common/log.h"
#include "memserver/rdma_listener.h"
#include "memserver/rdma_numa.h"
#include "memserver/tcp_listener.h"

namespace farmem::memserver {

Status check_credentials(const ServerOptions& options) {
  const CoreOptions& core = options.core;
  if (core.token.empty() && core.tenants.empty() && !options.insecure) {
    return InvalidArgument("no credentials: give a token (--token-file) or tenants (--tenants), "
                           "or --insecure to serve anyone who can reach this memserver");
  }
  if (core.token.size() > proto::kMaxSecretBytes) {
    return InvalidArgument("auth token of " + std::to_string(core.token.size()) +
                           " bytes; at most " + std::to_string(proto::kMaxSecretBytes));
  }
  std::set<std::string_view> names;
  for (const TenantConfig& t : core.tenants) {
    const std::string who = "tenant '" + t.name + "'";
    if (t.name.empty() || t.name.size() > proto::kMaxTenantBytes) {
      return InvalidArgument(who + ": a name is 1.." + std::to_string(proto::kMaxTenantBytes) +
                             " bytes");
    }
    if (t.secret.empty() || t.secret.size() > proto::kMaxSecretBytes) {
      return InvalidArgument(who + ": a secret is 1.." + std::to_string(proto::kMaxSecretBytes) +
                             " bytes");
    }
    if (!names.insert(t.name).second) return InvalidArgument(who + " is listed twice");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Server>> Server::start(ServerOptions options) {
  if (!options.tcp && !options.rdma) {
    return InvalidArgument("nothing to listen on: give a TCP and/or an RDMA address");
  }
  if (options.core.chunk_bytes == 0 ||
      (!options.auto_capacity && options.core.capacity_bytes < options.core.chunk_bytes)) {
    return InvalidArgument("capacity (" + std::to_string(options.core.capacity_bytes) +
                           ") must be at least one chunk (" +
                           std::to_string(options.core.chunk_bytes) + ")");
  }
  FARMEM_RETURN_IF_ERROR(check_credentials(options));
  // Slabs live on the NUMA node of the RDMA device unless the operator chose one.
  if (options.core.numa_node < 0 && options.rdma) {
    options.core.numa_node = numa_node_of_rdma_address(options.rdma->host);
  }
  auto server = std::unique_ptr<Server>(new Server);
  server->core_ = std::make_unique<Core>(options.core);
  if (!server->core_->auth_required()) {
    log().warn("--insecure: no token and no tenants: any client that can reach this memserver "
               "may lease, read and write its memory");
  }
  if (options.rdma) {
    auto l = RdmaListener::start(*server->core_, options.rdma->host, options.rdma->port,
                                 options.rdma_options);
    if (!l.ok()) return l.status().with_context("RDMA listener on " + options.rdma->host);
    server->rdma_ = std::move(l).value();
  }
  if (options.tcp) {
    auto l = TcpListener::start(*server->core_, options.tcp->host, options.tcp->port,
                                options.tcp_options);
    if (!l.ok()) return l.status().with_context("TCP listener on " + options.tcp->host);
    server->tcp_ = std::move(l).value();
  }
  return server;
}

Server::~Server() {
  // Listeners first: they close their sessions, which returns every slab to the Core's pool.
  tcp_.reset();
  rdma_.reset();
}

std::uint16_t Server::tcp_port() const { return tcp_ ? tcp_->port() : 0; }
std::uint16_t Server::rdma_port() const { return rdma_ ? rdma_->port() : 0; }

Result<ListenAddress> parse_listen_address(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) {
    return InvalidArgument("'" + std::string(text) + "' is not host:port");
  }
  ListenAddress a;
  a.host = std::string(text.substr(0, colon));
  if (a.host.size() > 2 && a.host.front() == '[' && a.host.back() == ']') {
    a.host = a.host.substr(1, a.host.size() - 2);
  }
  unsigned port = 0;
  const auto p = text.substr(colon + 1);
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
  if (ec != std::errc() || end != p.data() + p.size() || port > 65535) {
    return InvalidArgument("'" + std::string(text) + "': bad port");
  }
  a.port = static_cast<std::uint16_t>(port);
  return a;
}

Result<std::uint64_t> parse_size(std::string_view text) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end == text.data()) {
    return InvalidArgument("'" + std::string(text) + "' is not a size (e.g. 4096, 64M, 2G)");
  }
  std::string_view unit(end, text.data() + text.size() - end);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.remove_suffix(1);
  if (!unit.empty() && (unit.back() == 'i')) unit.remove_suffix(1);
  int shift = 0;
  if (unit.empty()) shift = 0;
  else if (unit == "K" || unit == "k") shift = 10;
  else if (unit == "M" || unit == "m") shift = 20;
  else if (unit == "G" || unit == "g") shift = 30;
  else if (unit == "T" || unit == "t") shift = 40;
  else return InvalidArgument("'" + std::string(text) + "': unknown unit (K, M, G, T)");
  if (shift > 0 && n > (~std::uint64_t{0} >> shift)) {
    return InvalidArgument("'" + std::string(text) + "' overflows");
  }
  return n << shift;
}

}  // namespace farmem::memserver
