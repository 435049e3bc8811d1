// What farmem-memserver --metrics exposes: the Core's counters in the Prometheus text
// exposition format (version 0.0.4), rendered fresh for every scrape.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memserver/core.h"

namespace farmem::memserver {

/// The numbers of one scrape, read from a Core.
struct MetricsSnapshot {
  std::uint64_t capacity_bytes = 0;     ///< what may be leased now (moves with --capacity auto)
  std::uint64_t used_bytes = 0;         ///< leased now
  std::uint64_t sessions = 0;           ///< connected clients
  std::uint64_t slabs = 0;              ///< slabs leased now
  std::uint64_t slabs_reclaimed = 0;    ///< slabs freed because their client left (counter)
  std::uint64_t requests = 0;           ///< control requests handled (counter)
  std::uint64_t rejected = 0;           ///< requests answered with an error (counter)
  std::uint64_t bytes_served = 0;       ///< TCP data bytes read and written (counter)
  std::uint64_t auth_failures = 0;      ///< handshakes refused: wrong secret, unknown tenant (counter)
  std::uint64_t sessions_detached = 0;  ///< sessions kept for a resume now (lease grace)
  std::uint64_t sessions_resumed = 0;   ///< sessions taken over by a new connection (counter)
  std::uint64_t sessions_expired = 0;   ///< detached sessions reclaimed after the grace (counter)
  std::vector<TenantUsage> tenants;     ///< each tenant's use (labelled series)
  // TCP connections the listener refused or closed, by reason (counters).
  std::uint64_t tcp_refused_global_limit = 0;    ///< --max-connections reached
  std::uint64_t tcp_refused_per_host_limit = 0;  ///< --max-connections-per-host reached
  std::uint64_t tcp_closed_idle = 0;             ///< no frame for --idle-timeout
  std::uint64_t tcp_closed_frame_timeout = 0;    ///< a frame unfinished after --frame-timeout
  std::uint64_t rdma_closed_idle = 0;            ///< RDMA: no control request for --idle-timeout
};

MetricsSnapshot snapshot(const Core& core);

/// The snapshot as Prometheus text: a HELP and a TYPE line per metric, every name prefixed
/// farmem_memserver_, counters suffixed _total.
std::string render_prometheus(const MetricsSnapshot& m);

}  // namespace farmem::memserver
