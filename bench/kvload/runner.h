// A whole kvload run: validates the options, starts the workers, steps them through the
// phases (load, warm-up, measure, drain) and merges what they counted.
#pragma once

#include <cstdint>

#include "bench/kvload/options.h"
#include "bench/kvload/worker.h"
#include "farmem/status.h"

namespace farmem::kvload {

struct Report {
  unsigned threads = 0;      ///< worker threads used (at most one per connection)
  std::uint32_t run_id = 0;  ///< the stamp in this run's values
  double load_s = 0;         ///< the load phase's wall time (0 with --no-load)
  double measured_s = 0;     ///< from the start of measuring to its last reply
  OpStats load, warmup, measured;
  /// Gets in any phase that returned bytes never written for their key (must be 0).
  std::uint64_t wrong_total() const { return load.wrong + warmup.wrong + measured.wrong; }
};

/// kInvalidArgument for options that cannot run; what a worker failed with (kUnavailable:
/// refused or closed, kTimedOut: no reply in time, kProtocolError: a reply out of step).
Result<Report> run_load(const LoadOptions& o);

/// The checks run_load makes before it starts.
Status validate(const LoadOptions& o);

}  // namespace farmem::kvload
