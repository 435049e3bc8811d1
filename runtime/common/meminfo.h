// /proc/meminfo, read by the tier (the host's MemAvailable as a pressure signal) and by the
// memserver (--capacity auto: lend what the host can spare).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "farmem/status.h"

namespace farmem {

/// MemAvailable of a /proc/meminfo text, in bytes.
Result<std::uint64_t> parse_mem_available(std::string_view meminfo);
/// Reads `path` (normally /proc/meminfo) and returns its MemAvailable, in bytes.
Result<std::uint64_t> read_mem_available(const std::string& path = "/proc/meminfo");

/// Bytes of [base, base + bytes) that are resident in RAM now (mincore(2), page by page):
/// the part of a mapping that counts in the process's RSS. `base` must be page aligned.
/// Fails naming the errno when mincore does (e.g. a range not wholly mapped).
Result<std::uint64_t> resident_bytes(const void* base, std::size_t bytes);

}  // namespace farmem
