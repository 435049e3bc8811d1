// Serves TCP clients of a Core: framed, pipelined requests (see transport/proto/wire.h).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "farmem/status.h"
#include "memserver/core.h"
#include "transport/tcp/tls.h"

namespace farmem::memserver {

/// Most worker threads a TCP listener runs: connections do not need a thread each, and a
/// worker only ever waits on one client for a bounded time, so more would only add switches.
inline constexpr std::size_t kMaxTcpWorkers = 64;

struct TcpListenerOptions {
  /// Connections open at once, in every state (handshake included); beyond it new ones are
  /// refused with kResourceExhausted. An idle connection costs a socket and a few KiB.
  std::size_t max_connections = 1024;
  /// Connections one source address may hold; 0: a quarter of max_connections (at least 1).
  /// A Runtime holds one connection per memserver, so a quarter lets 256 processes of one
  /// compute node in at the default, while one host (or one runaway client) cannot lock
  /// every other node out.
  std::size_t max_connections_per_host = 0;
  /// A connection that receives nothing for this long (between frames) is closed; 0: never.
  /// Runtimes PING an idle connection (RuntimeOptions::heartbeat_interval), so this finds
  /// clients whose network vanished.
  std::chrono::milliseconds idle_timeout = std::chrono::minutes(1);
  /// A frame whose first bytes arrived this long ago and which is still incomplete (half a
  /// header, a WRITE body that stalls) closes its connection; 0: never.
  std::chrono::milliseconds frame_timeout = std::chrono::seconds(10);
  /// Worker threads that serve readable connections; 0: twice the CPUs, at least 8. At most
  /// kMaxTcpWorkers.
  std::size_t workers = 0;
  /// Set: every connection starts with a TLS handshake (transport/tcp/tls.h), within the
  /// handshake timeout; a plain farmem client is told to use tls://.
  std::shared_ptr<const net::TlsContext> tls;
};

class TcpListener {
 public:
  /// Binds host:port (port 0: any free port) and starts accepting. Fails on options that
  /// cannot work (max_connections 0).
  static Result<std::unique_ptr<TcpListener>> start(Core& core, const std::string& host,
                                                    std::uint16_t port,
                                                    const TcpListenerOptions& options = {});
  /// Stops accepting, disconnects every client (their sessions close, slabs reclaimed).
  virtual ~TcpListener() = default;
  virtual std::uint16_t port() const = 0;
};

}  // namespace farmem::memserver
