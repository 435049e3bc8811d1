// The verbs backend: rdma-core RC queue pairs, one-sided RDMA READ/WRITE, control messages
// as SEND/RECV; connection setup with librdmacm (the connect private data carries protocol
// version, tenant and the client's nonce; AUTH follows as a control message).
#pragma once

#include <memory>

#include "transport/transport.h"

namespace farmem::transport {

/// A protection domain that successive verbs connections to one memserver share (a
/// resuming connection's, transport/resume/): memory registered on one stays registered,
/// with the same lkey, on the next. Empty until the first connection allocates it on its
/// device; a later connection that comes up on another device fails with kUnavailable.
struct VerbsPdShare;
std::shared_ptr<VerbsPdShare> make_verbs_pd_share();

/// Connects to a memserver's RDMA listener (in `share`'s PD when given).
Result<std::unique_ptr<Connection>> connect_verbs(const Endpoint& endpoint,
                                                  const ConnectOptions& options,
                                                  std::shared_ptr<VerbsPdShare> share = {});

/// True when this host has at least one RDMA device with an active port.
bool rdma_device_available();

}  // namespace farmem::transport
