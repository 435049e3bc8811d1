// farmem/io_batch.h: reads and writes of far memory submitted together.
#pragma once

#include <cstddef>
#include <memory>
#include <span>

#include "farmem/far_addr.h"

namespace farmem {

namespace pool {
class IoService;
class FarIo;
}  // namespace pool

/// A batch of reads and writes submitted at once (Runtime::submit) and completed together
/// (Runtime::wait). Reusable: clear() keeps its buffers, so a steady stream of batches
/// allocates nothing. Every submitted batch must be waited for before it is cleared, reused
/// or destroyed; once wait() returned, nothing touches its buffers any more.
class IoBatch {
 public:
  IoBatch();
  ~IoBatch();
  IoBatch(IoBatch&&) noexcept;
  IoBatch& operator=(IoBatch&&) noexcept;

  /// Queues a read of far memory at `src` into `dst` (inside registered memory).
  void read(FarAddr src, std::span<std::byte> dst);
  /// Queues a write of `src` (inside registered memory) to far memory at `dst`.
  void write(FarAddr dst, std::span<const std::byte> src);
  /// Forgets the queued operations. Not allowed while the batch is in flight.
  void clear();
  std::size_t size() const;

  struct Impl;

 private:
  friend class pool::IoService;
  friend class pool::FarIo;  // lets FarIo implementations (test fakes) read the ops
  std::unique_ptr<Impl> impl_;
};

}  // namespace farmem
