// Values kvload writes, and the check of a value read back. Every value is derived from
// (run, key, version): its length and every byte, so a get can tell whether the bytes it got
// are a value that was ever written for that key.
//
//    byte 0        4        8                16               24           length
//       +--------+--------+----------------+----------------+------ ... ------+
//       | "KVL1" | run id | key index (LE) | version (LE)   | filler          |
//       +--------+--------+----------------+----------------+------ ... ------+
//
// filler: splitmix64 words seeded by a hash of (run, key, version), truncated to the length;
// length: value_min + hash(run, key, version) % (value_max - value_min + 1).
//
// Versions count per key within a run (the load writes version 0). A value stamped with this
// run's id must carry a version this run has already issued for that key; a value stamped by
// another run (--no-load over an earlier run's keys) is checked only for consistency: the key
// and filler its stamp implies (that run's value lengths are not known here).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace farmem::kvload {

/// The stamp's bytes: a shorter value could not say which key and version it is.
inline constexpr std::uint32_t kMinValueBytes = 24;

class ValueCodec {
 public:
  ValueCodec(std::uint32_t run_id, std::uint32_t value_min, std::uint32_t value_max)
      : run_(run_id), min_(value_min), max_(value_max) {}

  std::uint32_t run_id() const { return run_; }
  /// The value of (key, version) of this run, into `out` (replacing its contents).
  void make(std::uint64_t key, std::uint64_t version, std::string& out) const;

  enum class Verdict {
    kOk,     ///< a value of this key: this run's with an issued version, or another run's
    kWrong,  ///< not a value ever written for this key
  };
  /// `issued`: versions 0..issued-1 of this key were handed out by this run so far.
  Verdict check(std::uint64_t key, std::uint64_t issued, std::string_view got) const;

 private:
  std::uint32_t length(std::uint32_t run, std::uint64_t key, std::uint64_t version) const;
  static std::uint64_t seed(std::uint32_t run, std::uint64_t key, std::uint64_t version);
  static void fill(std::uint64_t seed, char* out, std::size_t n);

  std::uint32_t run_, min_, max_;
};

}  // namespace farmem::kvload
