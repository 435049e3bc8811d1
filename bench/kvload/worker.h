// A worker thread: one epoll loop over a few connections, each kept `pipeline` requests deep.
// Why epoll loops and not a thread per connection: hundreds of connections on a 2-core host
// would be hundreds of threads contending with the server under test; a few loops each
// multiplexing many sockets keep kvload's own CPU share small and its latencies honest.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bench/kvload/connection.h"
#include "bench/kvload/histogram.h"
#include "bench/kvload/keys.h"
#include "bench/kvload/options.h"
#include "bench/kvload/value.h"

namespace farmem::kvload {

/// What the runner and all its workers share. Written by the runner (phase, ops_left) and
/// read by the workers, or the other way round (loaded, the first error); all atomics but
/// `error`, which its mutex guards.
struct Shared {
  Shared(const LoadOptions& o, std::uint32_t run_id);
  const LoadOptions& opt;
  const KeyChooser keys;
  const ValueCodec codec;
  /// Per key: versions handed out by this run so far (the next set's version).
  std::unique_ptr<std::atomic<std::uint64_t>[]> issued;
  std::atomic<Phase> phase{Phase::kLoad};
  std::atomic<std::int64_t> ops_left{0};  ///< --ops: measured requests still to issue
  std::atomic<bool> abort{false};         ///< a worker failed: everyone stops
  std::atomic<unsigned> loaded{0};        ///< workers done with the load phase

  /// Records the first fatal error and tells every worker to stop.
  void fail(const Status& st);
  Status error() const;

 private:
  mutable std::mutex mu_;  ///< guards error_
  Status error_;
};

/// Counts of one worker (then of the run, merged). Only its worker writes them; the runner
/// reads them after join, except the atomics, which progress lines read while it runs.
struct OpStats {
  std::uint64_t gets = 0, sets = 0, hits = 0, misses = 0, errors = 0, wrong = 0;
  Histogram get_ns, set_ns;
  std::string first_error;  ///< what the server said the first time it refused a request
  void merge(const OpStats& o);
};

class Worker {
 public:
  /// `conn_first`..+`conn_count`: this worker's connections' global indices (the load splits
  /// the keys over all connections by index).
  Worker(Shared& shared, unsigned index, unsigned conn_first, unsigned conn_count);
  ~Worker();
  /// The thread's body: connect, load, run until the drain, wait for every reply.
  void run();

  OpStats load, warmup, measured;  ///< by the phase each request was issued in
  std::atomic<std::uint64_t> completed{0};      ///< replies so far (all phases), for progress
  std::atomic<std::uint64_t> last_measured_ns{0};  ///< when its last measured reply came

 private:
  enum class Mode { kLoad, kRun, kDrain };
  Status connect_all();
  Status pump(int timeout_ms);
  Status on_readable(Connection& c);
  Status refill(Connection& c);
  Status arm(Connection& c);
  void issue(Connection& c, OpKind op, std::uint64_t key, Phase phase);
  Status complete(Connection& c, const Reply& r);
  Status check_deadlines();
  bool idle() const;
  Status body();
  /// Pumps in `mode` until done() or an abort.
  Status pump_until(Mode mode, const std::function<bool()>& done, int poll_ms);

  Shared& s_;
  unsigned conn_first_, conn_count_;
  int ep_ = -1;
  Mode mode_ = Mode::kLoad;
  SplitMix rng_;
  std::vector<std::unique_ptr<Connection>> conns_;
  std::string key_, value_;  ///< scratch: the key and value of the request being built
};

}  // namespace farmem::kvload
