// Shared by the Google Benchmark binaries: a console reporter that also keeps each case's
// per-iteration real times, so main() can print ratios measured in the same run.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace farmem::bench {

/// Prints like the console reporter and keeps each repetition's real time per iteration.
class CapturingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
      const double us =
          r.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(r.time_unit) * 1e6;
      samples_[r.run_name.function_name].push_back(us);
    }
    ConsoleReporter::ReportRuns(runs);
  }
  /// Median microseconds per iteration of a case; -1 when it did not run.
  double median_us(const std::string& name) const {
    auto it = samples_.find(name);
    if (it == samples_.end() || it->second.empty()) return -1;
    std::vector<double> v = it->second;
    std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
    return v[v.size() / 2];
  }

 private:
  std::map<std::string, std::vector<double>> samples_;
};

}  // namespace farmem::bench
