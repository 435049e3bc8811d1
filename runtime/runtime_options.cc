// RuntimeOptions checked at Runtime::open: every combination that would only fail later.
#include "runtime_options.h"

#include <algorithm>

#include "cache/page_cache.h"
#include "pool/far_addr.h"
#include "pool/far_pool.h"
#include "transport/proto/wire.h"

namespace farmem {

/// Every option combination that would only fail later (at the first allocation, the first
/// DerefScope, a fault), with what to change.
Status check_runtime_options(const RuntimeOptions& o) {
  if (o.registry.empty() && !(o.etcd_ca.empty() && o.etcd_cert.empty() && o.etcd_key.empty())) {
    return InvalidArgument("RuntimeOptions.etcd_ca/etcd_cert/etcd_key are set but registry is "
                           "empty: they are for an https registry");
  }
  if (!o.registry.empty()) {
    if (o.registry_transports.empty()) {
      return InvalidArgument("RuntimeOptions.registry_transports is empty: list some of "
                             "\"rdma\", \"tls\" and \"tcp\"");
    }
    for (const auto& t : o.registry_transports) {
      if (t != "rdma" && t != "tcp" && t != "tls") {
        return InvalidArgument("RuntimeOptions.registry_transports names '" + t +
                               "'; registered memservers offer \"rdma\", \"tls\" and \"tcp\"");
      }
    }
    if (o.registry_interval.count() <= 0) {
      return InvalidArgument("RuntimeOptions.registry_interval must be > 0");
    }
  }
  if (o.servers.size() > pool::FarPool::kMaxServers) {
    return InvalidArgument("RuntimeOptions.servers names " + std::to_string(o.servers.size()) +
                           " memservers; a runtime uses at most " +
                           std::to_string(pool::FarPool::kMaxServers));
  }
  if (o.auth_token.size() > proto::kMaxSecretBytes) {
    return InvalidArgument("RuntimeOptions.auth_token is " + std::to_string(o.auth_token.size()) +
                           " bytes; at most " + std::to_string(proto::kMaxSecretBytes));
  }
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return InvalidArgument("RuntimeOptions.tls_cert and tls_key go together: set both (mutual "
                           "TLS) or neither");
  }
  const bool tls_options = !o.tls_ca.empty() || !o.tls_cert.empty();
  const bool tls_server = std::any_of(o.servers.begin(), o.servers.end(), [](const auto& u) {
    return u.starts_with("tls://");
  });
  if (tls_options && !tls_server && o.registry.empty()) {
    // Said, not ignored: whoever set them expects encryption that no URL asks for.
    return InvalidArgument("RuntimeOptions.tls_ca/tls_cert are set but no memserver URL is "
                           "tls://: write tls://host:port for memservers that serve TLS");
  }
  if (o.heartbeat_interval.count() < 0) {
    return InvalidArgument("RuntimeOptions.heartbeat_interval is negative (0: no heartbeat)");
  }
  if (o.auth_tenant.size() > proto::kMaxTenantBytes) {
    return InvalidArgument("RuntimeOptions.auth_tenant '" + o.auth_tenant + "' is " +
                           std::to_string(o.auth_tenant.size()) + " bytes; at most " +
                           std::to_string(proto::kMaxTenantBytes));
  }
  if (!o.auth_tenant.empty() && o.auth_token.empty()) {
    return InvalidArgument("RuntimeOptions.auth_tenant '" + o.auth_tenant +
                           "' is set but auth_token (its secret) is empty");
  }
  if (o.client_label.size() > proto::kMaxLabelBytes) {
    return InvalidArgument("RuntimeOptions.client_label is " +
                           std::to_string(o.client_label.size()) + " bytes; at most " +
                           std::to_string(proto::kMaxLabelBytes));
  }
  if (o.local_buffer_bytes == 0) return InvalidArgument("RuntimeOptions.local_buffer_bytes is 0");
  if (o.slab_bytes == 0 || o.slab_bytes > pool::kMaxSlabBytes) {
    return InvalidArgument("RuntimeOptions.slab_bytes must be in 1.." +
                           std::to_string(pool::kMaxSlabBytes) + " (got " +
                           std::to_string(o.slab_bytes) + ")");
  }
  const auto pb = o.page_bytes;
  if (pb < 4096 || pb > (2u << 20) || (pb & (pb - 1)) != 0 || o.slab_bytes % pb != 0) {
    return InvalidArgument("RuntimeOptions.page_bytes must be a power of two from 4 KiB to "
                           "2 MiB dividing slab_bytes (got page_bytes " + std::to_string(pb) +
                           ", slab_bytes " + std::to_string(o.slab_bytes) + ")");
  }
  const std::uint64_t min_budget = std::uint64_t{detail::kMinCacheFrames} * pb;
  if (o.cache_budget_bytes < min_budget) {
    return InvalidArgument("RuntimeOptions.cache_budget_bytes of " + std::to_string(o.cache_budget_bytes) + " bytes" +
                           " holds fewer than " + std::to_string(detail::kMinCacheFrames) +
                           " pages of " + std::to_string(pb) + " bytes; raise it to at least " +
                           std::to_string(min_budget) + " or lower page_bytes");
  }
  const bool has_local =
      std::find(o.servers.begin(), o.servers.end(), std::string("local")) != o.servers.end();
  if (has_local && o.local_server_capacity < o.slab_bytes) {
    return InvalidArgument("RuntimeOptions.local_server_capacity of " +
                           std::to_string(o.local_server_capacity) + " bytes" + " is below one slab (slab_bytes " +
                           std::to_string(o.slab_bytes) + "): raise it or lower slab_bytes");
  }
  if (o.op_timeout.count() <= 0) return InvalidArgument("RuntimeOptions.op_timeout must be > 0");
  if (o.connect_timeout.count() <= 0) {
    return InvalidArgument("RuntimeOptions.connect_timeout must be > 0");
  }
  if (o.max_prefetch_pages == 0 || o.max_prefetch_pages > detail::kMaxPrefetchPagesLimit) {
    return InvalidArgument("RuntimeOptions.max_prefetch_pages must be in 1.." +
                           std::to_string(detail::kMaxPrefetchPagesLimit) + " (got " +
                           std::to_string(o.max_prefetch_pages) + "; turn prefetch off with "
                           "prefetch = false)");
  }
  if (o.budget_floor != 0 || o.budget_ceiling != 0) {
    if (o.budget_floor == 0 || o.budget_ceiling == 0) {
      return InvalidArgument("RuntimeOptions.budget_floor and budget_ceiling turn the tier on "
                             "together: set both, or neither for a fixed budget");
    }
    if (o.budget_floor < min_budget) {
      return InvalidArgument("RuntimeOptions.budget_floor of " + std::to_string(o.budget_floor) +
                             " bytes holds fewer than " + std::to_string(detail::kMinCacheFrames) +
                             " pages; raise it to at least " + std::to_string(min_budget));
    }
    if (o.budget_ceiling < o.budget_floor) {
      return InvalidArgument("RuntimeOptions.budget_ceiling (" + std::to_string(o.budget_ceiling) +
                             ") is below budget_floor (" + std::to_string(o.budget_floor) + ")");
    }
    if (o.cache_budget_bytes < o.budget_floor || o.cache_budget_bytes > o.budget_ceiling) {
      return InvalidArgument("RuntimeOptions.cache_budget_bytes (" +
                             std::to_string(o.cache_budget_bytes) +
                             ", where the tier starts) must lie between budget_floor and "
                             "budget_ceiling");
    }
    if (o.tier_interval.count() <= 0) {
      return InvalidArgument("RuntimeOptions.tier_interval must be > 0");
    }
  }
  if (!o.swap_file.empty()) {
    if (o.swap_file_max_bytes < o.slab_bytes) {
      return InvalidArgument("RuntimeOptions.swap_file_max_bytes (" +
                             std::to_string(o.swap_file_max_bytes) +
                             ") must hold at least one slab of slab_bytes (" +
                             std::to_string(o.slab_bytes) + ")");
    }
    if (o.swap_file_interval.count() <= 0) {
      return InvalidArgument("RuntimeOptions.swap_file_interval must be > 0");
    }
  }
  if (o.replicas < 1 || o.replicas > pool::kMaxReplicas) {
    return InvalidArgument("RuntimeOptions.replicas must be 1.." +
                           std::to_string(pool::kMaxReplicas) + " (got " +
                           std::to_string(o.replicas) + ")");
  }
  if (o.replicas > 1) {
    if (o.registry.empty() && o.servers.size() < o.replicas) {
      return InvalidArgument("RuntimeOptions.replicas is " + std::to_string(o.replicas) +
                             " but RuntimeOptions.servers names only " +
                             std::to_string(o.servers.size()) +
                             " memserver(s): each copy needs a memserver of its own");
    }
    if (!o.swap_file.empty()) {
      return InvalidArgument("RuntimeOptions.swap_file holds one copy of a slab: it is not "
                             "combined with RuntimeOptions.replicas > 1");
    }
    if (o.replica_grace.count() <= 0) {
      return InvalidArgument("RuntimeOptions.replica_grace must be > 0");
    }
    if (o.replica_copy_bytes_per_sec == 0) {
      return InvalidArgument("RuntimeOptions.replica_copy_bytes_per_sec must be > 0");
    }
  }
  if (o.max_cache_threads == 0 || o.max_cache_threads > detail::kMaxCacheThreadsLimit) {
    return InvalidArgument("RuntimeOptions.max_cache_threads must be in 1.." +
                           std::to_string(detail::kMaxCacheThreadsLimit) + " (got " +
                           std::to_string(o.max_cache_threads) + ")");
  }
  return Status::Ok();
}

}  // namespace farmem
