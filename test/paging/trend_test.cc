// Leap-style trend detection, adaptive prefetch depth and the per-stream prefetcher, as pure
// logic: access sequences in, page numbers out.
#include "paging/trend.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <deque>
#include <utility>
#include <random>
#include <set>
#include <vector>

namespace farmem::paging {
namespace {

std::optional<std::int64_t> trend_of(const std::vector<std::int64_t>& pages) {
  TrendDetector d;
  for (std::int64_t p : pages) d.record(p);
  return d.trend();
}

std::vector<std::int64_t> strided(std::int64_t start, std::int64_t stride, int n) {
  std::vector<std::int64_t> pages;
  for (int i = 0; i < n; ++i) pages.push_back(start + stride * i);
  return pages;
}

// Pages in a run with probability kStay, else a jump to a random page (from which the run
// continues): about 75 % of the deltas are the stride.
std::vector<std::int64_t> noisy_sequential(std::mt19937_64& rng, int n) {
  constexpr double kStay = 0.75;
  std::bernoulli_distribution stay(kStay);
  std::uniform_int_distribution<std::int64_t> anywhere(0, 1 << 24);
  std::vector<std::int64_t> pages{anywhere(rng)};
  while (static_cast<int>(pages.size()) < n) pages.push_back(stay(rng) ? pages.back() + 1 : anywhere(rng));
  return pages;
}

TEST(TrendDetector, NoTrendWithoutHistory) {
  EXPECT_FALSE(trend_of({}).has_value());
  EXPECT_FALSE(trend_of({7}).has_value());
  EXPECT_FALSE(trend_of({7, 8}).has_value());  // one delta proves nothing
  EXPECT_EQ(trend_of({7, 8, 9}), 1);
}

TEST(TrendDetector, ForwardStrides) {
  EXPECT_EQ(trend_of(strided(100, 1, 50)), 1);
  EXPECT_EQ(trend_of(strided(100, 3, 50)), 3);
  EXPECT_EQ(trend_of(strided(0, 512, 10)), 512);
}

TEST(TrendDetector, ReverseScans) {
  EXPECT_EQ(trend_of(strided(10000, -1, 50)), -1);
  EXPECT_EQ(trend_of(strided(10000, -2, 50)), -2);
}

TEST(TrendDetector, WidensTheWindowPastRecentNoise) {
  // The example drawn in trend.h: the newest 4 deltas hold no majority, the newest 6 do.
  EXPECT_EQ(trend_of({10, 11, 12, 90, 13, 14, 15}), 1);
  // Noise that dominates even the widest window: no trend.
  EXPECT_FALSE(trend_of({10, 11, 500, 3, 90000, 12, 40}).has_value());
}

TEST(TrendDetector, NewPhaseTakesOverFromTheRecentWindow) {
  std::vector<std::int64_t> pages = strided(0, 1, 40);
  for (std::int64_t p : strided(5000, -2, 4)) pages.push_back(p);  // 3 deltas of -2 (+ a jump)
  EXPECT_EQ(trend_of(pages), -2);
}

TEST(TrendDetector, RepeatedTouchesOfOnePageAreIgnored) {
  EXPECT_FALSE(trend_of({5, 5, 5, 5, 5, 5}).has_value());
  std::vector<std::int64_t> pages;
  for (std::int64_t p = 0; p < 20; ++p) pages.insert(pages.end(), {p, p, p});  // 3 objects a page
  EXPECT_EQ(trend_of(pages), 1);
}

TEST(TrendDetector, NoisySequentialStillDetected) {
  std::mt19937_64 rng(42);
  const std::vector<std::int64_t> pages = noisy_sequential(rng, 5000);
  TrendDetector d;
  int checked = 0, plus_one = 0, other = 0;
  for (std::size_t i = 0; i < pages.size(); ++i) {
    d.record(pages[i]);
    if (i < TrendDetector::kDefaultWindow) continue;  // let the history fill first
    ++checked;
    const auto t = d.trend();
    if (t == 1) ++plus_one;
    else if (t.has_value()) ++other;
  }
  EXPECT_GE(plus_one, checked * 95 / 100);
  EXPECT_EQ(other, 0);
}

TEST(TrendDetector, RandomPagesAlmostNeverShowATrend) {
  std::mt19937_64 rng(7);
  for (std::int64_t range : {std::int64_t{1} << 30, std::int64_t{64}}) {
    std::uniform_int_distribution<std::int64_t> page(0, range - 1);
    int checked = 0, detected = 0;
    for (int seq = 0; seq < 1000; ++seq) {
      TrendDetector d;
      for (int i = 0; i < 64; ++i) {
        d.record(page(rng));
        ++checked;
        detected += d.trend().has_value() ? 1 : 0;
      }
    }
    // A small range makes coincidental equal deltas likelier, yet still rare.
    EXPECT_LT(detected, checked / 100) << "range " << range;
  }
}

TEST(TrendDetector, SmallWindowAndReset) {
  TrendDetector d(1);  // raised to kMinDeltas
  EXPECT_EQ(d.window(), TrendDetector::kMinDeltas);
  for (std::int64_t p : {1, 2, 3}) d.record(p);
  EXPECT_EQ(d.trend(), 1);
  d.reset();
  EXPECT_EQ(d.deltas(), 0u);
  EXPECT_FALSE(d.trend().has_value());
  d.record(100);  // no delta against the forgotten page 3
  EXPECT_EQ(d.deltas(), 0u);
}

TEST(PrefetchDepth, ClampsItsBounds) {
  PrefetchDepth zero_min(0, 0, 8);
  EXPECT_EQ(zero_min.min(), PrefetchDepth::kLowestMinDepth);
  EXPECT_EQ(zero_min.depth(), PrefetchDepth::kLowestMinDepth);
  PrefetchDepth inverted(4, 100, 2);
  EXPECT_EQ(inverted.max(), 4u);
  EXPECT_EQ(inverted.depth(), 4u);
}

TEST(PrefetchDepth, GrowsWhileUsedAndHalvesWhenWasted) {
  PrefetchDepth d(1, 4, 64);
  for (int i = 0; i < 3; ++i) d.on_used();
  EXPECT_EQ(d.depth(), 4u);  // not yet a whole window of uses
  d.on_used();
  EXPECT_EQ(d.depth(), 8u);
  for (int i = 0; i < 8; ++i) d.on_used();
  EXPECT_EQ(d.depth(), 16u);
  for (int i = 0; i < 100; ++i) d.on_used();
  EXPECT_EQ(d.depth(), 64u);  // capped
  d.on_wasted();
  EXPECT_EQ(d.depth(), 32u);
  d.on_wasted();
  EXPECT_EQ(d.depth(), 16u);
  for (int i = 0; i < 10; ++i) d.on_wasted();
  EXPECT_EQ(d.depth(), 1u);  // floored
  EXPECT_EQ(d.stats().used, 112u);
  EXPECT_EQ(d.stats().wasted, 12u);
}

TEST(PrefetchDepth, WasteResetsTheRunOfUses) {
  PrefetchDepth d(1, 4, 64);
  for (int i = 0; i < 3; ++i) d.on_used();
  d.on_wasted();  // 2
  d.on_used();
  EXPECT_EQ(d.depth(), 2u);  // one use after the waste is not a whole window of 2
  d.on_used();
  EXPECT_EQ(d.depth(), 4u);
}

TEST(PrefetchDepth, DecaysDuringARandomPhase) {
  PrefetchDepth d(2, 32, 32);
  for (std::uint32_t i = 0; i + 1 < PrefetchDepth::kNoTrendAccessesPerDecay; ++i) d.on_no_trend();
  EXPECT_EQ(d.depth(), 32u);  // a few trendless accesses cost nothing
  d.on_no_trend();
  EXPECT_EQ(d.depth(), 16u);
  for (int i = 0; i < 100; ++i) d.on_no_trend();
  EXPECT_EQ(d.depth(), 2u);
}

// Drives a StreamPrefetcher over `pages` the way the cache would: a page in flight that gets
// accessed is "used"; one not accessed within kLifetime accesses is evicted unused, "wasted".
struct Replay {
  std::size_t accesses = 0;
  std::size_t requested = 0;
  std::size_t duplicates = 0;  ///< pages asked for while already in flight
  std::size_t hits = 0;        ///< accesses to a page in flight
  std::size_t wasted = 0;      ///< evicted unused, including those left at the end
};

// A stand-in for cache capacity: how many accesses a prefetched page survives unused.
constexpr std::size_t kLifetime = 256;

Replay replay(StreamPrefetcher& s, const std::vector<std::int64_t>& pages) {
  Replay r;
  std::set<std::int64_t> in_flight;
  std::deque<std::pair<std::int64_t, std::size_t>> issued;  // page, access index, in order
  std::vector<std::int64_t> out;
  for (std::int64_t p : pages) {
    const std::size_t now = r.accesses++;
    for (; !issued.empty() && issued.front().second + kLifetime < now; issued.pop_front()) {
      if (in_flight.erase(issued.front().first) == 1) {
        ++r.wasted;
        s.on_prefetched_page_wasted();
      }
    }
    if (in_flight.erase(p) == 1) {
      ++r.hits;
      s.on_prefetched_page_used();
    }
    out.clear();
    const std::size_t n = s.on_access(p, out);
    EXPECT_EQ(n, out.size());
    for (std::int64_t q : out) {
      r.duplicates += in_flight.insert(q).second ? 0 : 1;
      issued.emplace_back(q, now);
    }
    r.requested += out.size();
  }
  r.wasted += in_flight.size();  // left over, not reported: callers inspect the depth reached
  return r;
}

// Also checks that no page is ever requested twice over the whole scan (not just while in
// flight): a scan visits each page once, so every page is asked for at most once.
void expect_scan_prefetched(std::int64_t stride) {
  constexpr int kPages = 10000;
  const std::vector<std::int64_t> pages = strided(1 << 20, stride, kPages);
  StreamPrefetcher s;
  std::set<std::int64_t> ever;
  std::vector<std::int64_t> out;
  std::size_t requested = 0, misses = 0;
  for (std::int64_t p : pages) {
    if (!ever.contains(p)) ++misses;
    out.clear();
    s.on_access(p, out);
    for (std::int64_t q : out) EXPECT_TRUE(ever.insert(q).second) << "page " << q << " twice";
    requested += out.size();
  }
  // Only the accesses before the trend is known miss; every later page was asked for ahead.
  EXPECT_LE(misses, TrendDetector::kMinDeltas + 1);
  std::size_t accessed = 0;
  for (std::int64_t p : pages) accessed += ever.contains(p) ? 1 : 0;
  EXPECT_GE(accessed * 100, requested * 90) << "at least 90 % of requested pages get used";
}

TEST(StreamPrefetcher, SequentialScanRequestsEachPageOnceAhead) { expect_scan_prefetched(1); }
TEST(StreamPrefetcher, StrideThreeScan) { expect_scan_prefetched(3); }
TEST(StreamPrefetcher, ReverseScan) { expect_scan_prefetched(-1); }

TEST(StreamPrefetcher, SequentialScanGrowsDepthAndBatches) {
  StreamPrefetcher s;
  const Replay r = replay(s, strided(0, 1, 10000));
  EXPECT_EQ(r.duplicates, 0u);
  EXPECT_GE(r.hits, 10000u - 3);
  EXPECT_EQ(s.depth().depth(), PrefetchDepth::kDefaultMaxDepth);  // all used: grew to max
  EXPECT_EQ(s.stats().issued, r.requested);
  EXPECT_EQ(s.stats().used, r.hits);
  EXPECT_LT(r.wasted, PrefetchDepth::kDefaultMaxDepth + 1);  // only the overshoot at the end
  // Batching: at max depth a refill asks for at least half the depth at once.
  std::vector<std::int64_t> out;
  std::size_t calls_that_asked = 0;
  for (std::int64_t p = 10000; p < 11000; ++p) {
    const std::size_t n = s.on_access(p, out);
    if (n > 0) {
      ++calls_that_asked;
      EXPECT_GE(n, PrefetchDepth::kDefaultMaxDepth / 2);
    }
  }
  EXPECT_GT(calls_that_asked, 0u);
  EXPECT_LE(calls_that_asked, 1000u / (PrefetchDepth::kDefaultMaxDepth / 2) + 1);
}

TEST(StreamPrefetcher, RandomScanRequestsAlmostNothing) {
  std::mt19937_64 rng(99);
  std::uniform_int_distribution<std::int64_t> page(0, (1 << 20) - 1);
  std::vector<std::int64_t> pages;
  for (int i = 0; i < 10000; ++i) pages.push_back(page(rng));
  StreamPrefetcher s;
  const Replay r = replay(s, pages);
  EXPECT_LT(r.requested * 100, r.accesses * 2);
  EXPECT_EQ(s.depth().depth(), s.depth().min());  // decayed during the random phase
}

TEST(StreamPrefetcher, NoisySequentialMostlyHits) {
  std::mt19937_64 rng(5);
  StreamPrefetcher s;
  const Replay r = replay(s, noisy_sequential(rng, 10000));
  // A jump may land inside an older run still in flight; re-asking there is rare (and the cache
  // filters pages in flight anyway).
  EXPECT_LE(r.duplicates * 100, r.requested);
  // About 75 % of accesses continue a run; nearly all of those must have been prefetched.
  EXPECT_GE(r.hits * 100, r.accesses * 70);
  // Runs average 4 pages, so some overshoot is inherent; waste feedback keeps it bounded.
  EXPECT_GE(r.hits * 100, r.requested * 40);
  EXPECT_LT(s.depth().depth(), PrefetchDepth::kDefaultMaxDepth);
}

TEST(StreamPrefetcher, SequentialHintPrefetchesAtMaxDepthImmediately) {
  StreamPrefetcher s(PrefetchDepth(1, 2, 16));
  s.set_hint(Hint::kSequential);
  EXPECT_EQ(s.hint(), Hint::kSequential);
  std::vector<std::int64_t> out;
  EXPECT_EQ(s.on_access(100, out), 16u);  // no history needed
  EXPECT_EQ(out, strided(101, 1, 16));
  out.clear();
  EXPECT_EQ(s.on_access(50, out), 16u);  // even against a backwards history
  EXPECT_EQ(out.front(), 51);
}

TEST(StreamPrefetcher, RandomHintDisablesPrefetch) {
  StreamPrefetcher s;
  s.set_hint(Hint::kRandom);
  std::vector<std::int64_t> out;
  for (std::int64_t p = 0; p < 100; ++p) EXPECT_EQ(s.on_access(p, out), 0u);
  EXPECT_TRUE(out.empty());
  EXPECT_FALSE(s.current_stride().has_value());
  // Back to normal: the history recorded meanwhile shows the trend at once.
  s.set_hint(Hint::kNormal);
  EXPECT_GT(s.on_access(100, out), 0u);
  EXPECT_EQ(out.front(), 101);
}

TEST(StreamPrefetcher, JumpBackStartsANewRun) {
  StreamPrefetcher s;
  std::vector<std::int64_t> out;
  for (std::int64_t p = 1000; p < 1010; ++p) s.on_access(p, out);
  ASSERT_FALSE(out.empty());
  // Deep inside an earlier run the frontier means nothing: ask again from the new position.
  out.clear();
  ASSERT_GT(s.on_access(0, out), 0u);
  EXPECT_EQ(out.front(), 1);
}

}  // namespace
}  // namespace farmem::paging
