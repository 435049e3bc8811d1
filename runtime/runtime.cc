// Runtime: the composition root. It opens the connections, builds the pool, the far I/O
// service, the budget, the page cache, the heap and regions, hands each what it uses, and
// forwards the public API to them. It does no I/O itself.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unistd.h>

#include "paging/budget.h"
#include "cache/page_cache.h"
#include "common/log.h"
#include "farmem/far_ptr.h"
#include "heap/far_heap.h"
#include "pool/far_pool.h"
#include "pool/io_service.h"
#include "region/region.h"
#include "runtime_options.h"
#include "registry/discovery.h"
#include "tier/tier_manager.h"
#include "transport/connect.h"

namespace farmem {

namespace {

/// An aligned, zeroed allocation for the local buffer (page-aligned: RDMA NICs and huge
/// pages both prefer it).
struct AlignedBuffer {
  static constexpr std::size_t kAlign = 4096;
  std::byte* p = nullptr;
  std::size_t n = 0;
  explicit AlignedBuffer(std::size_t bytes) : n(bytes) {
    p = static_cast<std::byte*>(std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign));
  }
  ~AlignedBuffer() { std::free(p); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
};

}  // namespace

// The composition root's state: it builds each component and hands it what it uses.
struct Runtime::Impl {
  RuntimeOptions options;
  std::shared_ptr<memserver::Core> local_core;  // backs "local" servers
  std::unique_ptr<pool::FarPool> pool;
  std::unique_ptr<pool::IoService> io;  ///< far I/O for the runtime, cache, heap, regions
  std::unique_ptr<AlignedBuffer> buffer;
  std::unique_ptr<paging::Budget> budget;  ///< shared by the page cache and regions
  // The page cache and heap are made on first use: a runtime used only for raw reads and
  // writes never pays for the arena (which RDMA registration would pin) or its threads.
  std::once_flag cache_once;
  Status cache_error;
  std::unique_ptr<detail::PageCache> cache;
  detail::CacheView failed_view;  ///< handed to DerefScope when the cache cannot be made
  std::unique_ptr<heap::FarHeap> heap;
  std::unique_ptr<tier::TierManager> tier;  ///< null: a fixed budget
  transport::ConnectOptions connect;          ///< how servers are reached (also add_server)
  Mutex servers_mu;  ///< serialises add_server (guards no field: the pool and I/O lock theirs)
  /// Follows RuntimeOptions::registry (null without one); its thread calls add_server and
  /// close_server, so it goes before everything else.
  std::unique_ptr<registry::Discovery> discovery;

  std::chrono::nanoseconds timeout() const { return options.op_timeout; }
};

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Runtime::~Runtime() {
  if (!impl_) return;
  impl_->discovery.reset();
  // The cache uses the heap's memory and the pool's connections; the pool goes last (it
  // returns slabs over its connections), and registrations before their connections. The
  // tier goes first: it reaches the cache through the budget.
  impl_->tier.reset();
  impl_->cache.reset();
  impl_->heap.reset();
  impl_->io.reset();
  impl_->pool.reset();
}

namespace {

// "PID@HOSTNAME", cut to the wire's limit.
std::string default_client_label() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "?");
  std::string label = std::to_string(getpid()) + "@" + host;
  label.resize(std::min(label.size(), proto::kMaxLabelBytes));
  return label;
}

// Names the session to the memserver's operators; a memserver that predates labels
// (kProtocolError) is used unlabelled.
Status label_session(transport::Connection& c, const RuntimeOptions& o) {
  const std::string label = o.client_label.empty() ? default_client_label() : o.client_label;
  const Status st = transport::set_label(c, label, o.op_timeout);
  if (st.code() == StatusCode::kProtocolError) {
    log().info("{}: memserver takes no client label: {}", c.peer(), st.to_string());
    return Status::Ok();
  }
  return st;
}

Result<std::unique_ptr<transport::Connection>> connect_server(Runtime::Impl& impl,
                                                              const std::string& url) {
  if (url == "local" && !impl.local_core) {
    memserver::CoreOptions lo;
    lo.capacity_bytes = impl.options.local_server_capacity;
    // The in-process memserver knows this runtime's own credentials (and no others).
    if (impl.options.auth_tenant.empty()) {
      lo.token = impl.options.auth_token;
    } else {
      lo.tenants.push_back({impl.options.auth_tenant, impl.options.auth_token, 0, 0});
    }
    impl.local_core = std::make_shared<memserver::Core>(lo);
  }
  auto c = transport::connect(url, impl.connect, impl.local_core);
  if (!c.ok()) return c.status().with_context("connecting to " + url);
  FARMEM_RETURN_IF_ERROR(label_session(**c, impl.options).with_context("labelling " + url));
  return c;
}

registry::EtcdTls etcd_tls_of(const RuntimeOptions& o) {
  return {o.etcd_ca, o.etcd_cert, o.etcd_key};
}

/// Lists the registry and follows it (RuntimeOptions::registry): joins become add_server,
/// leaves close_server. Discovery's thread calls them; ~Runtime stops it first.
Result<std::unique_ptr<registry::Discovery>> start_discovery(Runtime& rt,
                                                             const RuntimeOptions& o) {
  registry::DiscoveryOptions d;
  FARMEM_ASSIGN_OR_RETURN(d.address, registry::parse_registry_url(o.registry));
  d.tls = etcd_tls_of(o);
  d.transports = o.registry_transports;
  d.interval = o.registry_interval;
  d.timeout = o.connect_timeout;
  return registry::Discovery::start(
      std::move(d), [&rt](const registry::Member& m) { return rt.add_server(m.url); },
      [&rt](const registry::Member& m) {
        if (Status st = rt.close_server(m.url); !st.ok()) {
          log().warn("registry: closing {}: {}", m.url, st.to_string());
        }
      });
}

}  // namespace

Result<std::unique_ptr<Runtime>> Runtime::open(RuntimeOptions options) {
  if (options.servers.empty() && options.registry.empty()) options.servers = {"local"};
  FARMEM_RETURN_IF_ERROR(check_runtime_options(options));
  if (!options.registry.empty()) {
    // A malformed URL fails before anything connects.
    auto a = registry::parse_registry_url(options.registry);
    if (!a.ok()) return a.status().with_context("RuntimeOptions.registry");
    FARMEM_RETURN_IF_ERROR(registry::check_etcd_tls(a->endpoints, etcd_tls_of(options))
                               .with_context("RuntimeOptions.etcd_ca/etcd_cert/etcd_key"));
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->connect.token = options.auth_token;
  impl->connect.tenant = options.auth_tenant;
  impl->connect.tls = {options.tls_ca, options.tls_cert, options.tls_key};
  impl->connect.resume_on_break = options.resume_sessions;
  impl->connect.heartbeat = options.heartbeat_interval;
  // Replicated: a copy elsewhere serves once the pool judges a server dead (replica_grace);
  // a resume is tried for no longer than that.
  if (options.replicas > 1) {
    impl->connect.resume_window =
        std::chrono::duration_cast<std::chrono::milliseconds>(options.replica_grace);
  }
  impl->connect.connect_timeout = options.connect_timeout;
  impl->connect.control_timeout = options.op_timeout;
  std::vector<std::unique_ptr<transport::Connection>> conns;
  for (const auto& url : options.servers) {
    auto c = connect_server(*impl, url);
    if (!c.ok()) return c.status();
    conns.push_back(std::move(c).value());
  }
  pool::PoolOptions po;
  po.slab_bytes = options.slab_bytes;
  po.control_timeout = options.op_timeout;
  po.replicas = options.replicas;
  po.replica_grace = options.replica_grace;
  po.replica_copy_bytes_per_sec = options.replica_copy_bytes_per_sec;
  impl->pool = std::make_unique<pool::FarPool>(std::move(conns), options.servers, po);
  if (!options.swap_file.empty()) {
    pool::SwapFileOptions so;
    so.path = options.swap_file;
    so.max_bytes = options.swap_file_max_bytes;
    FARMEM_ASSIGN_OR_RETURN(auto file, pool::SwapFile::create(so));
    FARMEM_RETURN_IF_ERROR(impl->pool->set_overflow(std::move(file), options.swap_file_interval));
  }
  impl->io = std::make_unique<pool::IoService>(*impl->pool, options.op_timeout);
  const bool tiered = options.budget_ceiling != 0;
  impl->budget = std::make_unique<paging::Budget>(
      options.cache_budget_bytes, tiered ? options.budget_ceiling : options.cache_budget_bytes);
  if (tiered) {
    std::unique_ptr<tier::PressureSource> source;
    if (options.pressure_source) {
      source = std::make_unique<tier::FunctionPressureSource>(options.pressure_source);
    } else {
      source = std::make_unique<tier::SystemPressureSource>();
    }
    tier::TierPolicyOptions tp;
    tp.floor_bytes = options.budget_floor;
    tp.ceiling_bytes = options.budget_ceiling;
    tp.page_bytes = options.page_bytes;
    FARMEM_RETURN_IF_ERROR(tier::check(tp));
    impl->tier = std::make_unique<tier::TierManager>(*impl->budget, std::move(source), tp,
                                                     options.tier_interval);
  }
  impl->buffer = std::make_unique<AlignedBuffer>(options.local_buffer_bytes);
  if (impl->buffer->p == nullptr) return ResourceExhausted("cannot allocate the local buffer");
  auto rt = std::unique_ptr<Runtime>(new Runtime(std::move(impl)));
  FARMEM_RETURN_IF_ERROR(rt->register_memory(rt->local_buffer()));
  if (!options.registry.empty()) {
    auto d = start_discovery(*rt, options);
    if (!d.ok()) return d.status().with_context("RuntimeOptions.registry " + options.registry);
    rt->impl_->discovery = std::move(d).value();
  }
  if (options.replicas > 1) {  // with a registry, the servers its first listing brought
    std::size_t open = 0;
    for (std::size_t c : rt->impl_->pool->current_servers()) {
      open += rt->impl_->pool->server_closed(c) ? 0 : 1;
    }
    if (open < options.replicas) {
      return InvalidArgument("RuntimeOptions.replicas is " + std::to_string(options.replicas) +
                             " but only " + std::to_string(open) +
                             " memserver(s) are there at open: each copy needs its own");
    }
  }
  return rt;
}

Result<FarRange> Runtime::allocate(std::uint64_t bytes) { return impl_->pool->allocate(bytes); }
Status Runtime::free(FarRange range) { return impl_->pool->free(range); }

std::span<std::byte> Runtime::local_buffer() {
  return {impl_->buffer->p, impl_->buffer->n};
}

Status Runtime::register_memory(std::span<std::byte> memory) {
  return impl_->io->register_memory(memory);
}
Status Runtime::unregister_memory(std::span<std::byte> memory) {
  return impl_->io->unregister_memory(memory);
}
Status Runtime::read(FarAddr src, std::span<std::byte> dst) { return impl_->io->read(src, dst); }
Status Runtime::write(FarAddr dst, std::span<const std::byte> src) {
  return impl_->io->write(dst, src);
}
Status Runtime::submit(IoBatch& batch) { return impl_->io->submit(batch); }
Status Runtime::wait(IoBatch& batch) { return impl_->io->wait(batch); }

namespace {
Status ensure_cache(Runtime::Impl& impl) {
  std::call_once(impl.cache_once, [&] {
    detail::CacheOptions co;
    co.page_bytes = impl.options.page_bytes;
    co.arena_bytes = impl.budget->ceiling();  // the tier may grow the budget up to it
    co.prefetch = impl.options.prefetch;
    co.max_prefetch_pages = impl.options.max_prefetch_pages;
    co.timeout = impl.options.op_timeout;
    co.max_threads = impl.options.max_cache_threads;
    pool::FarPool* pool = impl.pool.get();
    co.slab_bytes = [pool](std::uint64_t slab) { return pool->slab_bytes(slab); };
    auto c = detail::PageCache::create(*impl.io, *impl.budget, std::move(co));
    if (!c.ok()) {
      impl.cache_error = c.status().with_context("page cache");
      return;
    }
    impl.cache = std::move(c).value();
    impl.heap = std::make_unique<heap::FarHeap>(*impl.pool, impl.options.page_bytes,
                                                impl.options.slab_bytes);
  });
  return impl.cache_error;
}
}  // namespace

const detail::CacheView& Runtime::cache_view() {
  if (auto st = ensure_cache(*impl_); !st.ok()) {
    impl_->failed_view.error = &impl_->cache_error;  // DerefScope reports it per translation
    return impl_->failed_view;
  }
  return impl_->cache->view();
}

Result<FarAddr> Runtime::allocate_object(std::size_t bytes, std::size_t align) {
  FARMEM_RETURN_IF_ERROR(ensure_cache(*impl_));
  return impl_->heap->allocate(bytes, align);
}

Status Runtime::free_object(FarAddr addr) {
  FARMEM_RETURN_IF_ERROR(ensure_cache(*impl_));
  return impl_->heap->free(addr);
}

Result<FarAddr> Runtime::allocate_pages(std::uint64_t pages) {
  FARMEM_RETURN_IF_ERROR(ensure_cache(*impl_));
  return impl_->heap->allocate_pages(pages);
}

Status Runtime::free_pages(FarAddr addr, std::uint64_t pages) {
  FARMEM_RETURN_IF_ERROR(ensure_cache(*impl_));
  return impl_->heap->free_pages(addr, pages);
}

std::uint32_t Runtime::page_bytes() const { return impl_->options.page_bytes; }

Status Runtime::flush() {
  // Every holder of budgeted memory: the far_ptr cache and each live region.
  return impl_->budget->flush_all();
}

Status Runtime::advise(FarAddr addr, std::uint64_t bytes, Advice advice) {
  FARMEM_RETURN_IF_ERROR(ensure_cache(*impl_));
  return impl_->cache->advise(addr, bytes, advice);
}

Status Runtime::prefetch(std::span<const FarAddr> addrs) {
  if (addrs.size() > kMaxPrefetchBatch) {
    return InvalidArgument("prefetch of " + std::to_string(addrs.size()) +
                           " addresses; at most " + std::to_string(kMaxPrefetchBatch) +
                           " a call");
  }
  FARMEM_RETURN_IF_ERROR(ensure_cache(*impl_));
  return impl_->cache->prefetch(addrs);
}

bool Runtime::is_local(FarAddr addr) {
  const detail::CacheView& v = cache_view();
  if (v.cache == nullptr) return true;  // no cache: the deref reports why, without waiting
  return detail::pte_state(detail::pte_of(v, addr.raw >> v.page_shift)) == detail::kPtePresent;
}

std::size_t Runtime::prefetch_window() const {
  return detail::PageCache::prefetch_window(impl_->budget->limit(), page_bytes());
}

Status Runtime::close_server(const std::string& url) {
  if (auto i = impl_->pool->find_server(url)) return impl_->pool->close_server(*i);
  return NotFound("close_server: this runtime uses no server " + url);
}

RegistryStats Runtime::registry_stats() const {
  RegistryStats s;
  if (!impl_->discovery) return s;
  const registry::DiscoveryStats d = impl_->discovery->stats();
  s.enabled = true;
  for (const auto& m : d.members) {
    s.members.push_back({m.key, m.url, m.record.capacity_bytes, m.record.used_bytes,
                         m.record.free_bytes, m.record.sessions});
  }
  s.polls = d.polls;
  s.failed_polls = d.failed_polls;
  s.last_error = d.last_error;
  return s;
}

Status Runtime::add_server(const std::string& url) {
  MutexLock lock(impl_->servers_mu);
  if (auto i = impl_->pool->find_server(url)) {
    // Known: reopen it if it still answers; a server that came back (new process, same URL)
    // gets a new connection, and the dead one stays closed.
    auto st = transport::server_stats(impl_->pool->connection(*i), impl_->timeout());
    if (st.ok()) return impl_->pool->open_server(*i);
    log().info("add_server: {} no longer answers on its old connection ({}); reconnecting", url,
               st.status().to_string());
    FARMEM_RETURN_IF_ERROR(impl_->pool->close_server(*i));
  }
  FARMEM_ASSIGN_OR_RETURN(auto conn, connect_server(*impl_, url));
  FARMEM_ASSIGN_OR_RETURN(std::size_t i, impl_->pool->add_connection(std::move(conn), url));
  // Closed to new slabs until every local range is registered with it.
  auto st = impl_->io->add_connection(i);
  if (!st.ok()) return st.with_context("add_server " + url);
  return impl_->pool->open_server(i);
}

TierStats Runtime::tier_stats() const {
  if (impl_->tier) return impl_->tier->stats();
  TierStats s;
  s.budget_bytes = impl_->budget->limit();
  return s;
}

CacheStats Runtime::cache_stats() const {
  CacheStats s;
  if (impl_->cache) s = impl_->cache->stats();
  s.budget_bytes = impl_->budget->limit();
  return s;
}

Result<std::uint64_t> Runtime::cache_arena_resident_bytes() const {
  if (!impl_->cache) return std::uint64_t{0};
  return impl_->cache->arena_resident_bytes();
}

std::uint64_t Runtime::cache_frames_in_use() const {
  return impl_->cache ? impl_->cache->frames_in_use() : 0;
}

namespace {
region::RegionOptions region_options(const RuntimeOptions& rt, const RegionOptions& o) {
  region::RegionOptions ro;
  ro.prefetch = rt.prefetch;
  ro.max_prefetch_pages = rt.max_prefetch_pages;
  ro.fault_mode = o.fault_mode;
  return ro;
}
}  // namespace

Result<std::unique_ptr<Region>> Runtime::map(std::uint64_t bytes) {
  return map(bytes, RegionOptions{});
}

Result<std::unique_ptr<Region>> Runtime::map(std::uint64_t bytes, const RegionOptions& options) {
  if (bytes == 0) return InvalidArgument("map of 0 bytes");
  constexpr std::uint64_t kRegionPage = 4096;  // UFFDIO_COPY works in base pages
  FARMEM_ASSIGN_OR_RETURN(FarRange far,
                          allocate((bytes + kRegionPage - 1) / kRegionPage * kRegionPage));
  region::RegionOptions ro = region_options(impl_->options, options);
  ro.fresh = true;  // nothing of it is in far memory yet: faults map zeros, no reads
  auto r = region::make_region(*impl_->io, *impl_->budget, far, ro);
  if (!r.ok()) (void)free(far);
  return r;
}

Result<std::unique_ptr<Region>> Runtime::open_region(FarRange far) {
  return open_region(far, RegionOptions{});
}

Result<std::unique_ptr<Region>> Runtime::open_region(FarRange far, const RegionOptions& options) {
  return region::make_region(*impl_->io, *impl_->budget, far, region_options(impl_->options, options));
}

pool::IoService& detail::io_service(Runtime& rt) { return *rt.impl_->io; }

RuntimeStats Runtime::stats() const {
  RuntimeStats s;
  const pool::IoCounters io = impl_->io->counters();
  s.reads = io.reads;
  s.writes = io.writes;
  s.bytes_read = io.bytes_read;
  s.bytes_written = io.bytes_written;
  s.slabs = impl_->pool->slabs();
  s.far_bytes_leased = impl_->pool->leased_bytes();
  s.far_bytes_allocated = impl_->pool->allocated_bytes();
  const pool::SwapFileStats swap = impl_->pool->swap_stats();
  s.swap_bytes_used = swap.used_bytes;
  s.swap_file_allocated = swap.allocated_bytes;
  s.swap_slabs_moved_back = impl_->pool->slabs_moved_back();
  const pool::ReplicaStats rep = impl_->pool->replica_stats();
  s.replicas = rep.replicas;
  s.slabs_degraded = rep.slabs_degraded;
  s.slabs_lost = rep.slabs_lost;
  s.servers_down = rep.servers_down;
  s.bytes_rereplicated = rep.bytes_copied;
  s.rereplications = rep.pieces_rebuilt;
  s.rereplication_yielding_copies = rep.yielding_copies;
  s.rereplication_idle_copies = rep.idle_copies;
  return s;
}

Result<std::vector<ServerStats>> Runtime::server_stats() {
  std::vector<ServerStats> out;
  const auto leased = impl_->pool->leased_bytes_per_server();
  const auto overflow = impl_->pool->overflow_conn();
  for (std::size_t c : impl_->pool->current_servers()) {
    if (overflow && c == *overflow) continue;  // the swap file is in stats(), not a server
    if (impl_->pool->server_down(c)) {  // its connection is broken for good: nothing to ask
      ServerStats dead;
      dead.server = impl_->pool->server_name(c);
      dead.closed = true;
      dead.down = true;
      out.push_back(dead);
      continue;
    }
    auto& conn = impl_->pool->connection(c);
    auto st = transport::server_stats(conn, impl_->timeout());
    if (!st.ok()) return st.status().with_context(conn.peer());
    out.push_back({impl_->pool->server_name(c), st->capacity_bytes, st->used_bytes, st->slabs,
                   st->sessions, st->slabs_reclaimed, c < leased.size() ? leased[c] : 0,
                   impl_->pool->server_closed(c)});
  }
  return out;
}

std::vector<std::string> Runtime::transports() const {
  std::vector<std::string> out;
  for (std::size_t c = 0; c < impl_->pool->connection_count(); ++c) {
    out.push_back(impl_->pool->connection(c).capabilities().name);
  }
  return out;
}

}  // namespace farmem
