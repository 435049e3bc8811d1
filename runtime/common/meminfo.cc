// /proc/meminfo parsing and mincore residency (see meminfo.h).
#include "common/meminfo.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

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

Result<std::uint64_t> resident_bytes(const void* base, std::size_t bytes) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  // A window at a time, so that asking about a large arena costs a small vector.
  constexpr std::size_t kWindowPages = 4096;
  std::vector<unsigned char> vec(kWindowPages);
  std::uint64_t resident = 0;
  auto* p = static_cast<unsigned char*>(const_cast<void*>(base));
  for (std::size_t off = 0; off < bytes; off += kWindowPages * page) {
    const std::size_t len = std::min(bytes - off, kWindowPages * page);
    if (::mincore(p + off, len, vec.data()) != 0) {
      return Internal(std::string("mincore: ") + std::strerror(errno));
    }
    const std::size_t pages = (len + page - 1) / page;
    for (std::size_t i = 0; i < pages; ++i) resident += (vec[i] & 1) ? page : 0;
  }
  return resident;
}

}  // namespace farmem
