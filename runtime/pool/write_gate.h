// WriteGate: orders the batches that write replicated far memory against the replicator's
// copy of one window into a new piece (far_pool.h, "Rebuilding"). While the gate is closed
// the copier may have several reads and writes in flight at once: what the gate keeps out is
// any writer, for the whole span from the window's first read to its last write.
//
// Writers are inside from before they resolve their addresses until wait() on their batch
// returned, and wait() may run on another thread than submit(): so this is not a
// std::shared_mutex (unlocking one from another thread is undefined) and the lock analysis
// does not see it. It is two atomics. A writer counts itself in, then looks at `closed_`; the
// closer sets `closed_`, then looks at the count. Both are seq_cst, so at least one of them
// sees the other (Dekker): either the writer backs out and waits for the gate to open, or
// the closer waits for it to leave. Nobody waits for a writer without a bound: close() gives
// up after `limit` (a thread that submits a second write batch before waiting for its first
// would otherwise block the closer, and itself behind it, for ever).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "common/dcheck.h"

namespace farmem::pool {

class WriteGate {
 public:
  /// Counts a writer in; blocks while the gate is closed.
  void enter() {
    for (;;) {  // ends when the gate is open at the writer's look; close() never holds it long
      writers_.fetch_add(1, std::memory_order_seq_cst);
      if (closed_.load(std::memory_order_seq_cst) == 0) return;
      leave();
      closed_.wait(1, std::memory_order_acquire);
    }
  }
  void leave() {
    [[maybe_unused]] const std::uint32_t was = writers_.fetch_sub(1, std::memory_order_seq_cst);
    FARMEM_DCHECK_GT(was, 0u);
  }
  /// Closes the gate once no writer is inside (one closer at a time). False, and the gate
  /// open again, when writers stayed inside for `limit`.
  bool close(std::chrono::nanoseconds limit) {
    [[maybe_unused]] const std::uint32_t was = closed_.exchange(1, std::memory_order_seq_cst);
    FARMEM_DCHECK_EQ(was, 0u);
    const auto end = std::chrono::steady_clock::now() + limit;
    while (writers_.load(std::memory_order_seq_cst) != 0) {  // bounded by `limit`
      if (std::chrono::steady_clock::now() >= end) {
        open();
        return false;
      }
      std::this_thread::sleep_for(kPoll);
    }
    return true;
  }
  void open() {
    closed_.store(0, std::memory_order_seq_cst);
    closed_.notify_all();
  }

 private:
  /// How often close() looks at the count: writes over a network take tens of microseconds
  /// at least, so polling finer would only burn the CPU the writers need.
  static constexpr std::chrono::microseconds kPoll{20};
  std::atomic<std::uint32_t> writers_{0};
  std::atomic<std::uint32_t> closed_{0};
};

}  // namespace farmem::pool
