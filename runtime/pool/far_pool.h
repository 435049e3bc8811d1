// The pool: far memory as slabs leased lazily from many memservers, allocation inside them,
// and resolution of a FarAddr to (connection, remote address, rkey).
//
// Servers: a fixed-size table of connections that only grows (add_connection), so
// connection(i) needs no lock; an entry is never removed, only closed to new slabs. A server
// that comes back under the same name after its connection died gets a new entry; the old one
// stays closed (far memory placed there is lost with the server).
//
// Slabs: one FarAddr slab index names either one piece of memory on one server (a shared
// slab of slab_bytes, or a dedicated one for a large allocation when one server must hold
// it), or a striped slab: an allocation larger than a shared slab spread over k servers in
// stripes of stripe_bytes, round robin (stripe s lives on piece s % k at offset
// (s / k) * stripe_bytes). resolve() says how many bytes from an address are contiguous on
// one server, so callers split a range at stripe boundaries.
//
// Overflow: with a swap file (set_overflow), a slab no memserver can lease is leased from
// the file instead, and a migration thread moves such slabs back to far memory when a server
// has room: it copies the slab while it is in use, then, holding overflow_gate() exclusively,
// copies the pages written meanwhile and switches the slab to its new piece. Every batch that
// touches the file holds the gate shared from resolving its addresses until its ops ran (they
// run inside post()), so no write can land in the file after the switch.
//
// Replication (PoolOptions::replicas = r > 1): a slab has r copies (Slab::copies), each the
// vector<Piece> an unreplicated slab has, on distinct servers. A striped slab is striped once
// (k pieces, one stripe geometry) and each stripe position is replicated: copy c holds position
// j on the c-th server after position j's in a host-interleaved list, so the r pieces of one
// position are on r distinct servers (on distinct hosts as far as that list's neighbours
// are: not where one host has more than its share of the servers), while a
// copy need not avoid the servers of another copy's other positions. That is why a piece, not
// a copy, is live, syncing or lost: one dead server costs each position it held one piece,
// and the slab stays whole while every position keeps a live piece. (An erasure-coded layout,
// Layout::kErasureCoded later, would keep k data + m parity pieces in one copy.)
//
//   piece state  reads  writes  becomes
//   -----------  -----  ------  -------------------------------------------------------
//   kLive        yes    yes     kLost when its server is judged dead (server_failed)
//   kSyncing     no     yes     kLive once the replicator copied all of it; kLost on abort
//   kLost        no     no      kSyncing when the replicator installs a replacement
//
// A read goes to one live piece (a stable choice per slab and position, which spreads slabs
// over their copies); a write to every live and syncing piece. A server is judged dead when
// an op or a probe to it fails with a transport error (kUnavailable, kTimedOut, kIoError: each
// breaks the connection for good, transport.h) or a probe gets no answer within
// replica_grace; then every piece on it is lost at once and it is closed to new slabs. A
// position with no live piece makes the slab lost: its reads and writes fail with kDataLoss
// naming the slab and the servers lost.
//
// Rebuilding (far_pool_replicas.cc finds lost pieces, far_pool_rebuild.cc copies them): a
// thread probes the servers and, for each lost piece of a slab that still has a live one at
// its position, leases a new piece on a server holding none of that position (another host
// first) and installs it syncing: every write resolved from then on reaches it. It then
// copies the piece from a live piece in windows, each with the write gate (write_gate.h)
// closed: every batch that writes holds the gate from before it resolves its addresses until
// wait() on it returned. So a write either finished before the window's copy started (the
// copy carries it: it is on every live piece) or starts after the window's last write
// finished (and was resolved after the install, so it reaches the new piece itself); none can
// land on the source after the copier read it and on the new piece before the copier wrote
// it. That holds for every byte of the window, however its reads and writes overlap each
// other: within a window the read of one op may run beside the write of the one before, and
// a window that ends early (the application came back, or the source died: the rest is read
// from another live piece, the gate still closed) has copied whole ops only. The first
// window also waits out writes resolved before the install (the gate closes only when no
// writer is inside). Only once every byte is copied does the piece go live.
//
// Pace (rebuild_pacer.h): one 16 KiB op a window, then a pause that keeps the copy to a
// share of the link that adapts to its own op times, while the application's ops keep
// starting (IoService counts each batch here, note_foreground(), before it enters the gate,
// so a writer that arrives ends an idle window after its ops in flight); 256 KiB ops, up to
// eight a window overlapped, once the application has been quiet for 100 ms; never faster
// than PoolOptions::replica_copy_bytes_per_sec.
//
// Locks: mu_ (shared for resolve, exclusive to change the tables) is never held across a
// network call; lease_mu_ serialises leases, which do talk to servers, so a slow or stalled
// server delays other leases but never the reads and writes of far memory already placed.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <thread>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/far_addr.h"
#include "pool/far_addr.h"
#include "pool/rebuild_pacer.h"
#include "pool/slab_allocator.h"
#include "pool/swap_file.h"
#include "pool/write_gate.h"
#include "transport/transport.h"

namespace farmem::pool {

/// Most copies of a slab (RuntimeOptions::replicas).
inline constexpr std::uint32_t kMaxReplicas = 3;

struct PoolOptions {
  std::uint64_t slab_bytes = 64u << 20;   ///< size of a shared slab
  std::uint64_t stripe_bytes = 1u << 20;  ///< stripe unit of allocations larger than a slab
  std::chrono::nanoseconds control_timeout = std::chrono::seconds(5);
  std::uint32_t replicas = 1;  ///< copies of every slab, 1..kMaxReplicas (see above)
  /// A server that does not answer a probe (or a rebuild's op) within this is judged dead.
  std::chrono::nanoseconds replica_grace = std::chrono::seconds(3);
  /// Most bytes a second of rebuilding lost copies (below it, the pace adapts: see above).
  std::uint64_t replica_copy_bytes_per_sec = 32u << 20;
};

/// An op failure that breaks its connection for good (transport.h): the server is judged
/// dead when it hits a replicated slab.
inline bool is_transport_failure(const Status& st) {
  return st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kTimedOut ||
         st.code() == StatusCode::kIoError;
}

/// Replication figures (zeros but `replicas` without replication).
struct ReplicaStats {
  std::uint32_t replicas = 1;
  std::uint64_t slabs_degraded = 0;  ///< live slabs with fewer live copies than replicas
  std::uint64_t slabs_lost = 0;      ///< live slabs some of whose bytes have no live copy
  std::uint64_t servers_down = 0;    ///< servers judged dead
  std::uint64_t bytes_copied = 0;    ///< bytes copied into rebuilt pieces
  std::uint64_t pieces_rebuilt = 0;  ///< lost pieces replaced by a live one
  std::uint64_t idle_copies = 0;      ///< copy windows run while the application was idle
  std::uint64_t yielding_copies = 0;  ///< copy windows run yielding to the application
  std::uint64_t copy_backoffs = 0;    ///< times a yielding copy halved its share of the link
};

/// Where a far range lives.
struct RemoteTarget {
  std::size_t conn = 0;  ///< index into the pool's connections
  std::uint64_t remote_addr = 0;
  std::uint32_t rkey = 0;
  std::uint64_t bytes = 0;  ///< bytes from the address contiguous on this target (<= asked)
};

/// Every piece a write of a far range must reach: the same bytes on each.
struct WriteTargets {
  std::uint32_t count = 0;
  std::array<RemoteTarget, kMaxReplicas> at{};
};

class FarPool {
 public:
  static constexpr std::size_t kMaxServers = 256;

  /// `names[i]` names `conns[i]` (its URL); every server starts open to new slabs.
  FarPool(std::vector<std::unique_ptr<transport::Connection>> conns,
          std::vector<std::string> names, PoolOptions options);
  /// Returns every leased slab to its memserver (best effort: a dead server reclaims them
  /// itself when the session ends).
  ~FarPool();
  FarPool(const FarPool&) = delete;
  FarPool& operator=(const FarPool&) = delete;

  Result<FarRange> allocate(std::uint64_t bytes);
  Status free(FarRange range);

  /// Adds a server, closed to new slabs until open_server(): the caller registers its local
  /// memory with the new connection first. Returns the new index.
  Result<std::size_t> add_connection(std::unique_ptr<transport::Connection> conn,
                                     std::string name);
  Status open_server(std::size_t i);
  /// Closes server `i` to new slabs (its leased slabs stay usable and are freed as usual).
  Status close_server(std::size_t i);
  bool server_closed(std::size_t i) const;
  /// The newest entry named `name`.
  std::optional<std::size_t> find_server(const std::string& name) const;
  std::string server_name(std::size_t i) const;
  /// The newest entry of every name, in the order they were added.
  std::vector<std::size_t> current_servers() const;

  /// Makes `file` the overflow for slabs no memserver can lease, and moves such slabs back
  /// every `interval` when a server has room. Once, before any allocation.
  Status set_overflow(std::unique_ptr<SwapFile> file, std::chrono::milliseconds interval);
  /// The swap file's connection index, if there is one.
  std::optional<std::size_t> overflow_conn() const {
    return swap_ ? std::optional<std::size_t>(overflow_) : std::nullopt;
  }
  /// Held shared by batches that touch the swap file (see above).
  SharedMutex& overflow_gate() FARMEM_RETURN_CAPABILITY(gate_) { return gate_; }
  /// The swap file's figures (zeros without one) and slabs moved back to far memory so far.
  SwapFileStats swap_stats() const { return swap_ ? swap_->stats() : SwapFileStats{}; }
  std::uint64_t slabs_moved_back() const { return moved_back_.load(std::memory_order_relaxed); }
  /// One pass of the migration (the thread calls it; tests may too): moves slabs from the
  /// swap file to memservers with room. Returns how many moved.
  std::size_t migrate_once();

  /// The target of the first bytes of [addr, addr + len), which must lie inside one live
  /// slab; RemoteTarget::bytes says how many (all of len unless a stripe boundary is crossed).
  /// Replicated: the live copy reads go to (kDataLoss when none is left).
  Result<RemoteTarget> resolve(FarAddr addr, std::uint64_t len) const;
  /// The same first bytes on every copy a write must reach (live and syncing pieces), the same
  /// count of bytes on each; kDataLoss when no live copy is left.
  Result<WriteTargets> resolve_write(FarAddr addr, std::uint64_t len) const;
  /// Ok while every byte of [addr, addr + len) has a live copy; else kDataLoss.
  Status check_live(FarAddr addr, std::uint64_t len) const;

  // ---- Replication (see the top of this file; far_pool_replicas.cc) ----

  std::uint32_t replicas() const { return options_.replicas; }
  /// Held by every batch that writes replicated slabs (see the top of this file).
  WriteGate& write_gate() { return write_gate_; }
  /// Counts a batch of the application's (IoService, on every submit of a replicated pool):
  /// the rebuild yields while the count moves (see "Pace" above). Any thread, lock-free.
  void note_foreground() { foreground_ops_.fetch_add(1, std::memory_order_relaxed); }
  /// Judges server `c` dead after `why` (a transport failure of an op or probe): every piece
  /// on it is lost and it is closed to new slabs. Idempotent.
  void server_failed(std::size_t c, const Status& why);
  bool server_down(std::size_t c) const;
  ReplicaStats replica_stats() const;
  /// One pass of the replicator (its thread calls it; tests may too): probes every server,
  /// then rebuilds lost pieces. Returns how many pieces it rebuilt.
  std::size_t replicate_once();

  std::size_t connection_count() const { return count_.load(std::memory_order_acquire); }
  transport::Connection& connection(std::size_t i) const { return *conns_[i]; }

  /// Size of live slab `index` (a FarAddr's slab), 0 when there is none.
  std::uint64_t slab_bytes(std::uint64_t index) const;
  std::uint64_t slabs() const;
  std::uint64_t leased_bytes() const;
  std::uint64_t allocated_bytes() const;
  /// Bytes leased on each server (index = connection).
  std::vector<std::uint64_t> leased_bytes_per_server() const;

 private:
  enum class PieceState : std::uint8_t { kLive, kSyncing, kLost };  // see the top
  /// Memory leased on one server.
  struct Piece {
    std::size_t conn = 0;
    std::uint64_t server_slab_id = 0;
    std::uint64_t remote_addr = 0;
    std::uint32_t rkey = 0;
    std::uint64_t bytes = 0;
    PieceState state = PieceState::kLive;
  };
  /// How a slab's bytes map to pieces. Only replication is built; erasure coding (k data +
  /// m parity pieces in one copy) would be a second layout.
  enum class Layout : std::uint8_t { kReplicated };
  struct Slab {
    Layout layout = Layout::kReplicated;
    /// replicas copies, each one piece or k stripe positions (the same k in every copy).
    std::vector<std::vector<Piece>> copies;
    std::uint64_t bytes = 0;   ///< addressable bytes
    std::uint64_t stripe = 0;  ///< stripe unit when a copy has more than one piece
    bool live = false;
    bool dedicated = false;  ///< holds one allocation larger than a shared slab
    std::unique_ptr<SlabAllocator> alloc;
    std::vector<std::size_t> lost_on;  ///< servers whose death cost this slab a piece
  };
  /// Where slab offset `off` lives: stripe position, offset in that position's pieces, and
  /// bytes contiguous there (at most `len`).
  struct Segment {
    std::size_t pos = 0;
    std::uint64_t at = 0;
    std::uint64_t bytes = 0;
  };
  static Segment locate(const Slab& s, std::uint64_t off, std::uint64_t len);
  /// The slab of `addr` with [addr, addr + len) inside it, or why not.
  Result<const Slab*> slab_for(FarAddr addr, std::uint64_t len) const FARMEM_REQUIRES_SHARED(mu_);
  /// kDataLoss naming slab `i` and the servers it lost pieces with.
  Status loss_of(std::size_t i, const Slab& s) const FARMEM_REQUIRES_SHARED(mu_);
  static std::size_t live_at(const Slab& s, std::size_t pos);
  /// Every piece of the slab that is not lost (what goes back to the servers).
  static std::vector<Piece> held_pieces(const Slab& s);
  /// The host part of a server's name ("local" for the in-process one).
  static std::string host_of(const std::string& name);
  /// `conns` reordered so that neighbours are on different hosts where possible (each
  /// host's servers keep their order).
  std::vector<std::size_t> interleave_hosts(const std::vector<std::size_t>& conns) const
      FARMEM_EXCLUDES(mu_);
  /// One piece of `bytes` on each of `replicas` distinct servers (distinct hosts first).
  Result<std::vector<std::vector<Piece>>> lease_copies(std::uint64_t bytes)
      FARMEM_REQUIRES(lease_mu_);

  struct Room {
    std::uint64_t free = 0;
    std::uint64_t capacity = 0;
    std::size_t conn = 0;
  };
  /// Servers open to new slabs with at least `bytes` free, as they report now (a control
  /// call each); the others are named in `why` with the reason.
  std::vector<Room> room_for(std::uint64_t bytes, std::string& why);
  /// The order in which servers are asked for a new slab of `bytes`: power of two choices
  /// first (two drawn with probability proportional to their free bytes, the one with the
  /// larger free fraction first), then the others, emptiest first.
  std::vector<std::size_t> placement_order(std::uint64_t bytes, std::string& why)
      FARMEM_REQUIRES(lease_mu_);
  /// Leases one piece of `bytes` from the first server of placement order that grants it.
  Result<Piece> lease_piece(std::uint64_t bytes, std::string& why) FARMEM_REQUIRES(lease_mu_);
  /// Leases a striped slab of at least `bytes` over as many servers as have room for an
  /// equal share (one piece when only one has).
  Result<Slab> lease_striped(std::uint64_t bytes) FARMEM_REQUIRES(lease_mu_);
  /// Adds a leased slab to the table; returns its index.
  Result<std::size_t> install_locked(Slab slab) FARMEM_REQUIRES(mu_);
  /// Gives pieces back to their servers (no lock held: these are network calls).
  void release(const std::vector<Piece>& pieces) FARMEM_EXCLUDES(mu_);
  std::optional<FarRange> allocate_in_shared_locked(std::uint64_t bytes) FARMEM_REQUIRES(mu_);
  /// Leases from the swap file after the memservers refused (`why` says how).
  Result<Piece> lease_overflow(std::uint64_t bytes, const Status& refused);
  /// Copies [from, from + len) of the swap file slab `old` into `far` through `buf`.
  Status copy_out(const Piece& old, const Piece& far, std::uint64_t from, std::uint64_t len,
                  std::span<std::byte> buf, std::uint32_t lkey);
  void migration_loop(std::chrono::milliseconds interval);

  /// A lost piece to rebuild: slab, copy, stripe position.
  struct Slot {
    std::size_t slab = 0, copy = 0, pos = 0;
  };
  void replication_loop();
  bool stopping() FARMEM_EXCLUDES(stop_mu_);
  /// Sleeps until `t` or stop; false when stopping.
  bool sleep_until(std::chrono::steady_clock::time_point t) FARMEM_EXCLUDES(stop_mu_);
  void probe_servers();
  /// Leases a replacement for `slot` and installs it syncing; returns it with the lost piece
  /// it replaced, or nothing (no server can take it, or the slot changed).
  std::optional<std::pair<Piece, Piece>> install_replacement(const Slot& slot)
      FARMEM_EXCLUDES(mu_, lease_mu_);
  /// Rebuilds one lost piece (see the top of this file); true when it went live.
  bool rebuild(const Slot& slot) FARMEM_REQUIRES(replicate_mu_);
  /// Copies `bytes` of `slot`'s position into `fresh`, window by window as pacer_ plans.
  Status copy_piece(const Slot& slot, const Piece& fresh, std::uint64_t bytes,
                    std::uint64_t max_op) FARMEM_REQUIRES(replicate_mu_);
  /// One window: [at, at + bytes) of the position, in ops of op_bytes; ends early, after the
  /// ops in flight, when foreground_ops() moves from `foreground_seen`.
  struct CopyRange {
    std::uint64_t at = 0, bytes = 0, op_bytes = 0, foreground_seen = 0;
  };
  /// Copies a window from the live pieces (another one when a source dies); the caller holds
  /// the write gate closed. Returns the bytes copied (at least one op's) or why none more.
  Result<std::uint64_t> copy_range(const Slot& slot, const Piece& fresh, const CopyRange& r)
      FARMEM_REQUIRES(replicate_mu_);
  /// Copies the window from `src` starting at its byte `done`, which it advances by each op
  /// written; `source_failed` says whether an error was the source's.
  Status copy_from(const Piece& src, const Piece& fresh, const CopyRange& r,
                   std::uint64_t& done, bool& source_failed) FARMEM_REQUIRES(replicate_mu_);
  /// A live piece at `slot`'s position to copy from, or why the copy must stop.
  Result<Piece> copy_source(const Slot& slot, const Piece& fresh) const FARMEM_EXCLUDES(mu_);
  /// Closes the write gate, retrying for a while; false when writers kept it open.
  bool close_write_gate();
  /// The copy's counters (the ReplicaStats fields that are not about the tables).
  ReplicaStats copy_stats() const;
  std::uint64_t foreground_ops() const { return foreground_ops_.load(std::memory_order_relaxed); }
  /// The registration of the copy buffer with connection `c` (made on first use).
  Result<std::uint32_t> copy_lkey(std::size_t c) FARMEM_REQUIRES(replicate_mu_);

  const PoolOptions options_;
  std::unique_ptr<std::unique_ptr<transport::Connection>[]> conns_;  ///< kMaxServers slots
  std::atomic<std::size_t> count_{0};  ///< slots [0, count_) are set and never change
  /// Serialises leases (before mu_ when both are held).
  Mutex lease_mu_ FARMEM_ACQUIRED_BEFORE(mu_);
  /// Guards the tables below: shared for resolve(), exclusive to change.
  mutable SharedMutex mu_;
  std::vector<std::string> names_ FARMEM_GUARDED_BY(mu_);  ///< per connection
  /// Per connection: closed to new slabs.
  std::vector<bool> closed_ FARMEM_GUARDED_BY(mu_);
  /// Per connection: judged dead (replication; also closed).
  std::vector<bool> down_ FARMEM_GUARDED_BY(mu_);
  /// Indexed by FarAddr slab index; never reused.
  std::vector<Slab> slabs_ FARMEM_GUARDED_BY(mu_);
  /// The two random choices (fixed seed: reproducible); only lease_mu_ holders draw.
  std::mt19937_64 rng_ FARMEM_GUARDED_BY(lease_mu_){0x5eed};

  /// Set once by set_overflow (under mu_), before any allocation; read lock-free after that
  /// (overflow_conn() on every submit), so not annotated as guarded.
  SwapFile* swap_ = nullptr;  ///< owned by conns_[overflow_]
  std::size_t overflow_ = 0;
  /// The overflow gate (see the top of this file): orders batches on the swap file against
  /// a slab's switch back to far memory; guards no field. Taken before mu_.
  SharedMutex gate_ FARMEM_ACQUIRED_BEFORE(mu_);
  std::atomic<std::uint64_t> moved_back_{0};
  Mutex stop_mu_;  ///< guards stop_ (the migration thread's sleep)
  std::condition_variable stop_cv_;
  bool stop_ FARMEM_GUARDED_BY(stop_mu_) = false;
  std::thread migrator_;

  /// Replication: see the top of this file.
  WriteGate write_gate_;
  std::atomic<std::uint64_t> bytes_copied_{0}, pieces_rebuilt_{0};
  /// pacer_'s counters, copied out after each window (stats must not wait for a pass).
  std::atomic<std::uint64_t> idle_copies_{0}, yielding_copies_{0}, copy_backoffs_{0};
  std::atomic<std::uint64_t> foreground_ops_{0};  ///< note_foreground()
  /// One replication pass at a time (the thread, or a test calling replicate_once); guards
  /// the pacer, the copy buffer and its registrations (index = connection).
  Mutex replicate_mu_ FARMEM_ACQUIRED_BEFORE(lease_mu_, mu_);
  RebuildPacer pacer_ FARMEM_GUARDED_BY(replicate_mu_){options_.replica_copy_bytes_per_sec};
  std::vector<std::byte> copy_buf_ FARMEM_GUARDED_BY(replicate_mu_);
  std::vector<std::unique_ptr<transport::MemoryRegistration>> copy_regs_
      FARMEM_GUARDED_BY(replicate_mu_);
  std::thread replicator_;
};

}  // namespace farmem::pool
