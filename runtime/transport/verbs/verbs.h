// The verbs backend: rdma-core RC queue pairs, one-sided RDMA READ/WRITE, control messages
// as SEND/RECV; connection setup with librdmacm (the connect private data carries protocol
// version, tenant and the client's nonce; AUTH follows as a control message).
#pragma once

#include <memory>

#include "transport/transport.h"

namespace farmem::transport {

/// Connects to a memserver's RDMA listener.
Result<std::unique_ptr<Connection>> connect_verbs(const Endpoint& endpoint,
                                                  const ConnectOptions& options);

/// True when this host has at least one RDMA device with an active port.
bool rdma_device_available();

}  // namespace farmem::transport
