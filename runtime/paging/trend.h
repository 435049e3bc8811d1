// Leap-style prefetching for one access stream: pure logic, no frames, no transport.
//
// Leap (Al Maruf & Chowdhury, ATC '20) finds the stride of a stream as the majority delta of
// its recent page accesses, looking first at a short recent window (reacts fast to a new
// phase) and widening it until a majority appears (tolerates noise). The prefetch depth then
// adapts to how many prefetched pages actually get used.
//
//   pages:   10  11  12  90  13  14  15
//   deltas:    +1  +1  +78 -77 +1  +1        (a ring of the newest `window` deltas)
//   newest 4:            {+78,-77,+1,+1}     +1 in 2 of 4: no strict majority, widen
//   newest 8 (6 held):   {+1,+1,+78,-77,+1,+1}  +1 in 4 of 6: trend +1
//   A random stream gets no majority in any sub-window: no trend, no prefetch.
//
// Nothing here is thread-safe: one stream's calls are serialised by its owner (the cache holds
// a per-stream lock or runs them on one thread).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace farmem::paging {

/// Detects the dominant stride in the most recent page deltas of one stream.
class TrendDetector {
 public:
  /// Leap's history size: long enough that a stride hit by 1-in-4 noise still holds a clear
  /// majority, short enough that trend() (O(window)) stays cheap on every access and a new
  /// phase takes over within about window / 2 accesses.
  static constexpr std::size_t kDefaultWindow = 32;
  /// The first sub-window looked at: in 4 deltas "more than half" means 3 agreeing, while a
  /// smaller one would accept two coincidental equal deltas of a random stream.
  static constexpr std::size_t kFirstSubWindow = 4;
  /// No trend until two deltas exist (and then both must agree): one delta proves nothing.
  static constexpr std::size_t kMinDeltas = 2;

  /// `window` below kMinDeltas is raised to it (a smaller one could never report a trend).
  explicit TrendDetector(std::size_t window = kDefaultWindow)
      : ring_(std::max(window, kMinDeltas), 0) {}

  std::size_t window() const { return ring_.size(); }
  /// Deltas currently held (at most window()).
  std::size_t deltas() const { return count_; }

  /// Records an access. The first access records no delta, and neither does a repeat of the
  /// previous page: objects sharing a page would otherwise drown the stride in zeros.
  void record(std::int64_t page) {
    if (has_last_ && page != last_page_) push(page - last_page_);
    last_page_ = page;
    has_last_ = true;
  }

  /// The dominant non-zero stride of the recent accesses, or nullopt (random access, or too
  /// little history). Sub-windows of the newest 4, 8, 16 ... window deltas are tried in turn;
  /// the first whose Boyer-Moore majority occurs in more than half of it wins.
  std::optional<std::int64_t> trend() const {
    if (count_ < kMinDeltas) return std::nullopt;
    for (std::size_t w = std::min(kFirstSubWindow, window());; w = std::min(2 * w, window())) {
      const std::size_t n = std::min(w, count_);
      if (const auto stride = majority(n)) return stride;
      if (n < w || w == window()) return std::nullopt;  // a wider window sees nothing new
    }
  }

  /// Forgets all history (the stream was reset or reused).
  void reset() {
    count_ = 0;
    next_ = 0;
    has_last_ = false;
  }

 private:
  void push(std::int64_t delta) {
    ring_[next_] = delta;
    next_ = (next_ + 1 == ring_.size()) ? 0 : next_ + 1;
    count_ = std::min(count_ + 1, ring_.size());
  }

  /// The i-th newest delta (0 = newest); i < count_.
  std::int64_t newest(std::size_t i) const {
    return ring_[(next_ + ring_.size() - 1 - i) % ring_.size()];
  }

  /// The strict majority of the newest n deltas if there is one and it is non-zero.
  std::optional<std::int64_t> majority(std::size_t n) const {
    std::int64_t candidate = 0;
    std::size_t votes = 0;
    for (std::size_t i = 0; i < n; ++i) {  // Boyer-Moore voting
      const std::int64_t d = newest(i);
      if (votes == 0) candidate = d;
      votes = (d == candidate) ? votes + 1 : votes - 1;
    }
    std::size_t occurrences = 0;
    for (std::size_t i = 0; i < n; ++i) occurrences += newest(i) == candidate ? 1 : 0;
    if (2 * occurrences <= n || candidate == 0) return std::nullopt;
    return candidate;
  }

  std::vector<std::int64_t> ring_;  ///< the newest deltas; next_ is where the next one goes
  std::size_t next_ = 0;
  std::size_t count_ = 0;
  std::int64_t last_page_ = 0;
  bool has_last_ = false;
};

/// Prefetch outcome counters of one stream.
struct PrefetchStats {
  std::uint64_t issued = 0;  ///< pages asked for
  std::uint64_t used = 0;    ///< prefetched pages later accessed
  std::uint64_t wasted = 0;  ///< prefetched pages evicted or dropped unused
};

/// How many pages ahead a stream prefetches; adapts to the outcome of earlier prefetches.
///
/// Policy (slow start, multiplicative decrease, as TCP treats its window):
///  - on_used():     after depth() uses in a row (a whole window's worth proved useful) the
///                   depth doubles, capped at max();
///  - on_wasted():   the depth halves at once, floored at min(): waste costs bandwidth and
///                   evicts useful pages;
///  - on_no_trend(): every kNoTrendAccessesPerDecay accesses without a trend (and with no use
///                   in between) halve the depth, so a long random phase starts the next
///                   stream cautiously while a single noisy access costs nothing.
class PrefetchDepth {
 public:
  /// The floor can be no lower: growth is driven by uses of prefetched pages, and a depth of
  /// 0 would issue none, so it could never grow again.
  static constexpr std::uint32_t kLowestMinDepth = 1;
  static constexpr std::uint32_t kDefaultMinDepth = 1;
  /// A new stream starts modestly: 4 pages (16 KiB) is one small RDMA batch.
  static constexpr std::uint32_t kDefaultInitialDepth = 4;
  /// 32 pages (128 KiB) ahead, Linux's default readahead; enough to cover a far-memory round
  /// trip at sequential-scan speed without flushing the cache with one stream's pages.
  static constexpr std::uint32_t kDefaultMaxDepth = 32;
  /// See the policy above: a random phase must last this long before each halving.
  static constexpr std::uint32_t kNoTrendAccessesPerDecay = 8;

  PrefetchDepth() : PrefetchDepth(kDefaultMinDepth, kDefaultInitialDepth, kDefaultMaxDepth) {}
  /// Clamps: min to at least kLowestMinDepth, max to at least min, initial into [min, max].
  PrefetchDepth(std::uint32_t min, std::uint32_t initial, std::uint32_t max)
      : min_(std::max(min, kLowestMinDepth)),
        max_(std::max(max, min_)),
        depth_(std::clamp(initial, min_, max_)) {}

  std::uint32_t depth() const { return depth_; }
  std::uint32_t min() const { return min_; }
  std::uint32_t max() const { return max_; }
  const PrefetchStats& stats() const { return stats_; }

  void on_issued(std::uint64_t pages) { stats_.issued += pages; }

  void on_used() {
    ++stats_.used;
    no_trend_run_ = 0;
    if (++used_run_ < depth_) return;
    used_run_ = 0;
    grow();
  }

  void on_wasted() {
    ++stats_.wasted;
    used_run_ = 0;
    shrink();
  }

  void on_no_trend() {
    if (++no_trend_run_ < kNoTrendAccessesPerDecay) return;
    no_trend_run_ = 0;
    shrink();
  }

 private:
  void grow() { depth_ = static_cast<std::uint32_t>(std::min<std::uint64_t>(2ull * depth_, max_)); }
  void shrink() { depth_ = std::max(depth_ / 2, min_); }

  std::uint32_t min_;
  std::uint32_t max_;
  std::uint32_t depth_;
  std::uint32_t used_run_ = 0;      ///< uses since the last waste or growth
  std::uint32_t no_trend_run_ = 0;  ///< trendless accesses since the last use or decay
  PrefetchStats stats_;
};

/// Application hints that override detection for a stream (madvise-like).
enum class Hint {
  kNormal,      ///< detect the trend
  kSequential,  ///< stride +1 at max depth from the first access
  kRandom,      ///< never prefetch
};

/// Trend detection plus adaptive depth for one stream: on each access, which pages to fetch.
///
/// Call on_access() for each demand access of the stream (a miss, or the first touch of a
/// prefetched page), and report the fate of each prefetched page with on_prefetched_page_used()
/// or on_prefetched_page_wasted(). The pages returned are suggestions: the cache drops those
/// already resident or in flight (after a jump back, pages may be suggested again).
class StreamPrefetcher {
 public:
  StreamPrefetcher() = default;
  explicit StreamPrefetcher(PrefetchDepth depth,
                            std::size_t window = TrendDetector::kDefaultWindow)
      : detector_(window), depth_(depth) {}

  /// Records an access to `page` and appends to `out` the pages to prefetch now: along the
  /// stride, up to depth pages ahead, skipping pages this stream already asked for. To batch
  /// requests, nothing is asked while more than half the depth is still ahead of `page`.
  /// Returns the number of pages appended.
  std::size_t on_access(std::int64_t page, std::vector<std::int64_t>& out) {
    detector_.record(page);
    if (hint_ == Hint::kRandom) return 0;
    const std::optional<std::int64_t> stride = current_stride();
    if (!stride) {
      depth_.on_no_trend();
      return 0;
    }
    const std::uint64_t depth = target_depth();
    const std::uint64_t ahead = requested_ahead(page, *stride);
    if (2 * ahead > depth) return 0;
    for (std::uint64_t i = ahead + 1; i <= depth; ++i) {
      out.push_back(page + *stride * static_cast<std::int64_t>(i));
    }
    remember_frontier(page + *stride * static_cast<std::int64_t>(depth), *stride);
    depth_.on_issued(depth - ahead);
    return depth - ahead;
  }

  void set_hint(Hint hint) { hint_ = hint; }
  Hint hint() const { return hint_; }

  void on_prefetched_page_used() { depth_.on_used(); }
  void on_prefetched_page_wasted() { depth_.on_wasted(); }

  /// The stride on_access() would follow now (hint-aware); nullopt when it would not prefetch.
  std::optional<std::int64_t> current_stride() const {
    if (hint_ == Hint::kRandom) return std::nullopt;
    if (hint_ == Hint::kSequential) return 1;
    return detector_.trend();
  }
  const PrefetchDepth& depth() const { return depth_; }
  const TrendDetector& detector() const { return detector_; }
  const PrefetchStats& stats() const { return depth_.stats(); }

 private:
  std::uint32_t target_depth() const {
    return hint_ == Hint::kSequential ? depth_.max() : depth_.depth();
  }

  /// How many pages along `stride` after `page` this stream has already asked for: those up
  /// to the frontier, if the frontier lies ahead on the same lattice and not impossibly far
  /// (further than any depth could reach means `page` jumped back: a new run).
  std::uint64_t requested_ahead(std::int64_t page, std::int64_t stride) const {
    if (!has_frontier_ || frontier_stride_ != stride) return 0;
    const std::int64_t distance = frontier_ - page;
    if (distance % stride != 0) return 0;
    const std::int64_t steps = distance / stride;
    if (steps <= 0 || steps > static_cast<std::int64_t>(depth_.max())) return 0;
    return static_cast<std::uint64_t>(steps);
  }

  void remember_frontier(std::int64_t frontier, std::int64_t stride) {
    frontier_ = frontier;
    frontier_stride_ = stride;
    has_frontier_ = true;
  }

  TrendDetector detector_;
  PrefetchDepth depth_;
  Hint hint_ = Hint::kNormal;
  /// The furthest page asked for, along frontier_stride_ (page numbers are far below 2^62, so
  /// page + stride * depth cannot overflow).
  std::int64_t frontier_ = 0;
  std::int64_t frontier_stride_ = 0;
  bool has_frontier_ = false;
};

}  // namespace farmem::paging
