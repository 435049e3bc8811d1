// Invariants that execute: FARMEM_DCHECK and friends (TensorPipe's TP_DCHECK), on in sanitizer
// and Debug builds, compiled out of release builds (cmake/FarmemOptions.cmake, FARMEM_DCHECK).
//
//   FARMEM_DCHECK(cond);                        // "dcheck failed at f.cc:12: cond"
//   FARMEM_DCHECK_MSG(cond, "frame {}", f);     // "... cond: frame 7" (fmt formatting)
//   FARMEM_DCHECK_EQ(a, b);  _NE _LT _LE _GT _GE  // "... a == b: 3 vs 5" (both values)
//
// When off, the condition is still compiled (it must type-check, and the variables it names
// count as used) but never evaluated: it sits in the discarded branch of an `if constexpr`.
// A failure writes one line to stderr and aborts. The line is written with write(2), not
// through the farmem logger: some checked code runs in a SIGBUS handler (region_sigbus.cc),
// where the logger's mutex may be held by the very thread that faulted.
//
// A DCHECK states a true invariant: one that fires in correct operation is a bug. Each costs
// O(1) where it stands; O(n) accounting checks run only where a pass ends, behind dcheck_due().
#pragma once

#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#ifndef FARMEM_DCHECK_ON
#error "FARMEM_DCHECK_ON is set by the farmem_warnings target (cmake/FarmemOptions.cmake)"
#endif

namespace farmem {

/// True in builds with invariant checks (FARMEM_DCHECK=ON, or AUTO in sanitizer/Debug builds).
inline constexpr bool kDcheckOn = FARMEM_DCHECK_ON != 0;

/// O(n) checks run on every call while n is at most this many items, and on one call in
/// ceil(n / kDcheckFullCheckItems) above: a check then costs about this many steps a call, however
/// large the structure (a 64 Ki-frame cache is not walked at every eviction pass).
inline constexpr std::size_t kDcheckFullCheckItems = 4096;

/// Whether an O(n) check over `n` items is due now (see kDcheckFullCheckItems). `calls`
/// counts the calls of one check site (a function-local static is enough: it only samples).
inline bool dcheck_due(std::atomic<std::uint64_t>& calls, std::size_t n) {
  if constexpr (!kDcheckOn) return false;
  const std::uint64_t every =
      std::max<std::uint64_t>(1, (n + kDcheckFullCheckItems - 1) / kDcheckFullCheckItems);
  return calls.fetch_add(1, std::memory_order_relaxed) % every == 0;
}

namespace detail {

/// Writes "farmem: dcheck failed at file:line: cond: message" to stderr and aborts.
[[noreturn]] void dcheck_failed(const char* file, int line, const char* cond,
                                std::string_view message) noexcept;

template <typename T>
std::string dcheck_value(const T& v) {
  if constexpr (std::is_enum_v<T>) {
    return fmt::format("{}", +static_cast<std::underlying_type_t<T>>(v));
  } else if constexpr (std::is_pointer_v<T>) {
    return fmt::format("{}", static_cast<const void*>(v));
  } else if constexpr (fmt::is_formattable<T>::value) {
    return fmt::format("{}", v);
  } else {
    return "?";
  }
}

template <typename A, typename B>
std::string dcheck_values(const A& a, const B& b) {
  return dcheck_value(a) + " vs " + dcheck_value(b);
}

// Integers compare by value whatever their signedness (std::cmp_*), so that a check of an
// int against a size_t neither warns nor lies.
template <typename A, typename B>
inline constexpr bool kDcheckIntegers =
    std::is_integral_v<A> && std::is_integral_v<B> && !std::is_same_v<A, bool> &&
    !std::is_same_v<B, bool>;

#define FARMEM_DCHECK_CMP_(name, op, cmp)                                  \
  template <typename A, typename B>                                       \
  bool dcheck_##name(const A& a, const B& b) {                            \
    if constexpr (kDcheckIntegers<A, B>) {                                \
      return cmp(a, b);                                                   \
    } else {                                                              \
      return a op b;                                                      \
    }                                                                     \
  }
FARMEM_DCHECK_CMP_(eq, ==, std::cmp_equal)
FARMEM_DCHECK_CMP_(ne, !=, std::cmp_not_equal)
FARMEM_DCHECK_CMP_(lt, <, std::cmp_less)
FARMEM_DCHECK_CMP_(le, <=, std::cmp_less_equal)
FARMEM_DCHECK_CMP_(gt, >, std::cmp_greater)
FARMEM_DCHECK_CMP_(ge, >=, std::cmp_greater_equal)
#undef FARMEM_DCHECK_CMP_

}  // namespace detail
}  // namespace farmem

#define FARMEM_DCHECK_MSG(cond, ...)                                                         \
  do {                                                                                       \
    if constexpr (::farmem::kDcheckOn) {                                                     \
      if (!(cond)) [[unlikely]] {                                                            \
        ::farmem::detail::dcheck_failed(__FILE__, __LINE__, #cond, ::fmt::format(__VA_ARGS__)); \
      }                                                                                      \
    }                                                                                        \
  } while (false)

#define FARMEM_DCHECK(cond) FARMEM_DCHECK_MSG(cond, "")

// Each operand is evaluated once; both are printed on failure.
#define FARMEM_DCHECK_OP_(name, op, a, b)                                                    \
  do {                                                                                       \
    if constexpr (::farmem::kDcheckOn) {                                                     \
      const auto& farmem_dcheck_a_ = (a);                                                    \
      const auto& farmem_dcheck_b_ = (b);                                                    \
      if (!::farmem::detail::dcheck_##name(farmem_dcheck_a_, farmem_dcheck_b_)) [[unlikely]] { \
        ::farmem::detail::dcheck_failed(                                                     \
            __FILE__, __LINE__, #a " " #op " " #b,                                           \
            ::farmem::detail::dcheck_values(farmem_dcheck_a_, farmem_dcheck_b_));            \
      }                                                                                      \
    }                                                                                        \
  } while (false)

#define FARMEM_DCHECK_EQ(a, b) FARMEM_DCHECK_OP_(eq, ==, a, b)
#define FARMEM_DCHECK_NE(a, b) FARMEM_DCHECK_OP_(ne, !=, a, b)
#define FARMEM_DCHECK_LT(a, b) FARMEM_DCHECK_OP_(lt, <, a, b)
#define FARMEM_DCHECK_LE(a, b) FARMEM_DCHECK_OP_(le, <=, a, b)
#define FARMEM_DCHECK_GT(a, b) FARMEM_DCHECK_OP_(gt, >, a, b)
#define FARMEM_DCHECK_GE(a, b) FARMEM_DCHECK_OP_(ge, >=, a, b)
