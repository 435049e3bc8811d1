// RebuildPacer: how fast, and in what pieces, the replicator copies a lost piece (far_pool.h,
// "Rebuilding"). Pure logic: it is told the time, the count of foreground ops started so far
// and how long each copy took, and never touches a connection, so tests drive it with a
// made-up clock.
//
// The copy shares the connections (one queue pair, one TCP stream) and the link with the
// application's reads and writes, and a foreground op posted behind one of its transfers
// waits for all of it. So it copies in one of two modes:
//
//   mode        when                              wire op   ops under one   pace
//                                                            gate closing
//   ----------  --------------------------------  --------  --------------  ------------------
//   kYielding   a foreground op started within    16 KiB    1 (read, then   a duty cycle: after
//               the last kQuietFor                           write)          a copy that took t,
//                                                                            idle t(1-d)/d
//   kIdle       no foreground op for kQuietFor    256 KiB   up to 8, the    the cap alone
//                                                            next read
//                                                            overlapping
//                                                            this write
//
// The duty d (the share of time the copy keeps the link) adapts to the link, AIMD on the
// copy's own op times: a yielding copy slower per byte than kSlowFactor times the fastest
// recent one means the link or the memservers are queueing (the application is moving
// bytes), and d halves; else d grows by kDutyStep, up to kMaxDuty. d starts at kMinDuty each
// time the application wakes up, so the first copies after a failover, when the application
// may be busiest, are the gentlest. Both modes stay under the cap
// (RuntimeOptions::replica_copy_bytes_per_sec): copy k is due no earlier than the bytes
// before it at that rate allow, with at most kMaxBurst of unused credit saved up.
#pragma once

#include <chrono>
#include <cstdint>

namespace farmem::pool {

class RebuildPacer {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Mode : std::uint8_t { kIdle, kYielding };

  /// Bytes of one wire op while the application is active: a 4 KiB op queued behind it waits
  /// about four of its own transfer times (0.6 ms at the 25 MB/s of soft-RoCE under
  /// emulation), against 64 for the idle op.
  static constexpr std::uint64_t kYieldOpBytes = 16u << 10;
  /// Bytes of one wire op while the application is idle: ~0.1 ms of a 25 Gb/s link, and few
  /// enough ops that their latencies do not dominate a slow link's copy.
  static constexpr std::uint64_t kIdleOpBytes = 256u << 10;
  /// Ops copied under one closing of the write gate while idle: a 2 MiB slab (the
  /// memserver's lease granule) in one window, so that the window's first read and last
  /// write, which nothing overlaps, are paid once a slab. A writer arriving meanwhile is seen
  /// (its op count) and ends the window after the ops in flight.
  static constexpr std::uint64_t kIdleWindowOps = 8;
  /// The application counts as active this long after its last op started: longer than the
  /// gaps between the ops of a thread that waits for each (a few ms with page faults), short
  /// enough that an idle application gets the full pace back at once.
  static constexpr std::chrono::milliseconds kQuietFor{100};
  /// Duty bounds while yielding: at kMaxDuty a 4 KiB read meets a copy op in flight about
  /// one time in eight (the copy's time is split over its source's and its target's
  /// connections) and waits half of it on average: ~40 µs at 25 MB/s, about half the read's
  /// own latency there. kMinDuty still finishes 2 MiB in a few seconds on such a link.
  static constexpr double kMaxDuty = 0.25;
  static constexpr double kMinDuty = 1.0 / 32;
  static constexpr double kDutyStep = 1.0 / 64;
  /// A copy this much slower per byte than the fastest recent one is queueing behind others.
  static constexpr double kSlowFactor = 2.0;
  /// Credit a copy may save up against the cap while it waits or yields: a burst of this
  /// long at the cap is allowed, no more.
  static constexpr std::chrono::milliseconds kMaxBurst{50};

  struct Plan {
    Mode mode = Mode::kIdle;
    std::uint64_t op_bytes = kIdleOpBytes;  ///< bytes of one wire op
    std::uint64_t window_ops = 1;           ///< ops under one gate closing (overlapped if > 1)
    Clock::time_point not_before{};         ///< when the copy may start
  };
  struct Counters {
    std::uint64_t idle_copies = 0;      ///< copies done in kIdle
    std::uint64_t yielding_copies = 0;  ///< copies done in kYielding
    std::uint64_t backoffs = 0;         ///< times the duty was halved
  };

  /// `max_bytes_per_sec` > 0: the cap.
  explicit RebuildPacer(std::uint64_t max_bytes_per_sec);

  /// What to copy next and when, given the foreground ops started so far (a count that only
  /// grows). Idle is judged from changes of that count between calls.
  Plan plan(Clock::time_point now, std::uint64_t foreground_ops);
  /// Reports a planned copy of `bytes` that ran over [start, end), the write gate's wait
  /// excluded. Only copies of one whole op teach the duty (a piece's short tail costs more a
  /// byte without anything being slow).
  void copied(const Plan& p, Clock::time_point start, Clock::time_point end,
              std::uint64_t bytes);

  double duty() const { return duty_; }
  const Counters& counters() const { return counters_; }

 private:
  std::chrono::nanoseconds at_cap(std::uint64_t bytes) const;

  const std::uint64_t max_bytes_per_sec_;
  std::uint64_t seen_ops_ = 0;
  bool seen_any_ = false;
  Clock::time_point last_foreground_{};  ///< when plan() last saw the count move
  bool active_ = false;                  ///< whether the last plan was kYielding
  double duty_ = kMinDuty;
  double best_ns_per_byte_ = 0;  ///< fastest recent yielding copy (0: none yet)
  Clock::time_point cap_due_{};  ///< when the cap allows the next copy
  Clock::time_point duty_due_{};  ///< when the duty cycle allows the next copy
  Counters counters_;
};

}  // namespace farmem::pool
