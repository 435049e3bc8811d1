// Serves RDMA clients of a Core through rdma_cm: each client gets its own protection domain
// and RC queue pair; control messages travel as SEND/RECV, data as one-sided READ/WRITE.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "farmem/status.h"
#include "memserver/core.h"

namespace farmem::memserver {

/// When the listener gives up on a client. Checked about once a second (the event thread's
/// longest sleep), so a limit is enforced up to a second late.
struct RdmaListenerOptions {
  /// A client must pass AUTH this long after its connect request was accepted, or it is
  /// disconnected (its queue pair and unauthenticated session freed). TCP's kHelloTimeout.
  std::chrono::milliseconds handshake_timeout{10'000};
  /// Disconnect a client that sent no control request (PING included) for this long; its
  /// session is then kept for the lease grace. One-sided READ/WRITE never reaches the
  /// memserver's CPU, so a client that only reads and writes must PING (runtimes do, every
  /// heartbeat_interval); else it is cut and resumes. 0: never. The memserver's
  /// --idle-timeout.
  std::chrono::milliseconds idle_timeout{60'000};
};

class RdmaListener {
 public:
  /// Binds host:port with rdma_cm (port 0: any free port) and starts accepting. Fails with
  /// kUnavailable when no RDMA device serves that address.
  static Result<std::unique_ptr<RdmaListener>> start(Core& core, const std::string& host,
                                                     std::uint16_t port,
                                                     RdmaListenerOptions options = {});
  /// Stops accepting, disconnects every client (their sessions detach: see rdma_session.h).
  virtual ~RdmaListener() = default;
  virtual std::uint16_t port() const = 0;
};

}  // namespace farmem::memserver
