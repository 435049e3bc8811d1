// What a kvload run does (main.cc fills it from flags; the tests may build it directly).
#pragma once

#include <cstdint>
#include <string>

#include "bench/kvload/keys.h"
#include "bench/kvload/protocol.h"

namespace farmem::kvload {

/// A run's phases, in order: every key set once (unless --no-load), unmeasured requests,
/// measured ones, then no new requests while the last replies come in.
enum class Phase : int { kLoad, kWarmup, kMeasure, kDrain };

struct LoadOptions {
  std::string host = "127.0.0.1";     ///< server address (name or IPv4/IPv6 literal)
  std::uint16_t port = 11211;         ///< server port
  Protocol protocol = Protocol::kText;  ///< memcached text or binary protocol
  double read_ratio = 0.95;           ///< share of gets in the run phase; the rest are sets
  KeyDist dist = KeyDist::kZipf;      ///< key popularity
  double zipf_theta = 0.99;           ///< Zipf skew, 0 <= theta < 1 (YCSB's default 0.99)
  std::uint64_t keys = 100000;        ///< distinct keys, indices 0..keys-1
  std::string key_prefix = "kvload:";  ///< key = prefix + decimal index
  std::uint32_t value_min = 100;      ///< value length, bytes (>= kMinValueBytes)
  std::uint32_t value_max = 100;      ///< = value_min: fixed; above: uniform in the range
  unsigned threads = 2;               ///< worker threads, each an epoll loop
  unsigned connections = 8;           ///< connections in all, spread over the threads
  unsigned pipeline = 1;              ///< requests outstanding per connection
  bool load = true;                   ///< set every key once before the run phase
  double warmup_s = 1;                ///< run-phase seconds before measuring starts
  double duration_s = 10;             ///< measured seconds (when ops == 0)
  std::uint64_t ops = 0;              ///< measured operations instead of a duration (0: off)
  double timeout_s = 10;              ///< the longest wait for a connect or any one reply
  double progress_s = 1;              ///< seconds between progress lines on stderr (0: none)
  std::uint64_t seed = 1;             ///< random stream of key and op choices
};

}  // namespace farmem::kvload
