// Where farmem-sort's records live: a mapped far region, or plain memory from the allocator
// (the same code on both, so that far memory can be compared with the kernel's swap).
#pragma once

#include <farmem/farmem.h>
#include <farmem/region.h>

#include <cstddef>
#include <memory>

namespace farmem::sort {

/// A byte range the sort works on, with madvise-like hints. Hints never change contents.
class Memory {
 public:
  virtual ~Memory() = default;
  virtual std::byte* data() const = 0;
  virtual std::size_t size() const = 0;
  /// A hint about [offset, offset + length). Far: Region::advise. Plain: the nearest madvise
  /// (kSequential, kRandom, kNormal, kWillNeed as named; kDontNeed as MADV_COLD, which keeps
  /// the contents, marking the pages first in line for reclaim).
  virtual Status advise(std::size_t offset, std::size_t length, Advice advice) = 0;
  /// Makes the range resident before a system call reads it (Region::prefault; needed in
  /// FaultMode::kFaultingThread). Plain: nothing to do.
  virtual Status prefault(std::size_t offset, std::size_t length) = 0;
  /// Counters (zeros for plain memory).
  virtual CacheStats stats() const = 0;
};

/// `bytes` of a region mapped from `rt`.
Result<std::unique_ptr<Memory>> map_far(Runtime& rt, std::size_t bytes, const RegionOptions& o);
/// `bytes` of page-aligned memory from the allocator.
Result<std::unique_ptr<Memory>> allocate_plain(std::size_t bytes);

}  // namespace farmem::sort
