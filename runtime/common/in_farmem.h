// "This thread is inside a farmem call": a per-thread depth that farmem's entry points raise
// for their duration. The faulting-thread SIGBUS handler reads it: a fault taken inside farmem
// (say Runtime::write reading its source from an untouched region page) may have interrupted
// code that holds locks the fetch needs, so such a fault is handed to a helper thread instead
// of being served on the faulting thread. It lives in the base layer because the entry points
// that raise it are in every layer (the pool's IoService, regions).
#pragma once

namespace farmem {

/// Initial-exec TLS: the signal handler reads it, and dynamic TLS may allocate on first use
/// in a thread (not async-signal-safe).
inline thread_local int in_farmem_depth __attribute__((tls_model("initial-exec"))) = 0;

/// Raises in_farmem_depth for its lifetime. Cheap (a TLS increment); nests.
class InFarmemScope {
 public:
  InFarmemScope() { ++in_farmem_depth; }
  ~InFarmemScope() { --in_farmem_depth; }
  InFarmemScope(const InFarmemScope&) = delete;
  InFarmemScope& operator=(const InFarmemScope&) = delete;
};

inline bool inside_farmem() { return in_farmem_depth > 0; }

}  // namespace farmem
