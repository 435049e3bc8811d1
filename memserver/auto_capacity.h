// --capacity auto[:FRACTION]: a memserver that lends only what its host can spare. Every
// interval it re-reads MemAvailable and sets the slab pool's capacity to
//
//   capacity = FRACTION x (MemAvailable + leased) - reserve      (whole chunks, >= 0)
//
// "+ leased" because the slabs it already lent are no longer in MemAvailable. When the host's
// own applications take memory, MemAvailable falls, the capacity follows, new slabs are
// refused once it is below what is leased, and clients see less free room (ServerStats). A
// leased slab is never taken back (moving slabs away is the migration work of a later issue).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <string>
#include <thread>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/status.h"
#include "memserver/core.h"

namespace farmem::memserver {

struct AutoCapacityOptions {
  double fraction = 0.5;                     ///< share of the spare memory lent, in (0, 1]
  std::uint64_t reserve_bytes = 256ull << 20;  ///< kept for the host beyond the fraction
  std::chrono::milliseconds interval{1000};  ///< how often MemAvailable is re-read
  std::string meminfo_path = "/proc/meminfo";
};

/// "auto" or "auto:0.25" -> the fraction; kInvalidArgument for anything else.
Result<double> parse_auto_capacity(const std::string& spec);

/// The capacity formula above (pure).
std::uint64_t auto_capacity_bytes(std::uint64_t mem_available, std::uint64_t leased,
                                  const AutoCapacityOptions& options, std::uint64_t chunk);

/// Sets `core`'s capacity now and then every interval, from a thread of its own.
class AutoCapacity {
 public:
  /// Fails (and starts nothing) when MemAvailable cannot be read.
  static Result<std::unique_ptr<AutoCapacity>> start(Core& core, AutoCapacityOptions options);
  ~AutoCapacity();
  AutoCapacity(const AutoCapacity&) = delete;
  AutoCapacity& operator=(const AutoCapacity&) = delete;

  /// One re-evaluation now.
  Status update();

 private:
  AutoCapacity(Core& core, AutoCapacityOptions options) : core_(core), options_(std::move(options)) {}
  void run();

  Core& core_;
  const AutoCapacityOptions options_;
  Mutex mu_;  ///< guards stopping_ (and the thread's sleep)
  std::condition_variable cv_;
  bool stopping_ FARMEM_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace farmem::memserver
