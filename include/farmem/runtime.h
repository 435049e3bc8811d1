// farmem/runtime.h: the runtime facade: far allocation and one-sided reads and writes of
// far memory through registered local buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "farmem/far_addr.h"
#include "farmem/io_batch.h"
#include "farmem/options.h"
#include "farmem/stats.h"
#include "farmem/status.h"

namespace farmem {

template <typename T>
class far_ptr;
class Region;
class Runtime;
namespace pool {
class IoService;
}  // namespace pool
namespace detail {
/// Internal (tests and benchmarks of this tree): the runtime's far I/O service, to build
/// components by hand the way the runtime builds them.
pool::IoService& io_service(Runtime& rt);
}  // namespace detail
struct RegionOptions;
namespace detail {
struct CacheView;
}  // namespace detail

/// Counters of one runtime (monotonic, except the *_bytes gauges).
struct RuntimeStats {
  std::uint64_t reads = 0;            ///< one-sided READ operations issued
  std::uint64_t writes = 0;           ///< one-sided WRITE operations issued
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t slabs = 0;            ///< slabs currently leased from memservers
  std::uint64_t far_bytes_leased = 0; ///< bytes in those slabs
  std::uint64_t far_bytes_allocated = 0; ///< bytes handed out by allocate() and not freed
  std::uint64_t swap_bytes_used = 0;        ///< of far_bytes_leased, in the swap file
  std::uint64_t swap_file_allocated = 0;    ///< disk blocks the swap file holds, in bytes
  std::uint64_t swap_slabs_moved_back = 0;  ///< slabs moved from the file to memservers
  /// Replication (RuntimeOptions::replicas)
  std::uint32_t replicas = 1;             ///< copies of every slab, as configured
  std::uint64_t slabs_degraded = 0;       ///< slabs with fewer live copies than that now
  std::uint64_t slabs_lost = 0;           ///< slabs with bytes of no live copy (kDataLoss)
  std::uint64_t servers_down = 0;         ///< memservers judged dead
  std::uint64_t bytes_rereplicated = 0;   ///< bytes copied to rebuild lost copies
  std::uint64_t rereplications = 0;       ///< lost slab pieces rebuilt on another server
  /// Copy windows of the rebuild run while the application's I/O ran (small, spaced out so
  /// that the application keeps most of the link) and while it was idle (at full pace).
  std::uint64_t rereplication_yielding_copies = 0;
  std::uint64_t rereplication_idle_copies = 0;
};

/// Statistics one memserver reports about itself.
struct ServerStats {
  std::string server;  ///< its URL
  std::uint64_t capacity_bytes = 0;
  std::uint64_t used_bytes = 0;
  std::uint64_t slabs = 0;
  std::uint64_t sessions = 0;
  std::uint64_t slabs_reclaimed = 0;
  std::uint64_t leased_by_me = 0;  ///< of used_bytes, what this runtime leased there
  bool closed = false;             ///< closed to this runtime's new slabs
  /// Judged dead (RuntimeOptions::replicas > 1): not asked, the figures above are zeros.
  bool down = false;
};

/// One memserver the registry lists, as the runtime last read its record.
struct RegistryMember {
  std::string key;  ///< its etcd key
  std::string url;  ///< the URL the runtime uses (RuntimeOptions::registry_transports)
  std::uint64_t capacity_bytes = 0;
  std::uint64_t used_bytes = 0;
  std::uint64_t free_bytes = 0;
  std::uint64_t sessions = 0;
};

/// What discovery through RuntimeOptions::registry knows.
struct RegistryStats {
  bool enabled = false;                 ///< RuntimeOptions::registry is set
  std::vector<RegistryMember> members;  ///< joined and not left
  std::uint64_t polls = 0;              ///< listings read
  std::uint64_t failed_polls = 0;       ///< listings etcd did not answer
  std::string last_error;               ///< of the last poll or join; empty when all went well
};

class Runtime {
 public:
  /// Connects to every server in options.servers (all must answer: no silent fallback) and
  /// registers the local buffer with each; with options.registry, also to every memserver
  /// registered there (an etcd that does not answer is an error; a registered memserver that
  /// does not answer is logged and tried again at each listing).
  static Result<std::unique_ptr<Runtime>> open(RuntimeOptions options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  /// Allocates `bytes` of far memory (contiguous, 64-byte aligned; 4 KiB aligned from 4 KiB).
  /// Slabs are leased from memservers lazily, when no leased slab has room.
  Result<FarRange> allocate(std::uint64_t bytes);
  /// Frees an allocation; a slab left empty is returned to its memserver.
  Status free(FarRange range);

  /// The registered local buffer (options.local_buffer_bytes).
  std::span<std::byte> local_buffer();
  /// Registers more memory for reads and writes (e.g. an application's own arena).
  Status register_memory(std::span<std::byte> memory);
  Status unregister_memory(std::span<std::byte> memory);

  /// Blocking read of dst.size() bytes at `src` into `dst`, which must lie in registered
  /// memory. The far range must lie within one allocation's slab.
  Status read(FarAddr src, std::span<std::byte> dst);
  /// Blocking write of `src` (in registered memory) to far memory at `dst`.
  Status write(FarAddr dst, std::span<const std::byte> src);

  /// Starts every operation of `batch` and returns at once.
  Status submit(IoBatch& batch);
  /// Waits for a submitted batch; returns its first error. Must follow every submit.
  Status wait(IoBatch& batch);

  // ---- Far objects through the page cache (see far_ptr.h, far_vector.h) ----

  /// Allocates a T in far memory and constructs it there.
  template <typename T, typename... Args>
  Result<far_ptr<T>> make_far(Args&&... args);
  /// Frees the object and nulls `ptr`.
  template <typename T>
  Status destroy(far_ptr<T>& ptr);
  /// Raw object allocation from the far heap's size classes (bytes <= page_bytes()).
  Result<FarAddr> allocate_object(std::size_t bytes, std::size_t align);
  Status free_object(FarAddr addr);
  /// `pages` contiguous page-aligned cache pages (for containers).
  Result<FarAddr> allocate_pages(std::uint64_t pages);
  Status free_pages(FarAddr addr, std::uint64_t pages);
  std::uint32_t page_bytes() const;

  /// Writes every dirty page back, of the page cache and of every live Region; ok means all
  /// of them are durable on the memservers.
  Status flush();
  /// Application hint for the page cache: kWillNeed prefetches the range, kDontNeed writes it
  /// back and drops it; kSequential / kRandom / kNormal steer the calling thread's prefetcher.
  Status advise(FarAddr addr, std::uint64_t bytes, Advice advice);
  /// Starts fetching, in one batch, the far_ptr-cache pages that hold these far addresses,
  /// and returns without waiting: many misses of one thread travel together, and a later
  /// deref finds each page resident or in flight (it then waits only for what is left). For
  /// random accesses whose addresses are known ahead (a multi-get, a gather): prefetch the
  /// next group while working on this one. A hint: pages already resident or in flight are
  /// skipped, and beyond what the cache can take without evicting pages the thread holds in
  /// a DerefScope the rest are left to their deref. At most kMaxPrefetchBatch addresses.
  Status prefetch(std::span<const FarAddr> addrs);
  static constexpr std::size_t kMaxPrefetchBatch = 1024;
  /// True when the far_ptr-cache page holding `addr` is local now, so that a deref would not
  /// wait for far memory (false while its fetch is in flight). A hint for code that orders
  /// its own work, serving what is local first: the page may be evicted right after. Without
  /// a page cache (it could not be created): true, and a deref reports why.
  bool is_local(FarAddr addr);
  /// Pages one thread should keep in flight (prefetched, or held in a DerefScope) at a time
  /// with prefetch(): a sixteenth of the local budget, 1 to 128, so that several threads doing
  /// so leave the cache room to evict (far_vector::gather uses it).
  std::size_t prefetch_window() const;
  /// The page cache's counters (cheap: no system call; fine in a monitoring loop).
  CacheStats cache_stats() const;
  /// Bytes of the page cache's frame arena the kernel holds in RAM now: what the cache costs
  /// the process's RSS, whatever its counters say (0 without a cache). It asks the kernel
  /// (mincore over the whole arena, about a page-table walk per 4 KiB page), so it is not
  /// for a hot loop.
  Result<std::uint64_t> cache_arena_resident_bytes() const;
  /// Closes the memserver `url` (as given in RuntimeOptions::servers) to new slabs: far
  /// memory already placed there stays usable and is freed as usual. kNotFound for a URL the
  /// runtime does not use.
  Status close_server(const std::string& url);
  /// The memservers found through RuntimeOptions::registry (enabled = false without one).
  RegistryStats registry_stats() const;
  /// Connects to the memserver `url` while the runtime runs and opens it to new slabs
  /// (registering the runtime's local memory with it first). A server the runtime knows
  /// already is reopened; one that no longer answers on its old connection (restarted under
  /// the same URL) gets a new connection. On an error no new server is open to slabs.
  Status add_server(const std::string& url);
  /// The swap-like tier's budget, readings and decisions (enabled = false without one).
  TierStats tier_stats() const;
  /// Pages of the far_ptr cache holding data now (its own accounting).
  std::uint64_t cache_frames_in_use() const;
  /// For DerefScope: creates the page cache on first use.
  const detail::CacheView& cache_view();

  // ---- Mapped regions (see region.h) ----

  /// Allocates `bytes` of far memory (rounded up to whole 4 KiB pages) and maps it: plain
  /// loads and stores fault pages in through userfaultfd, under the same local budget as the
  /// page cache. Needs Linux >= 5.7 and the right to use userfaultfd. The region reads as
  /// zeros: a page is read from far memory only once it has been written back (before, a
  /// fault maps a zeroed page, dirty, so that far memory gets the zeros too).
  Result<std::unique_ptr<Region>> map(std::uint64_t bytes);
  /// map() with per-region options (the fault mode, see region.h).
  Result<std::unique_ptr<Region>> map(std::uint64_t bytes, const RegionOptions& options);
  /// Maps an existing far range again (e.g. one a flushed, destroyed Region used). The
  /// caller keeps owning the range: free() it once no region maps it.
  Result<std::unique_ptr<Region>> open_region(FarRange far);
  Result<std::unique_ptr<Region>> open_region(FarRange far, const RegionOptions& options);

  RuntimeStats stats() const;
  /// Asks every memserver for its statistics.
  Result<std::vector<ServerStats>> server_stats();
  /// The transport of each server, in options order ("verbs", "tcp", "local").
  std::vector<std::string> transports() const;

  struct Impl;

 private:
  friend pool::IoService& detail::io_service(Runtime& rt);
  explicit Runtime(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace farmem
