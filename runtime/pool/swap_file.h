// SwapFile: a local file as the pool's overflow, in the spirit of ghostmemory's swap sized by
// need. It speaks the Connection interface, so the I/O service reads and writes it like a
// memserver: a "slab" is an extent of the file, a "remote address" a file offset.
//
// - Grows on demand: a lease fallocate()s its extent (slabs are whole chunks of the file), so
//   the file holds blocks only for leased slabs; capped at max_bytes.
// - Shrinks when emptied: a freed slab's extent is hole-punched (FALLOC_FL_PUNCH_HOLE), and
//   the file is truncated to the end of its last leased extent.
// - Ops run synchronously in post() (pread/pwrite); wait() has nothing left to drive.
// - Remembers which pages of each slab were written since take_dirty() last asked, so a slab
//   can be copied out while it is written and the pages written meanwhile copied again.
//
// The file is created exclusively (an existing file is never overwritten) with mode 0600 and
// removed when the SwapFile is destroyed. Its data means nothing after the process ends.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/status.h"
#include "pool/slab_allocator.h"
#include "transport/transport.h"

namespace farmem::pool {

struct SwapFileOptions {
  std::string path;
  std::uint64_t max_bytes = 0;          ///< cap on leased extents
  std::uint64_t chunk_bytes = 64u << 10;  ///< extents are multiples of it
};

struct SwapFileStats {
  std::uint64_t used_bytes = 0;       ///< bytes in leased extents
  std::uint64_t slabs = 0;            ///< leased extents
  std::uint64_t file_bytes = 0;       ///< the file's size
  std::uint64_t allocated_bytes = 0;  ///< disk blocks the file holds (st_blocks * 512)
};

class SwapFile final : public transport::Connection {
 public:
  static Result<std::unique_ptr<SwapFile>> create(SwapFileOptions options);
  ~SwapFile() override;

  const transport::Capabilities& capabilities() const override { return caps_; }
  const std::string& peer() const override { return peer_; }
  Result<std::unique_ptr<transport::MemoryRegistration>> register_memory(
      void* addr, std::size_t length) override;
  Status post(std::span<const transport::Op> ops, transport::Completion& done) override;
  Status wait(transport::Completion& done, std::chrono::nanoseconds timeout) override;
  /// kAllocSlab, kFreeSlab and kStats, as a memserver answers them.
  Result<proto::Message> call(proto::Message request, std::chrono::nanoseconds timeout) override;

  /// Pages (offset in the slab, bytes) of slab `slab_id` written since the last call; clears
  /// the record. Adjacent pages come as one range.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> take_dirty(std::uint64_t slab_id);
  /// Reads `out.size()` bytes at file offset `addr` (no registration needed).
  Status read_raw(std::uint64_t addr, std::span<std::byte> out);
  SwapFileStats stats() const;

 private:
  struct Extent {
    std::uint64_t offset = 0;
    std::uint64_t id = 0;
    std::uint64_t bytes = 0;
    std::vector<std::uint8_t> dirty;  ///< one flag a 4 KiB page
  };
  SwapFile(SwapFileOptions options, int fd);
  Result<proto::SlabInfo> lease(std::uint64_t bytes);
  Status release(std::uint64_t slab_id);
  /// The extent holding [addr, addr + len), or an error worded like a memserver's.
  Result<Extent*> extent_for_locked(std::uint64_t addr, std::uint64_t len, std::uint32_t rkey)
      FARMEM_REQUIRES(mu_);

  const SwapFileOptions options_;
  const int fd_;
  transport::Capabilities caps_;
  std::string peer_;
  /// Guards everything below. The file's I/O runs under it too (post, read_raw), so that
  /// take_dirty() sees every write whole.
  mutable Mutex mu_;
  SlabAllocator space_ FARMEM_GUARDED_BY(mu_);  ///< file offsets
  std::map<std::uint64_t, Extent> extents_ FARMEM_GUARDED_BY(mu_);  ///< by file offset
  std::uint64_t next_id_ FARMEM_GUARDED_BY(mu_) = 1;
};

}  // namespace farmem::pool
