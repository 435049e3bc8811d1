// farmem/options.h: what a Runtime is opened with.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace farmem {

/// Options of Runtime::open. Every field has a usable default: a default-constructed
/// RuntimeOptions opens a runtime on an embedded in-process memserver.
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
  /// Deadline of connecting to one memserver (address resolution + handshake).
  std::chrono::milliseconds connect_timeout{5'000};
};

}  // namespace farmem
