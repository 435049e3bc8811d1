// What the libFuzzer targets of test/fuzz share: a check that stops the run at the input
// that broke it, and a reader that walks an input as little-endian fields.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>

#include "common/log.h"

// abort(), not an exception or a return: libFuzzer records an abort as a crash and keeps the
// input, and ASan prints the stack of the check that failed.
#define FUZZ_CHECK(cond, ...)                                                            \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                 \
      std::fprintf(stderr, "\n");                                                        \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace farmem::fuzz {

/// Called once per process: the library logs every rejected input, which would cost more
/// than the input itself and bury libFuzzer's own report.
inline void quiet_logs() { set_log_level("off"); }

/// Consumes an input front to back; reads past its end yield zeros and `exhausted()`.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  bool exhausted() const { return pos_ >= in_.size(); }
  std::size_t left() const { return exhausted() ? 0 : in_.size() - pos_; }

  template <typename T>
  T take() {
    T v{};
    const std::size_t n = std::min(sizeof v, left());
    if (n > 0) std::memcpy(&v, in_.data() + pos_, n);
    pos_ += sizeof v;
    return v;
  }
  /// Up to n bytes (fewer at the end of the input).
  std::span<const std::byte> bytes(std::size_t n) {
    const std::size_t k = std::min(n, left());
    auto out = in_.subspan(exhausted() ? in_.size() : pos_, k);
    pos_ += k;
    return out;
  }

 private:
  std::span<const std::byte> in_;
  std::size_t pos_ = 0;
};

}  // namespace farmem::fuzz
