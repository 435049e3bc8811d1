// Serves TCP clients of a Core: framed, pipelined requests (see transport/proto/wire.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "farmem/status.h"
#include "memserver/core.h"

namespace farmem::memserver {

class TcpListener {
 public:
  /// Binds host:port (port 0: any free port) and starts accepting.
  static Result<std::unique_ptr<TcpListener>> start(Core& core, const std::string& host,
                                                    std::uint16_t port);
  /// Stops accepting, disconnects every client (their sessions close, slabs reclaimed).
  virtual ~TcpListener() = default;
  virtual std::uint16_t port() const = 0;
};

}  // namespace farmem::memserver
