// Parallel loops of farmem-graph that stop at the first error: oneTBB's parallel_for over
// task indices, each task returning a Status.
#pragma once

#include <farmem/status.h>
#include <oneapi/tbb/parallel_for.h>

#include <atomic>
#include <cstddef>
#include <mutex>

namespace farmem::graph {

/// The first error any task reported; tasks that start after it skip their work.
class FirstError {
 public:
  void set(Status s) {
    if (s.ok()) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (first_.ok()) first_ = std::move(s);
    failed_.store(true, std::memory_order_relaxed);
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  Status take() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_;
  }

 private:
  std::mutex mu_;  // guards first_
  Status first_;
  std::atomic<bool> failed_{false};
};

/// Runs fn(i) -> Status for i in [0, n) on oneTBB's workers; the first error, or ok.
template <typename Fn>
Status parallel_tasks(std::size_t n, Fn&& fn) {
  FirstError err;
  tbb::parallel_for(std::size_t{0}, n, [&](std::size_t i) {
    if (!err.failed()) err.set(fn(i));
  });
  return err.take();
}

}  // namespace farmem::graph
