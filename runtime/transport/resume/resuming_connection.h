// A tcp connection that survives stalls and drops: when its socket breaks (a timeout, a reset,
// a proxy that cut it) it reconnects with backoff and RESUMEs its memserver session, whose
// slabs the memserver keeps for its --lease-grace; batches that were in flight are posted
// again on the new socket (reads and writes of far memory are idempotent: the same bytes to
// the same place). A heartbeat (PING) every interval keeps an idle session known to the
// memserver and finds a memserver that vanished without a reset before the next access does.
//
// What the caller sees:
//   - a stall shorter than the wait's timeout: the batch succeeds, late;
//   - a stall or drop the reconnection outlasts: kTimedOut at the deadline; the next access
//     reconnects and resumes when the memserver answers again;
//   - a memserver that refuses the connection (nothing listens: it died) or no longer has
//     the session (a restart, or the grace ran out): kUnavailable at once, and for good: its
//     far memory is gone.
// A control call (ALLOC_SLAB...) that broke is sent once more after the resume; an ALLOC
// whose reply was lost then leases a second slab, which stays with the session until it ends.
#pragma once

#include <memory>

#include "transport/transport.h"

namespace farmem::transport {

/// Connects like connect_tcp and wraps the connection as above. `heartbeat` 0: no PING.
Result<std::unique_ptr<Connection>> connect_resuming(const Endpoint& endpoint,
                                                     const ConnectOptions& options,
                                                     std::chrono::milliseconds heartbeat);

}  // namespace farmem::transport
