// farmem/region.h: mapped regions: far memory behind a plain pointer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "farmem/options.h"
#include "farmem/far_addr.h"
#include "farmem/stats.h"
#include "farmem/status.h"

namespace farmem {

// Advice (kNormal, kSequential, kRandom, kWillNeed, kDontNeed) is shared with the page cache
// and defined in farmem/options.h; Region::advise documents what each means for a region.

/// Which thread serves a region's page faults. Chosen per region at Runtime::map/open_region.
enum class FaultMode : std::uint8_t {
  /// The default. A handler thread of the region reads userfaultfd messages, fetches the page
  /// and maps it; the faulting thread sleeps in the kernel meanwhile. The handler spins for a
  /// short while after each fault, so a stream of faults costs no wake-up of the handler.
  /// Use it unless fault latency dominates: the kernel's own accesses keep working (a read(2)
  /// into region memory, a send(2) from it, an RDMA registration fault and wait like for any
  /// page), and no signal handler is involved.
  kHandlerThread,
  /// The faulting thread serves its own fault (UFFD_FEATURE_SIGBUS): the kernel raises SIGBUS
  /// on it, a process-wide SIGBUS handler installed by farmem fetches the page and maps it
  /// before the access is retried. About a third of the handler-thread cost, no thread
  /// switch. Opt-in, because:
  ///  - the kernel's own accesses to a non-resident page fail with EFAULT instead of waiting:
  ///    call Region::prefault(offset, bytes) on memory before handing it to a system call
  ///    (read, write, send, recv, io_uring, ...) or registering it with a NIC. That includes
  ///    Runtime::read/write over the tcp transport (its send/recv are such system calls);
  ///    the in-process transport copies in user space and needs no prefault;
  ///  - a thread that blocks SIGBUS cannot touch such a region: the kernel kills the process
  ///    on its first non-resident access;
  ///  - an application SIGBUS handler must be installed before the region is mapped (farmem
  ///    then chains to it for every address outside its regions) or, if installed later, must
  ///    chain to the handler it replaced.
  /// Faults taken inside farmem's own calls (e.g. Runtime::write from an untouched region
  /// page on the in-process transport) are handed to the region's helper thread while the
  /// faulting thread waits in the signal handler. A fault that cannot be served (far memory
  /// unreachable past the retry deadline) goes on to the previous SIGBUS disposition: the
  /// application's handler, or the default action (the process dies of SIGBUS).
  kFaultingThread,
};

/// Per-region options of Runtime::map / Runtime::open_region.
struct RegionOptions {
  /// Who serves page faults; see FaultMode for when to choose which.
  FaultMode fault_mode = FaultMode::kHandlerThread;
};

/// A far allocation mapped into the address space: data() is an ordinary pointer that any
/// code (including system calls and libraries that know nothing of farmem) may load from and
/// store to. Pages are fetched from far memory on first touch, tracked for writes, written
/// back when evicted under the local-memory budget or on flush(), and dropped when clean.
///
/// Semantics a user must know:
///  - Durability: a store is durable on the memservers only once a later flush() returns ok
///    (or its page has been evicted, which writes it back first). The destructor flushes
///    but can only log a failure.
///  - Far I/O errors on a fault: the faulting thread cannot be handed an error code. Its
///    fetch is retried with bounded backoff; if far memory stays unreachable past the
///    configured retry deadline, that thread receives SIGBUS (si_code SI_QUEUE, the faulting
///    address in si_value.sival_ptr), as with an mmap'ed file whose backing store fails. Pages are never silently zero-filled.
///  - Lifetime: a Region must be destroyed before the Runtime it came from. Destroying it
///    does not free the far range: reopen it with Runtime::open_region(far()) or free it with
///    Runtime::free(far()).
///  - Concurrency: any number of threads may access the memory and call the member functions
///    at once.
class Region {
 public:
  /// Internal (regions are made by Runtime::map / Runtime::open_region).
  struct Impl;
  explicit Region(std::unique_ptr<Impl> impl);

  /// Flushes dirty pages (errors are logged), stops the fault handler, unmaps the memory and
  /// gives its local memory back to the budget.
  ~Region();
  Region(Region&&) noexcept;
  Region& operator=(Region&&) noexcept;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  /// The first byte of the mapping (4 KiB aligned).
  std::byte* data() const;
  /// The usable size in bytes (the far range's size; the mapping is rounded up to 4 KiB).
  std::size_t size() const;
  /// Where the bytes live in far memory.
  FarRange far() const;

  /// Writes every page dirty at the time of the call back to far memory. Ok means all of them
  /// are durable on the memservers; on an error the failed pages stay dirty (nothing is
  /// reported written that was not) and a later flush() retries them.
  Status flush();

  /// Hints about [offset, offset + length) (byte offsets; rounded out to whole pages).
  /// kSequential, kRandom and kNormal steer fault-driven prefetching of the whole region.
  /// kWillNeed queues the pages for background pulling (before any earlier pull order) and
  /// returns at once; kDontNeed writes back dirty pages in the range, then drops the range
  /// (a write-back error is returned and the failed pages stay resident).
  Status advise(std::size_t offset, std::size_t length, Advice advice);

  /// Pull priority: pages (indices of 4 KiB pages) are fetched in the background, in this
  /// order, before they are touched, only while the budget has free room (never evicting
  /// anything for them). Replaces any earlier order; an empty vector cancels pulling.
  Status set_pull_order(std::vector<std::size_t> page_indices);

  /// Makes [offset, offset + bytes) resident (rounded out to whole pages), fetching what is
  /// not. Needed in FaultMode::kFaultingThread before the range is handed to a system call;
  /// there the pages are mapped writable and counted dirty (the kernel's stores cannot be
  /// tracked), so they are written back when evicted. In the default mode it just touches
  /// the pages. Pages stay resident until evicted: prefault right before the system call, and
  /// no more than the budget holds. Fails if the range exceeds the budget, when nothing can
  /// be evicted to make room, or with the fetch's error.
  Status prefault(std::size_t offset, std::size_t bytes);

  /// Counters. Regions cannot see hits (a resident page is accessed without a fault), so
  /// `hits` stays 0 and `misses` counts demand faults; see CacheStats for the rest.
  CacheStats stats() const;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace farmem
