#include "memserver/metrics.h"

#include <algorithm>

namespace farmem::memserver {

namespace {

void metric(std::string& out, const char* name, const char* type, const char* help,
            std::uint64_t value) {
  out += "# HELP farmem_memserver_";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE farmem_memserver_";
  out += name;
  out += ' ';
  out += type;
  out += "\nfarmem_memserver_";
  out += name;
  out += ' ';
  out += std::to_string(value);
  out += '\n';
}

// One labelled series per tenant: HELP and TYPE once, then a line a tenant.
template <typename Get>
void tenant_metric(std::string& out, const char* name, const char* type, const char* help,
                   const std::vector<TenantUsage>& tenants, Get get) {
  if (tenants.empty()) return;
  out += std::string("# HELP farmem_memserver_tenant_") + name + ' ' + help +
         "\n# TYPE farmem_memserver_tenant_" + name + ' ' + type + '\n';
  for (const TenantUsage& t : tenants) {
    // Tenant names are 1..32 bytes of the operator's file; escape what the text format needs.
    std::string label;
    for (char c : t.name) {
      if (c == '\\' || c == '"') label += '\\';
      if (c == '\n') {
        label += "\\n";
        continue;
      }
      label += c;
    }
    out += std::string("farmem_memserver_tenant_") + name + "{tenant=\"" + label + "\"} " +
           std::to_string(get(t)) + '\n';
  }
}

}  // namespace

MetricsSnapshot snapshot(const Core& core) {
  const proto::ServerStats st = core.stats();
  MetricsSnapshot m;
  m.capacity_bytes = st.capacity_bytes;
  m.used_bytes = st.used_bytes;
  m.sessions = st.sessions;
  m.slabs = st.slabs;
  m.slabs_reclaimed = st.slabs_reclaimed;
  m.requests = st.requests;
  m.rejected = st.errors;
  m.bytes_served = core.bytes_served();
  m.auth_failures = core.auth_failures();
  m.tenants = core.tenants();
  m.sessions_detached = core.sessions_detached();
  m.sessions_resumed = core.sessions_resumed();
  m.sessions_expired = core.sessions_expired();
  using R = Core::Refusal;
  m.tcp_refused_global_limit = core.refusals(R::kGlobalLimit);
  m.tcp_refused_per_host_limit = core.refusals(R::kPerHostLimit);
  m.tcp_closed_idle = core.refusals(R::kIdleTimeout);
  m.tcp_closed_frame_timeout = core.refusals(R::kFrameTimeout);
  m.rdma_closed_idle = core.refusals(R::kRdmaIdleTimeout);
  return m;
}

std::string render_prometheus(const MetricsSnapshot& m) {
  std::string out;
  out.reserve(4096);
  metric(out, "capacity_bytes", "gauge",
         "Most bytes this memserver leases at once, all clients together (moves with "
         "--capacity auto).",
         m.capacity_bytes);
  metric(out, "used_bytes", "gauge", "Bytes in slabs leased to clients now.", m.used_bytes);
  // Below used when --capacity auto shrank the capacity under what is leased.
  metric(out, "free_bytes", "gauge", "Bytes that may still be leased (capacity minus used, 0 "
         "when the capacity fell below what is leased).",
         m.capacity_bytes - std::min(m.capacity_bytes, m.used_bytes));
  metric(out, "sessions", "gauge", "Connected client sessions.", m.sessions);
  metric(out, "slabs", "gauge", "Slabs leased to clients now.", m.slabs);
  metric(out, "slabs_reclaimed_total", "counter",
         "Slabs freed because the client that held them disconnected or died.",
         m.slabs_reclaimed);
  metric(out, "requests_total", "counter", "Control requests handled (hello excluded).",
         m.requests);
  metric(out, "rejected_requests_total", "counter",
         "Requests and connections answered with an error: wrong token or version, bad or "
         "oversized frames, accesses outside a slab, full pool, too many clients.",
         m.rejected);
  metric(out, "bytes_served_total", "counter",
         "Data bytes read and written by TCP clients. One-sided RDMA READ/WRITE bypasses the "
         "memserver's CPU and is not counted.",
         m.bytes_served);
  metric(out, "auth_failures_total", "counter",
         "Handshakes refused: a wrong secret, an unknown tenant, a tenant at its connection "
         "cap, a malformed AUTH.",
         m.auth_failures);
  metric(out, "sessions_detached", "gauge",
         "Sessions whose connection broke, kept with their slabs for --lease-grace.",
         m.sessions_detached);
  metric(out, "sessions_resumed_total", "counter",
         "Sessions taken over by a client's new connection (RESUME, tcp or rdma).",
         m.sessions_resumed);
  metric(out, "sessions_expired_total", "counter",
         "Detached sessions not resumed within --lease-grace, their slabs reclaimed.",
         m.sessions_expired);
  tenant_metric(out, "used_bytes", "gauge", "Bytes leased to the tenant now.", m.tenants,
                [](const TenantUsage& t) { return t.used_bytes; });
  tenant_metric(out, "quota_bytes", "gauge", "The tenant's quota (0: none beyond capacity).",
                m.tenants, [](const TenantUsage& t) { return t.quota_bytes; });
  tenant_metric(out, "connections", "gauge", "The tenant's authenticated sessions now.",
                m.tenants, [](const TenantUsage& t) { return std::uint64_t{t.connections}; });
  tenant_metric(out, "max_connections", "gauge", "The tenant's connection cap (0: none).",
                m.tenants, [](const TenantUsage& t) { return std::uint64_t{t.max_connections}; });
  tenant_metric(out, "refused_total", "counter",
                "Slabs and connections refused by the tenant's quota or cap.", m.tenants,
                [](const TenantUsage& t) { return t.refused; });
  metric(out, "tcp_refused_global_limit_total", "counter",
         "TCP connections refused because --max-connections were open.",
         m.tcp_refused_global_limit);
  metric(out, "tcp_refused_per_host_limit_total", "counter",
         "TCP connections refused because their source address had "
         "--max-connections-per-host open.",
         m.tcp_refused_per_host_limit);
  metric(out, "tcp_closed_idle_total", "counter",
         "TCP connections closed after no frame for --idle-timeout.", m.tcp_closed_idle);
  metric(out, "tcp_closed_frame_timeout_total", "counter",
         "TCP connections closed because a frame was started and not finished within "
         "--frame-timeout (half a header, a stalled WRITE body).",
         m.tcp_closed_frame_timeout);
  metric(out, "rdma_closed_idle_total", "counter",
         "RDMA clients disconnected after no control request (PING included) for "
         "--idle-timeout; their sessions are kept for the lease grace.",
         m.rdma_closed_idle);
  return out;
}

}  // namespace farmem::memserver
