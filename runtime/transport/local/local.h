// The local backend: an in-process memserver. The shared test double of every layer above
// the transport, and the embedded default when no memserver is configured.
#pragma once

#include <memory>

#include "memserver/core.h"
#include "transport/transport.h"

namespace farmem::transport {

/// Opens a session on `core` (which must outlive the connection) and says HELLO.
Result<std::unique_ptr<Connection>> connect_local(std::shared_ptr<memserver::Core> core,
                                                  const ConnectOptions& options);

}  // namespace farmem::transport
