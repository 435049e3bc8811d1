// The pool: far memory as slabs leased lazily from many memservers, allocation inside them,
// and resolution of a FarAddr to (connection, remote address, rkey).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <shared_mutex>
#include <vector>

#include "farmem/far_addr.h"
#include "pool/far_addr.h"
#include "pool/slab_allocator.h"
#include "transport/transport.h"

namespace farmem::pool {

struct PoolOptions {
  std::uint64_t slab_bytes = 64u << 20;  ///< size of a shared slab
  std::chrono::nanoseconds control_timeout = std::chrono::seconds(5);
};

/// Where a far range lives.
struct RemoteTarget {
  std::size_t conn = 0;  ///< index into the pool's connections
  std::uint64_t remote_addr = 0;
  std::uint32_t rkey = 0;
};

class FarPool {
 public:
  FarPool(std::vector<std::unique_ptr<transport::Connection>> conns, PoolOptions options);
  /// Returns every leased slab to its memserver (best effort: a dead server reclaims them
  /// itself when the session ends).
  ~FarPool();
  FarPool(const FarPool&) = delete;
  FarPool& operator=(const FarPool&) = delete;

  Result<FarRange> allocate(std::uint64_t bytes);
  Status free(FarRange range);

  /// Closes server `i` to new slabs (its leased slabs stay usable and are freed as usual).
  Status close_server(std::size_t i);
  bool server_closed(std::size_t i) const;

  /// The target of [addr, addr + len), which must lie inside one live slab.
  Result<RemoteTarget> resolve(FarAddr addr, std::uint64_t len) const;

  std::size_t connection_count() const { return conns_.size(); }
  transport::Connection& connection(std::size_t i) const { return *conns_[i]; }

  /// Size of live slab `index` (a FarAddr's slab), 0 when there is none.
  std::uint64_t slab_bytes(std::uint64_t index) const;
  std::uint64_t slabs() const;
  std::uint64_t leased_bytes() const;
  std::uint64_t allocated_bytes() const;

 private:
  struct Slab {
    std::size_t conn = 0;
    std::uint64_t server_slab_id = 0;
    std::uint64_t remote_addr = 0;
    std::uint32_t rkey = 0;
    std::uint64_t bytes = 0;
    bool live = false;
    bool dedicated = false;  ///< holds one allocation larger than a shared slab
    std::unique_ptr<SlabAllocator> alloc;
  };

  Result<std::size_t> lease_slab_locked(std::uint64_t bytes, bool dedicated);
  /// The order in which servers are asked for a new slab of `bytes`: power of two choices
  /// over free bytes first (two open servers drawn with probability proportional to their
  /// free room, the roomier first), then the other open servers, roomiest first. Servers that cannot report their free room, or report too
  /// little, are left out (with the reason appended to `why`).
  std::vector<std::size_t> placement_order_locked(std::uint64_t bytes, std::string& why);
  void release_slab_locked(Slab& slab);

  const std::vector<std::unique_ptr<transport::Connection>> conns_;
  const PoolOptions options_;
  /// Guards slabs_, closed_ and rng_: shared for resolve(), exclusive for allocate/free.
  mutable std::shared_mutex mu_;
  std::vector<Slab> slabs_;  ///< indexed by FarAddr slab index; entries are never reused
  std::vector<bool> closed_;  ///< per connection: closed to new slabs
  std::mt19937_64 rng_{0x5eed};  ///< the two random choices (fixed seed: reproducible tests)
};

}  // namespace farmem::pool
