// Picks a backend from a server URL.
#pragma once

#include <memory>
#include <string_view>

#include "memserver/core.h"
#include "transport/transport.h"

namespace farmem::transport {

/// "rdma://host:port", "tcp://host:port", "tls://host:port" (tcp with TLS), or "local" (then `local_core` serves it; it must
/// be non-null). No silent fallback: an rdma:// URL on a host without RDMA fails.
Result<std::unique_ptr<Connection>> connect(std::string_view url, const ConnectOptions& options,
                                            std::shared_ptr<memserver::Core> local_core = {});

}  // namespace farmem::transport
