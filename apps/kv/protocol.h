// The memcached protocols, text and binary, over a Store: one Session per connection turns
// the bytes a client sent into replies. No sockets here (server.h owns them), so the tests
// drive a Session with byte strings as well as over TCP.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kv/store.h"

namespace farmem::kv {

/// The longest command line (text protocol) a session buffers: a get of ~250 long keys.
/// A longer line without its newline is refused ("CLIENT_ERROR line too long") and the
/// connection closed, since nothing after it can be parsed.
inline constexpr std::size_t kMaxLineBytes = 64 * 1024;
/// The version the server reports: memcached-compatible numbers first (clients parse
/// major.minor.micro), then ours.
inline constexpr const char* kReportedVersion = "1.6.0-farmem-kv";
/// process() stops taking requests once this many reply bytes wait to be sent: a client
/// pipelining gets without reading its replies is served as it reads them.
inline constexpr std::size_t kMaxPendingReplyBytes = 4u << 20;

/// Per-worker command counters (relaxed atomics: each worker writes its own, `stats` sums).
struct Counters {
  std::atomic<std::uint64_t> cmd_get{0}, cmd_set{0}, cmd_flush{0}, cmd_touch{0}, get_hits{0},
      get_misses{0}, delete_hits{0}, delete_misses{0}, incr_hits{0}, incr_misses{0},
      decr_hits{0}, decr_misses{0}, cas_hits{0}, cas_misses{0}, cas_badval{0}, touch_hits{0},
      touch_misses{0}, bytes_read{0}, bytes_written{0}, protocol_errors{0};
  void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

using StatList = std::vector<std::pair<std::string, std::string>>;

/// What every session of a server shares.
struct Context {
  Store* store = nullptr;
  std::uint64_t item_max = 1u << 20;
  /// Appends the general statistics ("stats" with no argument), server and store together.
  std::function<void(StatList&)> stats;
  /// Appends "stats settings".
  std::function<void(StatList&)> settings;
  /// Zeroes what "stats reset" resets.
  std::function<void()> reset_stats;
  std::atomic<int> verbosity{0};
};

class Session {
 public:
  Session(Context& ctx, Counters& counters) : ctx_(ctx), c_(counters) {}

  /// Answers every complete request at the start of `in` (text or binary, told apart by
  /// the first byte of each request), appending the replies to `out`. Returns the bytes
  /// used; the caller keeps the rest for the next call. Sets *close when the connection
  /// must end after `out` is sent (quit, or input that cannot be parsed further).
  std::size_t process(std::string_view in, std::string& out, bool* close);

  /// Keys of the retrieval requests complete in `in` (a hint: nothing is executed), for a
  /// prefetch of all of them before process() answers them one by one.
  static void collect_get_keys(std::string_view in, std::vector<std::string_view>& keys);

 private:
  static constexpr std::size_t kNeedMore = ~std::size_t{0};
  // text_protocol.cc: the line at the start of `in`; returns the bytes used or kNeedMore.
  std::size_t text_request(std::string_view in, std::size_t line_end, std::string& out,
                           bool* close);
  std::size_t text_store(std::vector<std::string_view>& tok, std::string_view data,
                         std::string& out);
  /// The keys tok[first_key..] of a get/gets/gat/gats; `last` ends the reply with END (a
  /// line longer than kMaxLineBytes is answered in parts as its keys arrive).
  void text_get(std::vector<std::string_view>& tok, std::size_t first_key, bool with_cas,
                std::optional<std::int64_t> touch, std::string& out, bool last = true);
  /// A retrieval line too long to buffer: answers its complete keys so far; kNeedMore when
  /// it is not one.
  std::size_t long_get(std::string_view in, std::string& out);
  void text_arith(std::vector<std::string_view>& tok, bool incr, std::string& out);
  void text_stats(std::vector<std::string_view>& tok, std::string& out);
  // binary_protocol.cc: one binary request at the start of `in`.
  std::size_t binary_request(std::string_view in, std::string& out, bool* close);

  Context& ctx_;
  Counters& c_;
  std::uint64_t swallow_ = 0;  ///< bytes of a refused value still to be skipped
  /// Inside a retrieval line answered in parts (long_get): what it asked for.
  struct LongGet {
    bool with_cas = false;
    std::optional<std::int64_t> touch;
    bool failed = false;  ///< an error was sent: the rest of the line is dropped, no END
  };
  std::optional<LongGet> long_get_;
  std::string scratch_;        ///< a value on its way to `out`
};

}  // namespace farmem::kv
