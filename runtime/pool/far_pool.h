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
// Locks: mu_ (shared for resolve, exclusive to change the tables) is never held across a
// network call; lease_mu_ serialises leases, which do talk to servers, so a slow or stalled
// server delays other leases but never the reads and writes of far memory already placed.
#pragma once

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
#include "pool/slab_allocator.h"
#include "pool/swap_file.h"
#include "transport/transport.h"

namespace farmem::pool {

struct PoolOptions {
  std::uint64_t slab_bytes = 64u << 20;   ///< size of a shared slab
  std::uint64_t stripe_bytes = 1u << 20;  ///< stripe unit of allocations larger than a slab
  std::chrono::nanoseconds control_timeout = std::chrono::seconds(5);
};

/// Where a far range lives.
struct RemoteTarget {
  std::size_t conn = 0;  ///< index into the pool's connections
  std::uint64_t remote_addr = 0;
  std::uint32_t rkey = 0;
  std::uint64_t bytes = 0;  ///< bytes from the address contiguous on this target (<= asked)
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
  Result<RemoteTarget> resolve(FarAddr addr, std::uint64_t len) const;

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
  /// Memory leased on one server.
  struct Piece {
    std::size_t conn = 0;
    std::uint64_t server_slab_id = 0;
    std::uint64_t remote_addr = 0;
    std::uint32_t rkey = 0;
    std::uint64_t bytes = 0;
  };
  struct Slab {
    std::vector<Piece> pieces;  ///< one, or k stripes' worth each
    std::uint64_t bytes = 0;    ///< addressable bytes
    std::uint64_t stripe = 0;   ///< stripe unit when pieces.size() > 1
    bool live = false;
    bool dedicated = false;  ///< holds one allocation larger than a shared slab
    std::unique_ptr<SlabAllocator> alloc;
  };

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
};

}  // namespace farmem::pool
