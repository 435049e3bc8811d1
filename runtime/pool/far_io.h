// FarIo: the far I/O the layers above the pool use, as an interface, so that the paging core
// can be unit tested with a fake (test/paging/fake_far_io.h) without a transport or a Runtime.
// The one real implementation is pool::IoService.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "farmem/far_addr.h"
#include "farmem/io_batch.h"
#include "farmem/status.h"

namespace farmem::pool {

class FarIo {
 public:
  virtual ~FarIo() = default;

  /// Registers `memory`; reads land in it and writes leave from it. Ranges must not overlap.
  virtual Status register_memory(std::span<std::byte> memory) = 0;
  /// Deregisters a range registered with exactly these bounds.
  virtual Status unregister_memory(std::span<std::byte> memory) = 0;
  /// Starts every operation of `batch`; returns at once. An error return started nothing.
  virtual Status submit(IoBatch& batch) = 0;
  /// Waits for a submitted batch; returns its first error. Must follow every ok submit.
  virtual Status wait(IoBatch& batch) = 0;

 protected:
  /// One queued operation of a batch, as a FarIo implementation sees it.
  struct BatchOp {
    bool write = false;  ///< false: read far -> local
    FarAddr far;
    std::byte* local = nullptr;
    std::uint64_t bytes = 0;
  };
  /// The operations queued in `batch`, in order (implemented beside IoBatch).
  static std::vector<BatchOp> ops_of(const IoBatch& batch);
};

}  // namespace farmem::pool
