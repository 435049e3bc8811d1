// The tcp backend: one-sided semantics emulated over one TCP stream (framed, pipelined
// requests with ids; see transport/proto/wire.h), for hosts with no RDMA device.
#pragma once

#include <memory>

#include "transport/transport.h"

namespace farmem::transport {

/// Connects to a memserver's TCP listener and says HELLO with options.token.
Result<std::unique_ptr<Connection>> connect_tcp(const Endpoint& endpoint,
                                                const ConnectOptions& options);

}  // namespace farmem::transport
