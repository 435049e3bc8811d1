// The pool's rebuild of one lost piece (far_pool.h, "Rebuilding"): copying it from a live
// piece under the write gate, at the pace and in the pieces RebuildPacer chooses.
#include <algorithm>

#include "common/dcheck.h"
#include "common/log.h"
#include "pool/far_pool.h"

namespace farmem::pool {

namespace {

/// How long a rebuild waits for the writers inside the gate to leave before it opens the
/// gate again and retries: writers that arrive meanwhile wait this long at most.
constexpr std::chrono::milliseconds kGateCloseLimit{100};
/// Pause after the gate could not be closed, so that writers get through between attempts.
constexpr std::chrono::milliseconds kGateBackoff{50};
/// Failed attempts to close the gate for one copy before a rebuild gives up until the next
/// pass (a thread that keeps a write batch in flight while it submits another).
constexpr int kGateAttempts = 100;
/// The copy buffer: two idle ops, so that the read of one overlaps the write of the other.
constexpr std::uint64_t kCopyBufferBytes = 2 * RebuildPacer::kIdleOpBytes;

}  // namespace

ReplicaStats FarPool::copy_stats() const {
  ReplicaStats r;
  r.bytes_copied = bytes_copied_.load(std::memory_order_relaxed);
  r.pieces_rebuilt = pieces_rebuilt_.load(std::memory_order_relaxed);
  r.idle_copies = idle_copies_.load(std::memory_order_relaxed);
  r.yielding_copies = yielding_copies_.load(std::memory_order_relaxed);
  r.copy_backoffs = copy_backoffs_.load(std::memory_order_relaxed);
  return r;
}

Result<std::uint32_t> FarPool::copy_lkey(std::size_t c) {
  if (copy_buf_.empty()) copy_buf_.resize(kCopyBufferBytes);
  if (copy_regs_.size() <= c) copy_regs_.resize(c + 1);
  if (!copy_regs_[c]) {
    FARMEM_ASSIGN_OR_RETURN(copy_regs_[c],
                            conns_[c]->register_memory(copy_buf_.data(), copy_buf_.size()));
  }
  return copy_regs_[c]->lkey();
}

Result<FarPool::Piece> FarPool::copy_source(const Slot& slot, const Piece& fresh) const {
  ReaderLock lock(mu_);
  const Slab& s = slabs_[slot.slab];
  const Piece& mine = s.copies.empty() ? fresh : s.copies[slot.copy][slot.pos];
  if (!s.live || mine.state != PieceState::kSyncing || mine.conn != fresh.conn ||
      mine.server_slab_id != fresh.server_slab_id) {
    return NotFound("the slab was freed, or its new piece lost, during the copy");
  }
  for (const auto& copy : s.copies) {
    if (copy[slot.pos].state == PieceState::kLive) return copy[slot.pos];
  }
  return loss_of(slot.slab, s);
}

Status FarPool::copy_from(const Piece& src, const Piece& fresh, const CopyRange& r,
                          std::uint64_t& done, bool& source_failed) {
  FARMEM_ASSIGN_OR_RETURN(std::uint32_t src_key, copy_lkey(src.conn));
  FARMEM_ASSIGN_OR_RETURN(std::uint32_t dst_key, copy_lkey(fresh.conn));
  transport::Connection& from = *conns_[src.conn];
  transport::Connection& to = *conns_[fresh.conn];
  std::byte* const buf = copy_buf_.data();  // read here, under replicate_mu_ (lambdas hold nothing)
  auto half = [buf](std::uint64_t k) { return buf + (k % 2) * RebuildPacer::kIdleOpBytes; };
  auto len_at = [&](std::uint64_t off) {
    return static_cast<std::uint32_t>(std::min(r.op_bytes, r.bytes - off));
  };
  auto read_op = [&](std::uint64_t off, std::uint64_t k) {
    return transport::Op{transport::OpKind::kRead, len_at(off), half(k), src_key, src.rkey,
                         src.remote_addr + r.at + off};
  };
  // The first read alone; then each write goes out with the next read beside it (both under
  // the gate the caller holds), until the range is done or the application shows up.
  std::uint64_t off = done;
  Status st = from.execute(read_op(off, 0), options_.replica_grace);
  if (!st.ok()) {
    source_failed = true;
    return st.with_context(from.peer());
  }
  for (std::uint64_t k = 0; off < r.bytes; ++k) {  // bounded: off grows by an op each pass
    const std::uint64_t len = len_at(off);
    const std::uint64_t next = off + len;
    const bool more = next < r.bytes && foreground_ops() == r.foreground_seen;
    const transport::Op write{transport::OpKind::kWrite, static_cast<std::uint32_t>(len),
                              half(k), dst_key, fresh.rkey, fresh.remote_addr + r.at + off};
    const transport::Op read = more ? read_op(next, k + 1) : transport::Op{};
    transport::Completion wrote, readd;
    Status wst = to.post(std::span<const transport::Op>(&write, 1), wrote);
    Status rst = more ? from.post(std::span<const transport::Op>(&read, 1), readd) : Status::Ok();
    // Every posted op is waited for, whatever the other did (the buffer is reused).
    if (wst.ok()) wst = to.wait(wrote, options_.replica_grace);
    if (more && rst.ok()) rst = from.wait(readd, options_.replica_grace);
    if (!wst.ok()) return wst.with_context(to.peer());
    done = off = next;
    if (!rst.ok()) {
      source_failed = true;
      return rst.with_context(from.peer());
    }
    if (!more) break;
  }
  return Status::Ok();
}

Result<std::uint64_t> FarPool::copy_range(const Slot& slot, const Piece& fresh,
                                          const CopyRange& r) {
  std::uint64_t done = 0;
  // Bounded: each failed source is judged dead and leaves the live pieces.
  for (std::uint32_t attempt = 0; attempt <= kMaxReplicas; ++attempt) {
    FARMEM_ASSIGN_OR_RETURN(Piece src, copy_source(slot, fresh));
    bool source_failed = false;
    Status st = copy_from(src, fresh, r, done, source_failed);
    if (st.ok()) return done;
    const std::size_t failed = source_failed ? src.conn : fresh.conn;
    if (!is_transport_failure(st)) return st;
    server_failed(failed, st);
    // The bytes copied so far stand (the gate stayed closed); the rest comes from another
    // live piece, or the copy ends here when the new piece's server died.
    if (!source_failed) return st;
  }
  return Unavailable("every source of the copy failed");
}

bool FarPool::close_write_gate() {
  for (int tries = 0; !write_gate_.close(kGateCloseLimit);) {  // bounded by kGateAttempts
    if (++tries == kGateAttempts ||
        !sleep_until(std::chrono::steady_clock::now() + kGateBackoff)) {
      return false;
    }
  }
  return true;
}

Status FarPool::copy_piece(const Slot& slot, const Piece& fresh, std::uint64_t bytes,
                           std::uint64_t max_op) {
  using Clock = std::chrono::steady_clock;
  // Each pass copies at least one op or ends the loop; a pass that finds the application
  // back after the pacer's wait plans again (the next plan yields, so that happens once).
  for (std::uint64_t at = 0, replans = 0; at < bytes;) {
    const std::uint64_t seen = foreground_ops();
    const RebuildPacer::Plan p = pacer_.plan(Clock::now(), seen);
    if (!sleep_until(p.not_before)) return Unavailable("the pool is closing");
    if (p.mode == RebuildPacer::Mode::kIdle && foreground_ops() != seen && replans++ < 2) {
      continue;
    }
    replans = 0;
    if (!close_write_gate()) return Unavailable("writers kept the replica write gate open");
    const std::uint64_t op = std::min(p.op_bytes, max_op);
    const CopyRange r{at, std::min(op * p.window_ops, bytes - at), op, seen};
    const auto start = Clock::now();
    Result<std::uint64_t> done = copy_range(slot, fresh, r);
    const auto end = Clock::now();
    write_gate_.open();
    if (!done.ok()) return done.status();
    FARMEM_DCHECK_GT(*done, 0u);  // an ok copy moved its first op at least
    at += *done;
    bytes_copied_.fetch_add(*done, std::memory_order_relaxed);
    pacer_.copied(p, start, end, *done);
    const RebuildPacer::Counters& c = pacer_.counters();
    idle_copies_.store(c.idle_copies, std::memory_order_relaxed);
    yielding_copies_.store(c.yielding_copies, std::memory_order_relaxed);
    copy_backoffs_.store(c.backoffs, std::memory_order_relaxed);
  }
  return Status::Ok();
}

bool FarPool::rebuild(const Slot& slot) {
  auto installed = install_replacement(slot);
  if (!installed) return false;
  const auto& [fresh, old] = *installed;
  const std::uint64_t bytes = std::min(fresh.bytes, old.bytes);
  // Any live piece may become the source: every connection's limit counts.
  std::uint64_t max_op = RebuildPacer::kIdleOpBytes;
  for (std::size_t c = 0; c < connection_count(); ++c) {
    max_op = std::min<std::uint64_t>(max_op, conns_[c]->capabilities().max_op_bytes);
  }
  const Status st = copy_piece(slot, fresh, bytes, max_op);
  bool went_live = false, give_back = true;
  {
    WriterLock lock(mu_);
    Slab& s = slabs_[slot.slab];
    Piece* mine = s.live ? &s.copies[slot.copy][slot.pos] : nullptr;
    const bool still = mine != nullptr && mine->conn == fresh.conn &&
                       mine->server_slab_id == fresh.server_slab_id;
    if (still && st.ok() && mine->state == PieceState::kSyncing) {
      mine->state = PieceState::kLive;
      went_live = true;
      give_back = false;
    } else if (still) {
      // Failed: the slot is lost again (its new server may be dead: then nothing to return).
      give_back = mine->state == PieceState::kSyncing;
      *mine = old;
    }
  }
  if (went_live) {
    pieces_rebuilt_.fetch_add(1, std::memory_order_relaxed);
    log().info("slab {}: a copy lost with {} rebuilt on {}", slot.slab, server_name(old.conn),
               server_name(fresh.conn));
    return true;
  }
  if (!st.ok()) {
    log().warn("slab {}: rebuilding a copy on {} failed ({}); the next pass tries again",
               slot.slab, server_name(fresh.conn), st.to_string());
  }
  if (give_back && !server_down(fresh.conn)) release({fresh});
  return false;
}

}  // namespace farmem::pool
