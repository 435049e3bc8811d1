// KvServer: wiring, and the statistics ("stats"): memcached's names first, then farmem's.
#include "kv/kv.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace farmem::kv {

namespace {
// The embedded memserver holds the items' far bytes plus room for the heap's arenas (whole
// slabs, partly filled) and its size classes' rounding.
std::uint64_t local_capacity_for(const KvOptions& o) {
  return o.store.far_capacity + o.store.far_capacity / 4 + 4 * o.runtime.slab_bytes;
}

std::string seconds(const timeval& tv) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%ld.%06ld", static_cast<long>(tv.tv_sec),
                static_cast<long>(tv.tv_usec));
  return buf;
}

std::string ratio(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", r);
  return buf;
}
}  // namespace

Result<std::unique_ptr<KvServer>> KvServer::open(KvOptions options) {
  if (options.store.item_max < 1024 || options.store.item_max > (1u << 30)) {
    return InvalidArgument("item size max (-I) must be from 1 KiB to 1 GiB");
  }
  if (options.store.far_capacity < options.store.item_max) {
    return InvalidArgument("far capacity (" + std::to_string(options.store.far_capacity) +
                           " bytes) is below the item size max (" +
                           std::to_string(options.store.item_max) + ")");
  }
  if (options.runtime.servers.empty() && options.runtime.registry.empty()) {
    options.runtime.servers = {"local"};
  }
  // Plain memory: items never reach the embedded memserver, which keeps its default size.
  if (!options.store.plain_memory &&
      std::find(options.runtime.servers.begin(), options.runtime.servers.end(), "local") !=
          options.runtime.servers.end()) {
    options.runtime.local_server_capacity =
        std::max(options.runtime.local_server_capacity, local_capacity_for(options));
  }
  std::unique_ptr<KvServer> kv(new KvServer());
  kv->options_ = options;
  kv->started_ = std::chrono::steady_clock::now();
  FARMEM_ASSIGN_OR_RETURN(kv->rt_, Runtime::open(options.runtime));
  kv->store_ = std::make_unique<Store>(*kv->rt_, options.store);
  kv->ctx_.store = kv->store_.get();
  kv->ctx_.item_max = options.store.item_max;
  KvServer* self = kv.get();
  kv->ctx_.stats = [self](StatList& out) {
    StatList s = self->stats();
    out.insert(out.end(), s.begin(), s.end());
  };
  kv->ctx_.settings = [self](StatList& out) { self->settings(out); };
  kv->ctx_.reset_stats = [self] { self->server_->reset_counters(); };
  FARMEM_ASSIGN_OR_RETURN(kv->server_, Server::start(kv->ctx_, options.server));
  return kv;
}

KvServer::~KvServer() {
  if (server_) server_->stop();
  server_.reset();
  store_.reset();
}

StatList KvServer::stats() const {
  StatList s;
  auto add = [&s](std::string name, auto v) {
    if constexpr (std::is_convertible_v<decltype(v), std::string>) {
      s.emplace_back(std::move(name), std::string(v));
    } else {
      s.emplace_back(std::move(name), std::to_string(v));
    }
  };
  rusage ru{};
  (void)::getrusage(RUSAGE_SELF, &ru);
  const auto up = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::steady_clock::now() - started_);
  Counters c;
  server_->sum_counters(c);
  const ServerFigures f = server_->figures();
  const StoreStats st = store_->stats();
  auto v = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  add("pid", static_cast<std::uint64_t>(::getpid()));
  add("uptime", static_cast<std::uint64_t>(up.count()));
  add("time", static_cast<std::uint64_t>(std::time(nullptr)));
  add("version", kReportedVersion);
  add("pointer_size", sizeof(void*) * 8);
  add("rusage_user", seconds(ru.ru_utime));
  add("rusage_system", seconds(ru.ru_stime));
  add("max_connections", std::uint64_t{options_.server.max_connections});
  add("curr_connections", f.curr_connections);
  add("total_connections", f.total_connections);
  add("rejected_connections", f.rejected_connections);
  add("cmd_get", v(c.cmd_get));
  add("cmd_set", v(c.cmd_set));
  add("cmd_flush", v(c.cmd_flush));
  add("cmd_touch", v(c.cmd_touch));
  add("get_hits", v(c.get_hits));
  add("get_misses", v(c.get_misses));
  add("get_expired", st.expired);
  add("delete_misses", v(c.delete_misses));
  add("delete_hits", v(c.delete_hits));
  add("incr_misses", v(c.incr_misses));
  add("incr_hits", v(c.incr_hits));
  add("decr_misses", v(c.decr_misses));
  add("decr_hits", v(c.decr_hits));
  add("cas_misses", v(c.cas_misses));
  add("cas_hits", v(c.cas_hits));
  add("cas_badval", v(c.cas_badval));
  add("touch_hits", v(c.touch_hits));
  add("touch_misses", v(c.touch_misses));
  add("bytes_read", v(c.bytes_read));
  add("bytes_written", v(c.bytes_written));
  add("limit_maxbytes", st.far_capacity);
  add("threads", std::uint64_t{options_.server.threads});
  add("curr_items", st.curr_items);
  add("total_items", st.total_items);
  add("bytes", st.bytes);
  add("evictions", st.evictions);
  add("evicted_unfetched", st.evicted_unfetched);
  add("reclaimed", st.expired);
  // farmem's own: where the items are, and how the local cache in front of them does.
  const CacheStats cs = rt_->cache_stats();
  const RuntimeStats rs = rt_->stats();
  const std::uint64_t accesses = cs.hits + cs.misses;
  add("farmem_version", farmem::version());
  add("farmem_local_budget_bytes", cs.budget_bytes);
  add("farmem_local_resident_bytes", cs.resident_bytes);
  add("farmem_cache_hits", cs.hits);
  add("farmem_cache_misses", cs.misses);
  add("farmem_cache_hit_ratio", ratio(accesses == 0 ? 1.0 : double(cs.hits) / accesses));
  add("farmem_cache_evictions", cs.evictions);
  add("farmem_cache_writebacks", cs.writebacks);
  add("farmem_fault_p50_ns", cs.fault_latency.percentile_ns(50));
  add("farmem_fault_p99_ns", cs.fault_latency.percentile_ns(99));
  add("farmem_prefetches_issued", cs.prefetches_issued);
  add("farmem_prefetches_used", cs.prefetches_used);
  add("farmem_misses_in_flight", cs.prefetch_pages_in_flight);
  add("farmem_item_far_bytes", st.far_bytes);
  add("farmem_far_bytes_allocated", rs.far_bytes_allocated);
  add("farmem_far_bytes_leased", rs.far_bytes_leased);
  add("farmem_slabs", rs.slabs);
  add("farmem_far_reads", rs.reads);
  add("farmem_far_bytes_read", rs.bytes_read);
  add("farmem_far_writes", rs.writes);
  add("farmem_far_bytes_written", rs.bytes_written);
  add("farmem_replicas", std::uint64_t{rs.replicas});
  add("farmem_servers_down", rs.servers_down);
  add("farmem_index_bytes", st.index_bytes);
  // Misses in flight: every round's gets are prefetched as one set (server.h).
  add("farmem_batched_rounds", f.batched_rounds);
  add("farmem_prefetch_batches", st.prefetch_batches);
  add("farmem_prefetch_items", st.prefetch_items);
  add("farmem_far_errors", st.far_errors);
  const TierStats ts = rt_->tier_stats();
  add("farmem_tier_enabled", std::uint64_t{ts.enabled});
  if (ts.enabled) add("farmem_tier_budget_bytes", ts.budget_bytes);
  return s;
}

void KvServer::settings(StatList& out) const {
  out.emplace_back("maxbytes", std::to_string(options_.store.far_capacity));
  out.emplace_back("maxconns", std::to_string(options_.server.max_connections));
  out.emplace_back("tcpport", std::to_string(server_->port()));
  out.emplace_back("interface", options_.server.listen);
  out.emplace_back("verbosity", std::to_string(ctx_.verbosity.load()));
  out.emplace_back("num_threads", std::to_string(options_.server.threads));
  out.emplace_back("item_size_max", std::to_string(options_.store.item_max));
  out.emplace_back("cas_enabled", "yes");
  out.emplace_back("binding_protocol", "auto-negotiate");
  out.emplace_back("farmem_local_budget", std::to_string(options_.runtime.cache_budget_bytes));
  std::string servers;
  for (const auto& u : options_.runtime.servers) servers += (servers.empty() ? "" : ",") + u;
  out.emplace_back("farmem_servers", servers.empty() ? "-" : servers);
  out.emplace_back("farmem_registry", options_.runtime.registry.empty() ? "-" : options_.runtime.registry);
  out.emplace_back("farmem_replicas", std::to_string(options_.runtime.replicas));
}

}  // namespace farmem::kv
