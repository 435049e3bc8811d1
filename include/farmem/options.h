// farmem/options.h: what a Runtime is opened with.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace farmem {

/// How an application expects to use a range of far memory (madvise-like).
enum class Advice : std::uint8_t {
  kNormal,      ///< detect access trends and prefetch along them
  kSequential,  ///< prefetch ahead at full depth
  kRandom,      ///< do not prefetch
  kWillNeed,    ///< fetch the range now, in the background
  kDontNeed,    ///< write the range back if dirty and drop it from local memory
};

/// Options of Runtime::open. Every field has a usable default: a default-constructed
/// RuntimeOptions opens a runtime on an embedded in-process memserver. Runtime::open checks
/// every combination that could only fail later and says which field to change.
struct RuntimeOptions {
  /// Memservers, as URLs: "rdma://host:port", "tcp://host:port", or "local" (an in-process
  /// memserver, for tests and single-host use). Slabs are placed round-robin across them.
  std::vector<std::string> servers{"local"};
  /// Token every memserver checks at connect (at most 48 bytes).
  std::string auth_token;
  /// Size of the registered local buffer (Runtime::local_buffer()); RDMA lands in it directly.
  std::size_t local_buffer_bytes = 64u << 20;
  /// Far memory is leased from memservers in slabs of this size (allocations larger than a
  /// slab get a slab of their own).
  std::uint64_t slab_bytes = 64u << 20;
  /// Capacity of the embedded memserver behind "local".
  std::uint64_t local_server_capacity = 1ull << 30;
  /// Deadline of one read, write or batch; past it the operation fails with kTimedOut.
  std::chrono::milliseconds op_timeout{10'000};
  /// Local memory for cached far pages (far_ptr, containers) and mapped regions together.
  std::uint64_t cache_budget_bytes = 256u << 20;
  /// Page size of the far_ptr cache: a power of two from 4 KiB to 2 MiB, dividing slab_bytes.
  std::uint32_t page_bytes = 4096;
  /// Trend-driven prefetch for the far_ptr cache.
  bool prefetch = true;
  /// Most pages one stream prefetches ahead.
  std::uint32_t max_prefetch_pages = 32;
  /// Deadline of connecting to one memserver (address resolution + handshake).
  std::chrono::milliseconds connect_timeout{5'000};
  /// Threads that may be inside the far_ptr cache (a DerefScope) at once, 1..65536. Each
  /// holds a slot the evictor scans; a thread beyond the limit gets kResourceExhausted from
  /// every translation (far_ptr::try_deref, container calls) until another thread exits.
  std::uint32_t max_cache_threads = 256;
};

}  // namespace farmem
