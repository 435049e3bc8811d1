// IoService: far I/O for every layer above the pool. It turns far addresses into transport
// ops on the right connection, keeps local memory registered with every connection, and
// submits and completes IoBatches. The page cache, the heap and regions get it injected by
// the composition root (Runtime); none of them sees the Runtime.
//
// Lifetimes: a submitted IoBatch belongs to the service until wait() on it returns; wait()
// returns only once no connection can touch the batch or its buffers (see transport.h).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/far_addr.h"
#include "farmem/io_batch.h"
#include "farmem/status.h"
#include "pool/far_io.h"
#include "pool/far_pool.h"
#include "transport/transport.h"

namespace farmem::pool {

/// Ops and bytes moved so far (monotonic).
struct IoCounters {
  std::uint64_t reads = 0;
  std::uint64_t writes = 0;
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_written = 0;
};

class IoService final : public FarIo {
 public:
  /// `pool` must outlive the service; `timeout` bounds each wait.
  IoService(FarPool& pool, std::chrono::nanoseconds timeout);
  ~IoService() override;
  IoService(const IoService&) = delete;
  IoService& operator=(const IoService&) = delete;

  /// Registers `memory` with every connection; reads land in it and writes leave from it.
  /// Ranges must not overlap.
  Status register_memory(std::span<std::byte> memory) override;
  /// Registers every range registered so far with connection `conn`, new in the pool (the
  /// pool opens it to new slabs only after this succeeded).
  Status add_connection(std::size_t conn);
  /// True when a connection pins registered memory (Capabilities::pins_registered_memory).
  bool pins_registered_memory() const;
  /// Runs `give_back` (which returns registered pages to the OS) only when no connection
  /// pins registered memory, and with no connection being added meanwhile: a server joining
  /// over verbs would pin the pages given back (see Capabilities::pins_registered_memory).
  /// Returns whether it ran.
  template <typename F>
  bool if_unpinned(F&& give_back) FARMEM_EXCLUDES(reg_mu_) {
    MutexLock reg(reg_mu_);
    if (pins_registered_memory()) return false;
    give_back();
    return true;
  }
  /// Deregisters a range registered with exactly these bounds.
  Status unregister_memory(std::span<std::byte> memory) override;

  /// Starts every operation of `batch`; returns at once. An error return started nothing.
  Status submit(IoBatch& batch) override;
  /// Waits for a submitted batch; returns its first error. Must follow every ok submit.
  Status wait(IoBatch& batch) override;
  /// Blocking single read/write (a per-thread batch, no allocation once warm).
  Status read(FarAddr src, std::span<std::byte> dst);
  Status write(FarAddr dst, std::span<const std::byte> src);

  IoCounters counters() const;

 private:
  /// One local range registered with every connection (index = connection index).
  struct LocalRange {
    std::size_t length = 0;
    std::vector<std::unique_ptr<transport::MemoryRegistration>> regs;
  };

  /// The key of the registration holding `p` for connection `conn`, and how many bytes from
  /// `p` on that registration covers (an op must not run past it).
  struct LocalKey {
    std::uint32_t lkey;
    std::uint64_t bytes;
  };
  Result<LocalKey> lkey_for(const std::byte* p, std::size_t conn) const
      FARMEM_EXCLUDES(ranges_mu_);
  /// Appends the ops of request number `request` to b.per_conn: one target per stripe for a
  /// read, every copy's for a write.
  Status append_ops(transport::OpKind kind, FarAddr far, std::byte* local, std::uint64_t n,
                    std::uint32_t request, IoBatch::Impl& b);
  void count(transport::OpKind kind, std::uint64_t n);
  void clear_ops(IoBatch::Impl& b);
  /// Resolves every request of `batch` into ops per connection.
  Status build(IoBatch& batch);
  /// Posts the ops build() made.
  Status post_all(IoBatch& batch) { return post_all(*batch.impl_); }
  Status post_all(IoBatch::Impl& b);
  /// Waits for every part posted; transport failures of a replicated pool go to b.failed,
  /// the first other error is returned.
  Status wait_posted(IoBatch::Impl& b);
  /// Replicated pools, after a transport failure: judges the failed servers dead, posts the
  /// reads they served again to live copies (only once no connection can touch their
  /// buffers: every wait of the round has returned), and checks the writes they served still
  /// have a live copy. kDataLoss when some request has none.
  Status fail_over(IoBatch::Impl& b);
  void leave_gate(IoBatch::Impl& b);

  FarPool& pool_;
  const std::chrono::nanoseconds timeout_;
  /// Serialises (un)registration and add_connection: every range gets a registration with
  /// every connection, index for index.
  /// Taken before ranges_mu_.
  Mutex reg_mu_ FARMEM_ACQUIRED_BEFORE(ranges_mu_);
  /// Guards ranges_: shared to look up lkeys, exclusive to change.
  mutable SharedMutex ranges_mu_;
  /// Keyed by start address.
  std::map<std::uintptr_t, LocalRange> ranges_ FARMEM_GUARDED_BY(ranges_mu_);
  std::atomic<std::uint64_t> reads_{0}, writes_{0}, bytes_read_{0}, bytes_written_{0};
};

}  // namespace farmem::pool
