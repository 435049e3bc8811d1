// farmem/pressure.h: one reading of memory pressure, as the swap-like tier sees it
// (RuntimeOptions::pressure_source lets an application or a test supply its own).
#pragma once

#include <cstdint>
#include <optional>

namespace farmem {

struct MemoryPressure {
  /// PSI "some" total in microseconds: time some task stalled on memory (monotonic). The tier
  /// looks at its growth between readings.
  std::uint64_t stall_total_us = 0;
  double stall_avg10 = 0;                        ///< PSI "some" avg10 (percent), for stats
  std::optional<std::uint64_t> cgroup_current;  ///< the cgroup's memory.current
  std::optional<std::uint64_t> cgroup_high;     ///< memory.high (nullopt: none)
  std::optional<std::uint64_t> cgroup_max;      ///< memory.max (nullopt: none)
  std::optional<std::uint64_t> mem_available;   ///< the host's MemAvailable, bytes
};

}  // namespace farmem
