// Memory-pressure readings: the parsers and the system source (see pressure.h).
#include "tier/pressure.h"

#include "common/meminfo.h"

#include <charconv>
#include <fstream>
#include <sstream>

namespace farmem::tier {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

std::optional<std::uint64_t> to_u64(std::string_view s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

/// The whole file, or nullopt when it cannot be opened.
std::optional<std::string> slurp(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Result<PressureReading> parse_psi(std::string_view text) {
  // "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=..."
  std::size_t line_end = text.find('\n');
  std::string_view line = text.substr(0, line_end);
  if (line.substr(0, 5) != "some ") return InvalidArgument("PSI text has no \"some\" line");
  PressureReading r;
  bool have_total = false, have_avg10 = false;
  line.remove_prefix(5);
  while (!line.empty()) {
    const std::size_t sp = line.find(' ');
    const std::string_view field = line.substr(0, sp);
    line = sp == std::string_view::npos ? std::string_view{} : line.substr(sp + 1);
    const std::size_t eq = field.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string_view key = field.substr(0, eq), value = field.substr(eq + 1);
    if (key == "total") {
      auto v = to_u64(value);
      if (!v) return InvalidArgument("PSI total is not a number: " + std::string(value));
      r.stall_total_us = *v;
      have_total = true;
    } else if (key == "avg10") {
      try {
        r.stall_avg10 = std::stod(std::string(value));
        have_avg10 = true;
      } catch (const std::exception&) {
        return InvalidArgument("PSI avg10 is not a number: " + std::string(value));
      }
    }
  }
  if (!have_total || !have_avg10) return InvalidArgument("PSI \"some\" line lacks avg10 or total");
  return r;
}

Result<std::optional<std::uint64_t>> parse_cgroup_value(std::string_view text) {
  const std::string_view t = trim(text);
  if (t == "max") return std::optional<std::uint64_t>{};
  auto v = to_u64(t);
  if (!v) return InvalidArgument("cgroup value is neither a number nor \"max\": " + std::string(t));
  return std::optional<std::uint64_t>{*v};
}

std::optional<std::string> parse_cgroup_v2_path(std::string_view proc_cgroup) {
  while (!proc_cgroup.empty()) {
    const std::size_t nl = proc_cgroup.find('\n');
    const std::string_view line = proc_cgroup.substr(0, nl);
    if (line.substr(0, 3) == "0::") return std::string(line.substr(3));
    if (nl == std::string_view::npos) break;
    proc_cgroup.remove_prefix(nl + 1);
  }
  return std::nullopt;
}

SystemPressureSource::SystemPressureSource(SystemPaths paths) : paths_(std::move(paths)) {
  if (auto text = slurp(paths_.proc + "/self/cgroup")) {
    if (auto path = parse_cgroup_v2_path(*text)) {
      cgroup_dir_ = paths_.cgroup_root + (*path == "/" ? std::string() : *path);
    }
  }
}

Result<PressureReading> SystemPressureSource::read() {
  PressureReading r;
  std::optional<std::string> psi;
  if (!cgroup_dir_.empty()) psi = slurp(cgroup_dir_ + "/memory.pressure");
  if (!psi) psi = slurp(paths_.proc + "/pressure/memory");
  if (!psi) {
    return Unavailable("no memory pressure information: neither " +
                       (cgroup_dir_.empty() ? std::string("a cgroup v2") : cgroup_dir_) +
                       "/memory.pressure nor " + paths_.proc +
                       "/pressure/memory can be read (kernel without PSI?)");
  }
  FARMEM_ASSIGN_OR_RETURN(r, parse_psi(*psi));
  if (!cgroup_dir_.empty()) {
    auto value = [&](const char* file) -> std::optional<std::uint64_t> {
      auto text = slurp(cgroup_dir_ + "/" + file);
      if (!text) return std::nullopt;
      auto v = parse_cgroup_value(*text);
      return v.ok() ? *v : std::nullopt;
    };
    r.cgroup_current = value("memory.current");
    r.cgroup_high = value("memory.high");
    r.cgroup_max = value("memory.max");
  }
  if (auto avail = read_mem_available(paths_.proc + "/meminfo"); avail.ok()) {
    r.mem_available = *avail;
  }
  return r;
}

}  // namespace farmem::tier
