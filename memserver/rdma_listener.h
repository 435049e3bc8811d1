// Serves RDMA clients of a Core through rdma_cm: each client gets its own protection domain
// and RC queue pair; control messages travel as SEND/RECV, data as one-sided READ/WRITE.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "farmem/status.h"
#include "memserver/core.h"

namespace farmem::memserver {

class RdmaListener {
 public:
  /// Binds host:port with rdma_cm (port 0: any free port) and starts accepting. Fails with
  /// kUnavailable when no RDMA device serves that address.
  static Result<std::unique_ptr<RdmaListener>> start(Core& core, const std::string& host,
                                                     std::uint16_t port);
  /// Stops accepting, disconnects every client (their sessions close, slabs reclaimed).
  virtual ~RdmaListener() = default;
  virtual std::uint16_t port() const = 0;
};

}  // namespace farmem::memserver
