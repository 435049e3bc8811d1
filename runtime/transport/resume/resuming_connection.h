// A connection (tcp or verbs) that survives stalls and drops: when it breaks (a timeout, a
// reset, a proxy that cut it, a queue pair in error, the memserver's disconnect) it
// reconnects with backoff and RESUMEs its memserver session, whose slabs the memserver keeps
// for its --lease-grace; batches that were in flight are posted again on the new connection
// (reads and writes of far memory are idempotent: the same bytes to the same place).
//
// Over verbs two things are tied to a connection and must not be: local memory registrations
// and the slabs' rkeys. Local registrations are made in a protection domain that every
// connection of the wrapper shares (connect_verbs with a VerbsPdShare), so lkeys stay valid.
// Slab rkeys change on a resume (the memserver re-registers the slabs in the new
// connection's PD, see memserver/core.h): the wrapper lists them (LIST_SLABS) after each
// resume and rewrites the rkey of every op it posts from the key the slab was granted with
// to the key it has now. Callers keep the keys they were given; slab ids and addresses never
// change. A heartbeat (PING) every interval keeps an idle session known to the
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

#include <functional>
#include <memory>

#include "transport/transport.h"

namespace farmem::transport {

/// Opens one connection of a backend with these options (their `resume` set to take the
/// session over). Registrations made on any connection it opens must stay valid on every
/// later one (tcp: plain; verbs: a shared PD).
using ConnectionFactory =
    std::function<Result<std::unique_ptr<Connection>>(const ConnectOptions& options)>;

/// Connects with `factory` and wraps the connection as above. `heartbeat` 0: no PING.
Result<std::unique_ptr<Connection>> connect_resuming(ConnectionFactory factory,
                                                     const ConnectOptions& options,
                                                     std::chrono::milliseconds heartbeat);

}  // namespace farmem::transport
