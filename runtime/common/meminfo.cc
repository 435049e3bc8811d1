// /proc/meminfo parsing (see meminfo.h).
#include "common/meminfo.h"

#include <charconv>
#include <fstream>
#include <sstream>

namespace farmem {

namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}
}  // namespace

Result<std::uint64_t> parse_mem_available(std::string_view meminfo) {
  constexpr std::string_view kKey = "MemAvailable:";
  const std::size_t at = meminfo.find(kKey);
  if (at == std::string_view::npos) return InvalidArgument("meminfo has no MemAvailable");
  std::string_view rest = meminfo.substr(at + kKey.size());
  rest = trim(rest.substr(0, rest.find('\n')));
  if (rest.size() < 3 || rest.substr(rest.size() - 2) != "kB") {
    return InvalidArgument("MemAvailable is not in kB: " + std::string(rest));
  }
  const std::string_view digits = trim(rest.substr(0, rest.size() - 2));
  std::uint64_t kb = 0;
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), kb);
  if (ec != std::errc() || p != digits.data() + digits.size()) {
    return InvalidArgument("MemAvailable is not a number: " + std::string(rest));
  }
  return kb * 1024;
}

Result<std::uint64_t> read_mem_available(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Unavailable("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  auto bytes = parse_mem_available(ss.str());
  if (!bytes.ok()) return bytes.status().with_context(path);
  return bytes;
}

}  // namespace farmem
