#include "pool/io_service.h"

#include <algorithm>

#include "common/dcheck.h"
#include "common/in_farmem.h"

namespace farmem {

struct IoBatch::Impl {
  struct Request {
    transport::OpKind kind;
    FarAddr far;
    std::byte* local;
    std::uint64_t bytes;
  };
  std::vector<Request> requests;
  std::vector<std::vector<transport::Op>> per_conn;  ///< ops grouped by connection
  /// Beside per_conn: the request each op serves (replicated pools only, for fail-over).
  std::vector<std::vector<std::uint32_t>> per_conn_req;
  struct Posted {
    std::size_t conn;
    std::unique_ptr<transport::Completion> done;
  };
  std::vector<Posted> posted;  ///< completions reused across submits
  std::size_t in_flight = 0;   ///< entries of `posted` used by the current submit
  Status submit_error;
  /// Replicated pools: connections whose post or wait failed with a transport failure.
  std::vector<std::pair<std::size_t, Status>> failed;
  bool holds_gate = false;  ///< inside the pool's write gate from submit to the end of wait
};

IoBatch::IoBatch() : impl_(std::make_unique<Impl>()) {}
IoBatch::~IoBatch() {
  // A connection may still write into a batch that was not waited for (io_batch.h).
  FARMEM_DCHECK_MSG(impl_ == nullptr || impl_->in_flight == 0,
                    "an IoBatch is destroyed with {} posted part(s) not waited for",
                    impl_ == nullptr ? 0 : impl_->in_flight);
}
IoBatch::IoBatch(IoBatch&&) noexcept = default;
IoBatch& IoBatch::operator=(IoBatch&&) noexcept = default;

void IoBatch::read(FarAddr src, std::span<std::byte> dst) {
  FARMEM_DCHECK_EQ(impl_->in_flight, 0u);  // not reused before wait()
  impl_->requests.push_back({transport::OpKind::kRead, src, dst.data(), dst.size()});
}
void IoBatch::write(FarAddr dst, std::span<const std::byte> src) {
  FARMEM_DCHECK_EQ(impl_->in_flight, 0u);
  impl_->requests.push_back(
      {transport::OpKind::kWrite, dst, const_cast<std::byte*>(src.data()), src.size()});
}
void IoBatch::clear() {
  FARMEM_DCHECK_EQ(impl_->in_flight, 0u);  // not while in flight (io_batch.h)
  impl_->requests.clear();
}
std::size_t IoBatch::size() const { return impl_->requests.size(); }

namespace pool {

std::vector<FarIo::BatchOp> FarIo::ops_of(const IoBatch& batch) {
  std::vector<BatchOp> out;
  out.reserve(batch.impl_->requests.size());
  for (const auto& r : batch.impl_->requests) {
    out.push_back({r.kind == transport::OpKind::kWrite, r.far, r.local, r.bytes});
  }
  return out;
}

IoService::IoService(FarPool& pool, std::chrono::nanoseconds timeout)
    : pool_(pool), timeout_(timeout) {}

// Registrations go before the connections that made them (the pool outlives the service).
IoService::~IoService() = default;

Result<IoService::LocalKey> IoService::lkey_for(const std::byte* p, std::size_t conn) const {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  ReaderLock lock(ranges_mu_);
  auto it = ranges_.upper_bound(a);
  if (it != ranges_.begin()) {
    --it;
    if (a - it->first < it->second.length) {
      if (conn >= it->second.regs.size()) {
        return Internal("local memory is not registered with server " +
                                  std::to_string(conn) + " yet");
      }
      return LocalKey{it->second.regs[conn]->lkey(), it->second.length - (a - it->first)};
    }
  }
  return InvalidArgument("local buffer is not inside registered memory (use local_buffer() or "
                         "register_memory())");
}

void IoService::count(transport::OpKind kind, std::uint64_t n) {
  if (kind == transport::OpKind::kRead) {
    reads_.fetch_add(1, std::memory_order_relaxed);
    bytes_read_.fetch_add(n, std::memory_order_relaxed);
  } else {
    writes_.fetch_add(1, std::memory_order_relaxed);
    bytes_written_.fetch_add(n, std::memory_order_relaxed);
  }
}

Status IoService::append_ops(transport::OpKind kind, FarAddr far, std::byte* local,
                             std::uint64_t n, std::uint32_t request, IoBatch::Impl& b) {
  if (n == 0) return InvalidArgument("read or write of 0 bytes");
  const bool replicated = pool_.replicas() > 1;
  [[maybe_unused]] std::uint64_t covered = 0;  // bytes of [far, far + n) in ops so far
  // A striped allocation splits the range at stripe boundaries, one target each; a write to
  // a replicated slab has a target in each copy, the same bytes in each.
  for (std::uint64_t at = 0; at < n;) {
    WriteTargets ts;
    if (kind == transport::OpKind::kRead) {
      FARMEM_ASSIGN_OR_RETURN(ts.at[0], pool_.resolve(FarAddr{far.raw + at}, n - at));
      ts.count = 1;
    } else {
      FARMEM_ASSIGN_OR_RETURN(ts, pool_.resolve_write(FarAddr{far.raw + at}, n - at));
    }
    FARMEM_DCHECK_GT(ts.count, 0u);
    const std::uint64_t bytes = ts.at[0].bytes;
    // The first bytes of what is left, some of them (else this loop would never end).
    FARMEM_DCHECK_MSG(bytes > 0 && bytes <= n - at, "resolved {} of {} bytes", bytes, n - at);
    for (std::uint32_t k = 0; k < ts.count; ++k) {
      const RemoteTarget& t = ts.at[k];
      FARMEM_DCHECK_EQ(t.bytes, bytes);  // every copy has the same stripe geometry
      const std::uint64_t max = pool_.connection(t.conn).capabilities().max_op_bytes;
      for (std::uint64_t done = 0; done < t.bytes;) {
        // Local memory registered in adjacent pieces (the cache's arena chunks) splits the
        // range too: one op, one registration. A gap in the registrations fails here.
        auto key = lkey_for(local + at + done, t.conn);
        if (!key.ok()) {
          return key.status().with_context("local buffer of " + std::to_string(n) + " bytes");
        }
        const auto len =
            static_cast<std::uint32_t>(std::min({max, t.bytes - done, key->bytes}));
        FARMEM_DCHECK_GT(len, 0u);  // inside one registration, which covers local + at + done
        b.per_conn[t.conn].push_back(
            {kind, len, local + at + done, key->lkey, t.rkey, t.remote_addr + done});
        if (replicated) b.per_conn_req[t.conn].push_back(request);
        done += len;
        if (k == 0) covered += len;
      }
    }
    at += bytes;
  }
  FARMEM_DCHECK_EQ(covered, n);  // the ops cover the request exactly, no byte twice (a copy)
  return Status::Ok();
}

bool IoService::pins_registered_memory() const {
  for (std::size_t c = 0; c < pool_.connection_count(); ++c) {
    if (pool_.connection(c).capabilities().pins_registered_memory) return true;
  }
  return false;
}

Status IoService::register_memory(std::span<std::byte> memory) {
  if (memory.empty()) return InvalidArgument("registering empty memory");
  MutexLock reg(reg_mu_);  // no server is added meanwhile
  LocalRange range;
  range.length = memory.size();
  for (std::size_t c = 0; c < pool_.connection_count(); ++c) {
    auto reg_c = pool_.connection(c).register_memory(memory.data(), memory.size());
    if (!reg_c.ok()) return reg_c.status().with_context("registering local memory");
    range.regs.push_back(std::move(reg_c).value());
  }
  WriterLock lock(ranges_mu_);
  const auto key = reinterpret_cast<std::uintptr_t>(memory.data());
  auto next = ranges_.lower_bound(key);
  const bool overlaps_next = next != ranges_.end() && next->first < key + memory.size();
  const bool overlaps_prev = next != ranges_.begin() &&
                             std::prev(next)->first + std::prev(next)->second.length > key;
  if (overlaps_next || overlaps_prev) {
    return InvalidArgument("memory overlaps a range registered already");
  }
  ranges_.emplace(key, std::move(range));
  return Status::Ok();
}

Status IoService::add_connection(std::size_t conn) {
  MutexLock reg(reg_mu_);
  if (conn >= pool_.connection_count()) return OutOfRange("no connection " + std::to_string(conn));
  // Registrations made before the connection existed; a range registered after it was added
  // to the pool has it already.
  std::vector<std::pair<std::uintptr_t, std::unique_ptr<transport::MemoryRegistration>>> made;
  {
    ReaderLock lock(ranges_mu_);
    for (auto& [start, range] : ranges_) {
      if (range.regs.size() != conn) continue;
      auto r = pool_.connection(conn).register_memory(reinterpret_cast<void*>(start),
                                                      range.length);
      if (!r.ok()) {
        return r.status().with_context("registering local memory with " +
                                       pool_.connection(conn).peer());
      }
      made.emplace_back(start, std::move(r).value());
    }
  }
  WriterLock lock(ranges_mu_);
  for (auto& [start, r] : made) ranges_.at(start).regs.push_back(std::move(r));
  return Status::Ok();
}

Status IoService::unregister_memory(std::span<std::byte> memory) {
  MutexLock reg(reg_mu_);
  WriterLock lock(ranges_mu_);
  auto it = ranges_.find(reinterpret_cast<std::uintptr_t>(memory.data()));
  if (it == ranges_.end() || it->second.length != memory.size()) {
    return NotFound("no registration of exactly that range");
  }
  ranges_.erase(it);
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

Status IoService::read(FarAddr src, std::span<std::byte> dst) {
  IoBatch& batch = sync_batch();
  batch.read(src, dst);
  FARMEM_RETURN_IF_ERROR(submit(batch));
  return wait(batch);
}

Status IoService::write(FarAddr dst, std::span<const std::byte> src) {
  IoBatch& batch = sync_batch();
  batch.write(dst, src);
  FARMEM_RETURN_IF_ERROR(submit(batch));
  return wait(batch);
}

void IoService::clear_ops(IoBatch::Impl& b) {
  b.per_conn.resize(pool_.connection_count());
  for (auto& v : b.per_conn) v.clear();
  b.per_conn_req.resize(b.per_conn.size());
  for (auto& v : b.per_conn_req) v.clear();
}

Status IoService::build(IoBatch& batch) {
  auto& b = *batch.impl_;
  clear_ops(b);
  for (std::uint32_t i = 0; i < b.requests.size(); ++i) {
    const auto& r = b.requests[i];
    FARMEM_RETURN_IF_ERROR(append_ops(r.kind, r.far, r.local, r.bytes, i, b));
  }
  return Status::Ok();
}

void IoService::leave_gate(IoBatch::Impl& b) {
  if (!b.holds_gate) return;
  b.holds_gate = false;
  pool_.write_gate().leave();
}

Status IoService::submit(IoBatch& batch) {
  InFarmemScope in_farmem;  // a region fault in here is served by a region's helper thread
  auto& b = *batch.impl_;
  if (b.in_flight != 0) return InvalidArgument("batch submitted twice without wait()");
  if (pool_.replicas() > 1) {
    // Counted before the gate: a rebuild copying while the application looked idle ends its
    // window (and yields) after its ops in flight, so this batch waits little for the gate.
    pool_.note_foreground();
    // A batch that writes is inside the write gate from before it resolves until its wait()
    // ends: a rebuild copies no chunk meanwhile (far_pool.h, "Rebuilding").
    const bool writes = std::any_of(b.requests.begin(), b.requests.end(), [](const auto& r) {
      return r.kind == transport::OpKind::kWrite;
    });
    if (writes) {
      pool_.write_gate().enter();
      b.holds_gate = true;
    }
  }
  Status st = build(batch);
  if (st.ok()) {
    const auto overflow = pool_.overflow_conn();
    if (overflow && *overflow < b.per_conn.size() && !b.per_conn[*overflow].empty()) {
      // Ops on the swap file run inside post(): holding the gate from resolving to posting
      // keeps their slabs from moving back to far memory in between (see far_pool.h).
      ReaderLock gate(pool_.overflow_gate());
      st = build(batch);
      if (st.ok()) st = post_all(batch);
    } else {
      st = post_all(batch);
    }
  }
  if (st.ok()) {
    for (const auto& r : b.requests) count(r.kind, r.bytes);
  } else {
    // Nothing was started: no wait() follows. Servers whose post failed are dead all the same.
    for (const auto& [c, why] : b.failed) pool_.server_failed(c, why);
    b.failed.clear();
    leave_gate(b);
  }
  return st;
}

Status IoService::post_all(IoBatch::Impl& b) {
  const bool replicated = pool_.replicas() > 1;
  const std::size_t nconn = b.per_conn.size();
  b.submit_error = Status::Ok();
  for (std::size_t c = 0; c < nconn && b.submit_error.ok(); ++c) {
    if (b.per_conn[c].empty()) continue;
    auto& conn = pool_.connection(c);
    std::span<const transport::Op> ops = b.per_conn[c];
    const std::size_t max = conn.capabilities().max_batch_ops;
    for (std::size_t i = 0; i < ops.size(); i += max) {
      if (b.in_flight == b.posted.size()) {
        b.posted.push_back({c, std::make_unique<transport::Completion>()});
      }
      auto& slot = b.posted[b.in_flight];
      slot.conn = c;
      auto st = conn.post(ops.subspan(i, std::min(max, ops.size() - i)), *slot.done);
      if (!st.ok() && replicated && is_transport_failure(st)) {
        // A dead copy: wait() fails its requests over (reads) or checks they still have a
        // live copy (writes), as for an op that failed in flight.
        b.failed.emplace_back(c, st.with_context(conn.peer()));
        break;
      }
      if (!st.ok()) {
        b.submit_error = st.with_context(conn.peer());
        break;
      }
      ++b.in_flight;
    }
  }
  FARMEM_DCHECK_LE(b.in_flight, b.posted.size());
  // What was posted must still be waited for; wait() reports submit_error then.
  if (!b.submit_error.ok() && b.in_flight == 0) return b.submit_error;
  return Status::Ok();
}

Status IoService::wait_posted(IoBatch::Impl& b) {
  const bool replicated = pool_.replicas() > 1;
  Status first = b.submit_error;
  // Every posted part is waited for, even after an error: a part not waited for could
  // still be written into once this returns.
  for (std::size_t i = 0; i < b.in_flight; ++i) {
    auto& slot = b.posted[i];
    auto st = pool_.connection(slot.conn).wait(*slot.done, timeout_);
    // Connection::wait returns only once nothing touches the completion any more, even on a
    // timeout: the completion is reused by the next submit.
    FARMEM_DCHECK_MSG(slot.done->done(), "{}: wait returned ({}) with parts still pending",
                      pool_.connection(slot.conn).peer(), st.to_string());
    if (!st.ok() && replicated && is_transport_failure(st)) {
      b.failed.emplace_back(slot.conn, st);  // a transport's error names its peer
    } else if (!st.ok() && first.ok()) {
      first = st;
    }
  }
  b.in_flight = 0;
  b.submit_error = Status::Ok();
  return first;
}

Status IoService::fail_over(IoBatch::Impl& b) {
  Status first;
  // Each round judges at least one more server dead, so this ends within a round a server.
  for (std::size_t round = 0; !b.failed.empty(); ++round) {
    std::vector<bool> touched(b.requests.size(), false);
    for (const auto& [c, why] : b.failed) {
      // The connection is broken for good (transport.h): every piece on it is lost.
      pool_.server_failed(c, why);
      for (std::uint32_t r : b.per_conn_req[c]) touched[r] = true;
    }
    if (round > pool_.connection_count()) {
      return b.failed.front().second;  // cannot happen: a server fails once
    }
    b.failed.clear();
    // Every wait of the last round has returned: no connection touches the buffers any more,
    // so reads may go again, to the live copies now resolved. A write reached every copy
    // that did not fail; it stands when one of them is still live.
    clear_ops(b);
    bool again = false;
    for (std::uint32_t i = 0; i < b.requests.size(); ++i) {
      if (!touched[i]) continue;
      const auto& r = b.requests[i];
      Status st = r.kind == transport::OpKind::kWrite
                      ? pool_.check_live(r.far, r.bytes)
                      : append_ops(r.kind, r.far, r.local, r.bytes, i, b);
      if (!st.ok() && first.ok()) first = st;
      again = again || (st.ok() && r.kind == transport::OpKind::kRead);
    }
    if (!again) break;
    Status st = post_all(b);
    if (st.ok()) st = wait_posted(b);
    if (!st.ok() && first.ok()) first = st;
  }
  return first;
}

Status IoService::wait(IoBatch& batch) {
  InFarmemScope in_farmem;
  auto& b = *batch.impl_;
  Status first = wait_posted(b);
  if (!b.failed.empty()) {
    Status st = fail_over(b);
    if (first.ok()) first = st;
  }
  b.failed.clear();
  // Last: servers that failed this batch's writes are judged dead by now, so a rebuild
  // that closes the gate next copies from live pieces only.
  leave_gate(b);
  return first;
}

IoCounters IoService::counters() const {
  return {reads_.load(std::memory_order_relaxed), writes_.load(std::memory_order_relaxed),
          bytes_read_.load(std::memory_order_relaxed),
          bytes_written_.load(std::memory_order_relaxed)};
}

}  // namespace pool
}  // namespace farmem
