// Memory-pressure readings for the tier manager, behind an interface so that tests can drive
// the policy with made-up pressure. The system source reads, for the cgroup v2 the process
// is in (else the whole host):
//
//   <cgroup>/memory.pressure   "some avg10=1.23 avg60=0.50 avg300=0.10 total=123456"   PSI
//   <cgroup>/memory.current    bytes charged to the cgroup now
//   <cgroup>/memory.high       throttling limit ("max": none)
//   <cgroup>/memory.max        hard limit, OOM above it ("max": none)
//   /proc/meminfo              "MemAvailable:  123456 kB"
//
// falling back to /proc/pressure/memory when the cgroup has no memory.pressure (cgroup v1,
// or the memory controller not enabled for it).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "farmem/pressure.h"
#include "farmem/status.h"

namespace farmem::tier {

/// One reading (the public farmem::MemoryPressure: the same fields an application's own
/// source fills in).
using PressureReading = MemoryPressure;

class PressureSource {
 public:
  virtual ~PressureSource() = default;
  /// A fresh reading; an error when not even PSI can be read.
  virtual Result<PressureReading> read() = 0;
};

/// A source that calls a function (RuntimeOptions::pressure_source).
class FunctionPressureSource final : public PressureSource {
 public:
  explicit FunctionPressureSource(std::function<Result<PressureReading>()> fn)
      : fn_(std::move(fn)) {}
  Result<PressureReading> read() override { return fn_(); }

 private:
  std::function<Result<PressureReading>()> fn_;
};

/// Where the system source looks; tests point it at a made-up tree.
struct SystemPaths {
  std::string proc = "/proc";             ///< for self/cgroup, meminfo, pressure/memory
  std::string cgroup_root = "/sys/fs/cgroup";
};

/// Reads the files drawn above. The cgroup is found once, at construction, from
/// <proc>/self/cgroup (the "0::/path" line of cgroup v2).
class SystemPressureSource final : public PressureSource {
 public:
  explicit SystemPressureSource(SystemPaths paths = {});
  Result<PressureReading> read() override;
  /// The cgroup directory read from ("" when the process is in no cgroup v2).
  const std::string& cgroup_dir() const { return cgroup_dir_; }

 private:
  SystemPaths paths_;
  std::string cgroup_dir_;
};

// ---- parsers (pure; exposed for tests) ----

/// The "some" line of a PSI file: avg10 and total. kInvalidArgument on anything else.
Result<PressureReading> parse_psi(std::string_view text);
/// A cgroup limit file: a number, or "max" (nullopt).
Result<std::optional<std::uint64_t>> parse_cgroup_value(std::string_view text);
// MemAvailable: farmem::parse_mem_available (common/meminfo.h), shared with the memserver.
/// The cgroup v2 path of a /proc/<pid>/cgroup file ("0::/a/b" -> "/a/b"); nullopt if none.
std::optional<std::string> parse_cgroup_v2_path(std::string_view proc_cgroup);

}  // namespace farmem::tier
