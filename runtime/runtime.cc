// Runtime: connections to memservers, the far pool, local memory registrations, and the
// read/write/batch entry points that turn far addresses into transport ops.
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <shared_mutex>

#include "cache/budget.h"
#include "cache/page_cache.h"
#include "common/log.h"
#include "farmem/far_ptr.h"
#include "heap/far_heap.h"
#include "pool/far_pool.h"
#include "region/in_farmem.h"
#include "region/region.h"
#include "transport/connect.h"

namespace farmem {

namespace {

/// One local range registered with every connection (index = connection index).
struct LocalRegion {
  std::size_t length = 0;
  std::vector<std::unique_ptr<transport::MemoryRegistration>> regs;
};

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

struct IoBatch::Impl {
  struct Request {
    transport::OpKind kind;
    FarAddr far;
    std::byte* local;
    std::uint64_t bytes;
  };
  std::vector<Request> requests;
  std::vector<std::vector<transport::Op>> per_conn;  ///< ops grouped by connection
  struct Posted {
    std::size_t conn;
    std::unique_ptr<transport::Completion> done;
  };
  std::vector<Posted> posted;  ///< completions reused across submits
  std::size_t in_flight = 0;   ///< entries of `posted` used by the current submit
  Status submit_error;
};

IoBatch::IoBatch() : impl_(std::make_unique<Impl>()) {}
IoBatch::~IoBatch() = default;
IoBatch::IoBatch(IoBatch&&) noexcept = default;
IoBatch& IoBatch::operator=(IoBatch&&) noexcept = default;

void IoBatch::read(FarAddr src, std::span<std::byte> dst) {
  impl_->requests.push_back({transport::OpKind::kRead, src, dst.data(), dst.size()});
}
void IoBatch::write(FarAddr dst, std::span<const std::byte> src) {
  impl_->requests.push_back(
      {transport::OpKind::kWrite, dst, const_cast<std::byte*>(src.data()), src.size()});
}
void IoBatch::clear() { impl_->requests.clear(); }
std::size_t IoBatch::size() const { return impl_->requests.size(); }

struct Runtime::Impl {
  RuntimeOptions options;
  std::shared_ptr<memserver::Core> local_core;  // backs "local" servers
  std::unique_ptr<pool::FarPool> pool;
  std::unique_ptr<AlignedBuffer> buffer;
  /// Guards regions: shared to look up lkeys, exclusive to (un)register.
  mutable std::shared_mutex regions_mu;
  std::map<std::uintptr_t, LocalRegion> regions;  ///< keyed by start address
  std::atomic<std::uint64_t> reads{0}, writes{0}, bytes_read{0}, bytes_written{0};
  std::unique_ptr<cache::Budget> budget;  ///< shared by the page cache and regions
  // The page cache and heap are made on first use: a runtime used only for raw reads and
  // writes never pays for the arena (which RDMA registration would pin) or its threads.
  std::once_flag cache_once;
  Status cache_error;
  std::unique_ptr<detail::PageCache> cache;
  std::unique_ptr<heap::FarHeap> heap;

  std::chrono::nanoseconds timeout() const { return options.op_timeout; }
  Result<std::uint32_t> lkey_for(const std::byte* p, std::uint64_t n, std::size_t conn) const;
  Status append_ops(transport::OpKind kind, FarAddr far, std::byte* local, std::uint64_t n,
                    std::vector<std::vector<transport::Op>>& per_conn);
  void count(transport::OpKind kind, std::uint64_t n);
};

Result<std::uint32_t> Runtime::Impl::lkey_for(const std::byte* p, std::uint64_t n,
                                              std::size_t conn) const {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::shared_lock lock(regions_mu);
  auto it = regions.upper_bound(a);
  if (it != regions.begin()) {
    --it;
    if (a - it->first < it->second.length && n <= it->second.length - (a - it->first)) {
      return it->second.regs[conn]->lkey();
    }
  }
  return InvalidArgument("local buffer of " + std::to_string(n) +
                         " bytes is not inside registered memory (use local_buffer() or "
                         "register_memory())");
}

void Runtime::Impl::count(transport::OpKind kind, std::uint64_t n) {
  if (kind == transport::OpKind::kRead) {
    reads.fetch_add(1, std::memory_order_relaxed);
    bytes_read.fetch_add(n, std::memory_order_relaxed);
  } else {
    writes.fetch_add(1, std::memory_order_relaxed);
    bytes_written.fetch_add(n, std::memory_order_relaxed);
  }
}

Status Runtime::Impl::append_ops(transport::OpKind kind, FarAddr far, std::byte* local,
                                 std::uint64_t n, std::vector<std::vector<transport::Op>>& out) {
  if (n == 0) return InvalidArgument("read or write of 0 bytes");
  FARMEM_ASSIGN_OR_RETURN(pool::RemoteTarget t, pool->resolve(far, n));
  FARMEM_ASSIGN_OR_RETURN(std::uint32_t lkey, lkey_for(local, n, t.conn));
  const std::uint64_t max = pool->connection(t.conn).capabilities().max_op_bytes;
  for (std::uint64_t done = 0; done < n;) {
    const auto len = static_cast<std::uint32_t>(std::min(max, n - done));
    out[t.conn].push_back({kind, len, local + done, lkey, t.rkey, t.remote_addr + done});
    done += len;
  }
  count(kind, n);
  return Status::Ok();
}

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Runtime::~Runtime() {
  if (!impl_) return;
  // The cache uses the heap's memory and the pool's connections; the pool goes last (it
  // returns slabs over its connections), and registrations before their connections.
  impl_->cache.reset();
  impl_->heap.reset();
  impl_->regions.clear();
  impl_->pool.reset();
}

namespace {
Status ensure_cache(Runtime& rt, Runtime::Impl& impl);
}  // namespace

Result<std::unique_ptr<Runtime>> Runtime::open(RuntimeOptions options) {
  if (options.servers.empty()) return InvalidArgument("RuntimeOptions.servers is empty");
  if (options.local_buffer_bytes == 0) return InvalidArgument("local_buffer_bytes is 0");
  if (options.slab_bytes == 0 || options.slab_bytes > pool::kMaxSlabBytes) {
    return InvalidArgument("slab_bytes must be in 1.." + std::to_string(pool::kMaxSlabBytes));
  }
  const auto pb = options.page_bytes;
  if (pb < 4096 || pb > (2u << 20) || (pb & (pb - 1)) != 0 || options.slab_bytes % pb != 0) {
    return InvalidArgument("page_bytes must be a power of two from 4 KiB to 2 MiB dividing "
                           "slab_bytes (got " + std::to_string(pb) + ")");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  transport::ConnectOptions co;
  co.token = options.auth_token;
  co.connect_timeout = options.connect_timeout;
  co.control_timeout = options.op_timeout;
  std::vector<std::unique_ptr<transport::Connection>> conns;
  for (const auto& url : options.servers) {
    if (url == "local" && !impl->local_core) {
      memserver::CoreOptions lo;
      lo.capacity_bytes = options.local_server_capacity;
      lo.token = options.auth_token;
      impl->local_core = std::make_shared<memserver::Core>(lo);
    }
    auto c = transport::connect(url, co, impl->local_core);
    if (!c.ok()) return c.status().with_context("connecting to " + url);
    conns.push_back(std::move(c).value());
  }
  pool::PoolOptions po;
  po.slab_bytes = options.slab_bytes;
  po.control_timeout = options.op_timeout;
  impl->pool = std::make_unique<pool::FarPool>(std::move(conns), po);
  impl->budget = std::make_unique<cache::Budget>(options.cache_budget_bytes);
  impl->buffer = std::make_unique<AlignedBuffer>(options.local_buffer_bytes);
  if (impl->buffer->p == nullptr) return ResourceExhausted("cannot allocate the local buffer");
  auto rt = std::unique_ptr<Runtime>(new Runtime(std::move(impl)));
  FARMEM_RETURN_IF_ERROR(rt->register_memory(rt->local_buffer()));
  return rt;
}

Result<FarRange> Runtime::allocate(std::uint64_t bytes) { return impl_->pool->allocate(bytes); }
Status Runtime::free(FarRange range) { return impl_->pool->free(range); }

std::span<std::byte> Runtime::local_buffer() {
  return {impl_->buffer->p, impl_->buffer->n};
}

Status Runtime::register_memory(std::span<std::byte> memory) {
  if (memory.empty()) return InvalidArgument("registering empty memory");
  LocalRegion region;
  region.length = memory.size();
  for (std::size_t c = 0; c < impl_->pool->connection_count(); ++c) {
    auto reg = impl_->pool->connection(c).register_memory(memory.data(), memory.size());
    if (!reg.ok()) return reg.status().with_context("registering local memory");
    region.regs.push_back(std::move(reg).value());
  }
  std::unique_lock lock(impl_->regions_mu);
  const auto key = reinterpret_cast<std::uintptr_t>(memory.data());
  auto next = impl_->regions.lower_bound(key);
  const bool overlaps_next = next != impl_->regions.end() && next->first < key + memory.size();
  const bool overlaps_prev = next != impl_->regions.begin() &&
                             std::prev(next)->first + std::prev(next)->second.length > key;
  if (overlaps_next || overlaps_prev) {
    return InvalidArgument("memory overlaps a range registered already");
  }
  impl_->regions.emplace(key, std::move(region));
  return Status::Ok();
}

Status Runtime::unregister_memory(std::span<std::byte> memory) {
  std::unique_lock lock(impl_->regions_mu);
  auto it = impl_->regions.find(reinterpret_cast<std::uintptr_t>(memory.data()));
  if (it == impl_->regions.end() || it->second.length != memory.size()) {
    return NotFound("no registration of exactly that range");
  }
  impl_->regions.erase(it);
  return Status::Ok();
}

namespace {
// The blocking calls reuse one batch a thread: no allocation per read or write once warm.
IoBatch& sync_batch() {
  thread_local IoBatch batch;
  batch.clear();
  return batch;
}
}  // namespace

Status Runtime::read(FarAddr src, std::span<std::byte> dst) {
  IoBatch& batch = sync_batch();
  batch.read(src, dst);
  FARMEM_RETURN_IF_ERROR(submit(batch));
  return wait(batch);
}

Status Runtime::write(FarAddr dst, std::span<const std::byte> src) {
  IoBatch& batch = sync_batch();
  batch.write(dst, src);
  FARMEM_RETURN_IF_ERROR(submit(batch));
  return wait(batch);
}

Status Runtime::submit(IoBatch& batch) {
  region::InFarmemScope in_farmem;  // a region fault in here is served by a helper
  auto& b = *batch.impl_;
  if (b.in_flight != 0) return InvalidArgument("batch submitted twice without wait()");
  const std::size_t nconn = impl_->pool->connection_count();
  b.per_conn.resize(nconn);
  for (auto& v : b.per_conn) v.clear();
  for (const auto& r : b.requests) {
    FARMEM_RETURN_IF_ERROR(impl_->append_ops(r.kind, r.far, r.local, r.bytes, b.per_conn));
  }
  b.submit_error = Status::Ok();
  for (std::size_t c = 0; c < nconn && b.submit_error.ok(); ++c) {
    auto& conn = impl_->pool->connection(c);
    std::span<const transport::Op> ops = b.per_conn[c];
    const std::size_t max = conn.capabilities().max_batch_ops;
    for (std::size_t i = 0; i < ops.size(); i += max) {
      if (b.in_flight == b.posted.size()) {
        b.posted.push_back({c, std::make_unique<transport::Completion>()});
      }
      auto& slot = b.posted[b.in_flight];
      slot.conn = c;
      auto st = conn.post(ops.subspan(i, std::min(max, ops.size() - i)), *slot.done);
      if (!st.ok()) {
        b.submit_error = st.with_context(conn.peer());
        break;
      }
      ++b.in_flight;
    }
  }
  // What was posted must still be waited for; wait() reports submit_error then.
  if (!b.submit_error.ok() && b.in_flight == 0) return b.submit_error;
  return Status::Ok();
}

Status Runtime::wait(IoBatch& batch) {
  region::InFarmemScope in_farmem;
  auto& b = *batch.impl_;
  Status first = b.submit_error;
  for (std::size_t i = 0; i < b.in_flight; ++i) {
    auto& slot = b.posted[i];
    auto& conn = impl_->pool->connection(slot.conn);
    auto st = conn.wait(*slot.done, impl_->timeout());
    if (!st.ok() && first.ok()) first = st;
  }
  b.in_flight = 0;
  b.submit_error = Status::Ok();
  return first;
}

namespace {
Status ensure_cache(Runtime& rt, Runtime::Impl& impl) {
  std::call_once(impl.cache_once, [&] {
    detail::CacheOptions co;
    co.page_bytes = impl.options.page_bytes;
    co.arena_bytes = impl.options.cache_budget_bytes;
    co.prefetch = impl.options.prefetch;
    co.max_prefetch_pages = impl.options.max_prefetch_pages;
    co.timeout = impl.options.op_timeout;
    pool::FarPool* pool = impl.pool.get();
    co.slab_bytes = [pool](std::uint64_t slab) { return pool->slab_bytes(slab); };
    auto c = detail::PageCache::create(rt, *impl.budget, std::move(co));
    if (!c.ok()) {
      impl.cache_error = c.status().with_context("page cache");
      return;
    }
    impl.cache = std::move(c).value();
    impl.heap = std::make_unique<heap::FarHeap>(rt, impl.options.page_bytes,
                                                impl.options.slab_bytes);
  });
  return impl.cache_error;
}
}  // namespace

const detail::CacheView& Runtime::cache_view() {
  if (auto st = ensure_cache(*this, *impl_); !st.ok()) detail::deref_failed(st);
  return impl_->cache->view();
}

Result<FarAddr> Runtime::allocate_object(std::size_t bytes, std::size_t align) {
  FARMEM_RETURN_IF_ERROR(ensure_cache(*this, *impl_));
  return impl_->heap->allocate(bytes, align);
}

Status Runtime::free_object(FarAddr addr) {
  FARMEM_RETURN_IF_ERROR(ensure_cache(*this, *impl_));
  return impl_->heap->free(addr);
}

Result<FarAddr> Runtime::allocate_pages(std::uint64_t pages) {
  FARMEM_RETURN_IF_ERROR(ensure_cache(*this, *impl_));
  return impl_->heap->allocate_pages(pages);
}

Status Runtime::free_pages(FarAddr addr, std::uint64_t pages) {
  FARMEM_RETURN_IF_ERROR(ensure_cache(*this, *impl_));
  return impl_->heap->free_pages(addr, pages);
}

std::uint32_t Runtime::page_bytes() const { return impl_->options.page_bytes; }

Status Runtime::flush() {
  // Every holder of budgeted memory: the far_ptr cache and each live region.
  return impl_->budget->flush_all();
}

Status Runtime::advise(FarAddr addr, std::uint64_t bytes, Advice advice) {
  FARMEM_RETURN_IF_ERROR(ensure_cache(*this, *impl_));
  return impl_->cache->advise(addr, bytes, advice);
}

CacheStats Runtime::cache_stats() const {
  CacheStats s;
  if (impl_->cache) s = impl_->cache->stats();
  s.budget_bytes = impl_->budget->limit();
  return s;
}

std::uint64_t Runtime::cache_frames_in_use() const {
  return impl_->cache ? impl_->cache->frames_in_use() : 0;
}

Result<std::unique_ptr<Region>> Runtime::map(std::uint64_t bytes) {
  return map(bytes, RegionOptions{});
}

Result<std::unique_ptr<Region>> Runtime::map(std::uint64_t bytes, const RegionOptions& options) {
  if (bytes == 0) return InvalidArgument("map of 0 bytes");
  constexpr std::uint64_t kRegionPage = 4096;  // UFFDIO_COPY works in base pages
  FARMEM_ASSIGN_OR_RETURN(FarRange far,
                          allocate((bytes + kRegionPage - 1) / kRegionPage * kRegionPage));
  auto r = open_region(far, options);
  if (!r.ok()) (void)free(far);
  return r;
}

Result<std::unique_ptr<Region>> Runtime::open_region(FarRange far) {
  return open_region(far, RegionOptions{});
}

Result<std::unique_ptr<Region>> Runtime::open_region(FarRange far, const RegionOptions& options) {
  region::RegionOptions ro;
  ro.prefetch = impl_->options.prefetch;
  ro.max_prefetch_pages = impl_->options.max_prefetch_pages;
  ro.fault_mode = options.fault_mode;
  return region::make_region(*this, *impl_->budget, far, ro);
}

RuntimeStats Runtime::stats() const {
  RuntimeStats s;
  s.reads = impl_->reads.load(std::memory_order_relaxed);
  s.writes = impl_->writes.load(std::memory_order_relaxed);
  s.bytes_read = impl_->bytes_read.load(std::memory_order_relaxed);
  s.bytes_written = impl_->bytes_written.load(std::memory_order_relaxed);
  s.slabs = impl_->pool->slabs();
  s.far_bytes_leased = impl_->pool->leased_bytes();
  s.far_bytes_allocated = impl_->pool->allocated_bytes();
  return s;
}

Result<std::vector<ServerStats>> Runtime::server_stats() {
  std::vector<ServerStats> out;
  for (std::size_t c = 0; c < impl_->pool->connection_count(); ++c) {
    auto& conn = impl_->pool->connection(c);
    auto st = transport::server_stats(conn, impl_->timeout());
    if (!st.ok()) return st.status().with_context(conn.peer());
    out.push_back({impl_->options.servers[c], st->capacity_bytes, st->used_bytes, st->slabs,
                   st->sessions, st->slabs_reclaimed});
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
