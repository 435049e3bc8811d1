// A whole memserver: one Core plus its TCP and RDMA listeners.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "farmem/status.h"
#include "memserver/core.h"
#include "memserver/rdma_listener.h"
#include "memserver/tcp_listener.h"

namespace farmem::memserver {

struct ListenAddress {
  std::string host;
  std::uint16_t port = 0;  ///< 0: pick a free port (see Server::tcp_port())
};

struct ServerOptions {
  CoreOptions core;
  std::optional<ListenAddress> tcp;   ///< serve TCP clients here
  TcpListenerOptions tcp_options;     ///< its connection limits, timeouts and workers
  std::optional<ListenAddress> rdma;  ///< serve RDMA (rdma_cm) clients here
  RdmaListenerOptions rdma_options;   ///< its handshake and idle timeouts
  /// The capacity moves (--capacity auto, memserver/auto_capacity.h): it may start below one
  /// chunk, even at 0, when the host has nothing to spare yet.
  bool auto_capacity = false;
  /// Serve without any token or tenant: anyone who reaches the memserver may use it. Without
  /// it, start() refuses a memserver that has no credentials.
  bool insecure = false;
};

/// The credentials of `options`: some (or `insecure`), within the sizes the protocol takes,
/// tenant names unique. kInvalidArgument naming the culprit.
Status check_credentials(const ServerOptions& options);

class Server {
 public:
  /// Starts every configured listener; fails if any cannot start (no silent partial server).
  static Result<std::unique_ptr<Server>> start(ServerOptions options);
  ~Server();  // stops the listeners, disconnects every client, frees every slab

  Core& core() { return *core_; }
  std::uint16_t tcp_port() const;   ///< 0 when not listening on TCP
  std::uint16_t rdma_port() const;  ///< 0 when not listening on RDMA

 private:
  Server() = default;
  std::unique_ptr<Core> core_;
  std::unique_ptr<TcpListener> tcp_;
  std::unique_ptr<RdmaListener> rdma_;
};

/// Parses "host:port" ("[v6]:port" too).
Result<ListenAddress> parse_listen_address(std::string_view text);
/// Parses "64M", "2G", "4096" (binary units: K=1024).
Result<std::uint64_t> parse_size(std::string_view text);

}  // namespace farmem::memserver
