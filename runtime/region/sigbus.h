// The process-wide SIGBUS handler of faulting-thread regions (FaultMode::kFaultingThread).
//
// Regions opened with UFFD_FEATURE_SIGBUS make the kernel raise SIGBUS on the faulting thread
// instead of queueing a userfaultfd message. One handler serves all such regions: it finds the
// region owning si_addr in a fixed table of ranges (lock-free: slots published with atomics,
// a per-slot count of handlers inside so that unregistering can wait for them) and asks it to
// serve the fault. Every other SIGBUS (another mapping's, a sigqueue'd one) goes to the
// handler that was installed before ours, or, if there was none, to the default action.
//
// Why no SA_ONSTACK: serving a fault runs a far read (several KiB of stack, more under ASan),
// more than an alternate signal stack is usually given; SIGBUS is not how a stack overflow
// shows (that is SIGSEGV), so the interrupted thread's own stack is the safe place.
#pragma once

#include <cstddef>
#include <cstdint>

#include "farmem/status.h"

namespace farmem::region {

/// What the SIGBUS handler calls for an address inside a registered range. Runs in signal
/// context on the faulting thread: must allocate nothing and take no lock the interrupted
/// code may hold.
class FaultServer {
 public:
  /// Serves a fault at `addr` (`write`: the access was a store, when the CPU says so).
  /// True when the access may be retried; false to pass the signal on (the fault cannot be
  /// served: the process then gets the default SIGBUS or the application's handler).
  virtual bool serve_sigbus(std::uintptr_t addr, bool write) = 0;

 protected:
  ~FaultServer() = default;
};

/// Registers [start, start + bytes) as served by `server`, installing the handler first if
/// it is not the current SIGBUS disposition (again if the application replaced it since,
/// chaining to the application's). Fails when the table is full.
Status register_sigbus_range(void* start, std::size_t bytes, FaultServer* server);

/// Unregisters `server`'s range and waits until no handler is still inside it.
void unregister_sigbus_range(FaultServer* server);

}  // namespace farmem::region
