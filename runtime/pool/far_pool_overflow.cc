// The pool's overflow to a swap file: leasing from it when the memservers refuse, and the
// thread that moves such slabs back to memservers with room (see far_pool.h, "Overflow").
#include <algorithm>

#include "common/log.h"
#include "pool/far_pool.h"

namespace farmem::pool {

Result<FarPool::Piece> FarPool::lease_overflow(std::uint64_t bytes, const Status& refused) {
  if (!swap_ || refused.code() != StatusCode::kResourceExhausted) return refused;
  auto info = transport::alloc_slab(*swap_, bytes, options_.control_timeout);
  if (!info.ok()) {
    return Status(refused.code(), refused.message() + "; and the overflow: " +
                                      info.status().to_string());
  }
  log().info("far memory full ({}); {} bytes go to {} until a memserver has room",
             refused.message(), info->bytes, swap_->peer());
  return Piece{overflow_, info->slab_id, info->addr, info->rkey, info->bytes};
}

Status FarPool::set_overflow(std::unique_ptr<SwapFile> file, std::chrono::milliseconds interval) {
  if (swap_) return InvalidArgument("the pool has a swap file already");
  if (interval.count() <= 0) return InvalidArgument("swap file migration interval must be > 0");
  SwapFile* raw = file.get();
  const std::string name = raw->peer();
  FARMEM_ASSIGN_OR_RETURN(std::size_t i, add_connection(std::move(file), name));
  {
    WriterLock lock(mu_);
    overflow_ = i;
    swap_ = raw;
  }
  migrator_ = std::thread([this, interval] { migration_loop(interval); });
  return Status::Ok();
}

void FarPool::migration_loop(std::chrono::milliseconds interval) {
  UniqueLock lock(stop_mu_);
  while (!lock.wait_for(stop_cv_, interval, [&]() FARMEM_REQUIRES(stop_mu_) { return stop_; })) {
    lock.unlock();
    migrate_once();
    lock.lock();
  }
}

Status FarPool::copy_out(const Piece& old, const Piece& far, std::uint64_t from,
                         std::uint64_t len, std::span<std::byte> buf, std::uint32_t lkey) {
  for (std::uint64_t at = from; at < from + len;) {
    const std::uint64_t n = std::min<std::uint64_t>(buf.size(), from + len - at);
    FARMEM_RETURN_IF_ERROR(swap_->read_raw(old.remote_addr + at, buf.first(n)));
    transport::Op op{transport::OpKind::kWrite, static_cast<std::uint32_t>(n), buf.data(), lkey,
                     far.rkey, far.remote_addr + at};
    FARMEM_RETURN_IF_ERROR(conns_[far.conn]->execute(op, options_.control_timeout));
    at += n;
  }
  return Status::Ok();
}

std::size_t FarPool::migrate_once() {
  if (!swap_) return 0;
  std::vector<std::pair<std::size_t, Piece>> on_file;
  {
    ReaderLock lock(mu_);
    for (std::size_t i = 0; i < slabs_.size(); ++i) {
      const Slab& s = slabs_[i];
      if (s.live && s.copies.size() == 1 && s.copies[0].size() == 1 &&
          s.copies[0][0].conn == overflow_) {
        on_file.emplace_back(i, s.copies[0][0]);
      }
    }
  }
  std::size_t moved = 0;
  std::vector<std::byte> buf(std::min<std::uint64_t>(1u << 20, options_.slab_bytes));
  for (auto& [i, old] : on_file) {
    {
      MutexLock stop(stop_mu_);
      if (stop_) break;
    }
    Piece far;
    {
      MutexLock lease(lease_mu_);
      std::string why;
      auto p = lease_piece(old.bytes, why);
      if (!p.ok()) break;  // no room yet: try again next pass
      far = *p;
    }
    auto reg = conns_[far.conn]->register_memory(buf.data(), buf.size());
    Status st = reg.status();
    if (st.ok()) {
      // The whole slab while it may be written, then (gate held: no batch touches the file)
      // the pages written meanwhile, and the switch.
      (void)swap_->take_dirty(old.server_slab_id);
      st = copy_out(old, far, 0, old.bytes, buf, (*reg)->lkey());
    }
    bool switched = false;
    if (st.ok()) {
      WriterLock gate(gate_);
      for (auto& [from, len] : swap_->take_dirty(old.server_slab_id)) {
        st = copy_out(old, far, from, len, buf, (*reg)->lkey());
        if (!st.ok()) break;
      }
      if (st.ok()) {
        WriterLock lock(mu_);
        Slab& s = slabs_[i];
        if (s.live && s.copies.size() == 1 && s.copies[0].size() == 1 &&
            s.copies[0][0].conn == overflow_ &&
            s.copies[0][0].server_slab_id == old.server_slab_id) {
          s.copies[0][0] = far;
          switched = true;
        }
      }
    }
    if (!st.ok()) {
      log().warn("moving a slab from {} to {} failed ({}); it stays in the file for now",
                 swap_->peer(), conns_[far.conn]->peer(), st.to_string());
    }
    if (switched) {
      release({old});
      moved_back_.fetch_add(1, std::memory_order_relaxed);
      ++moved;
    } else {
      release({far});  // failed, or the slab was freed meanwhile
    }
    if (!st.ok()) break;
  }
  return moved;
}

}  // namespace farmem::pool
