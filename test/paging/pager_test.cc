// The paging core (paging/pager.h) on a fake far memory (fake_far_io.h) and a fake front end:
// CLOCK order, dirty-only coalesced write-back, write-back failures, flush, the background
// evictor's reserve, the budget under threads and across pagers, prefetch feedback, drops.
#include "paging/pager.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <thread>
#include <vector>

#include "paging/budget.h"
#include "fake_far_io.h"

namespace farmem::paging {
namespace {

using farmem::test::FakeFarIo;
using std::chrono::milliseconds;
using Clk = std::chrono::steady_clock;

constexpr std::uint32_t kPage = 4096;
constexpr std::uint64_t kFarBase = std::uint64_t{1} << 32;
constexpr std::uint64_t kBigBudget = std::uint64_t{1} << 40;

/// The bytes of page `key` after its `version`-th write; version 0 is "never written": zeros,
/// which is what the fake's far memory reads where nothing was written.
std::vector<std::byte> pattern(std::uint64_t key, std::uint32_t version) {
  std::vector<std::byte> out(kPage);
  if (version == 0) return out;
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>((key * 131 + version * 29 + i * 7 + 1) & 0xff);
  }
  return out;
}

/// A front end over a local arena of `frames` pages. Page `key` lives at far address
/// base + key * page. Models a region: lock_pages() takes a page mutex that accessors hold
/// too (page_mutex()), isolate() keeps pinned keys, drop() may refuse keys, and `resident`
/// (guarded by the page mutex) maps keys to frames for tests that fault pages in and out.
/// Records every call and counts breaches of the Frontend contract.
class FakeFrontend : public Frontend {
 public:
  FakeFrontend(std::uint32_t frames, std::uint64_t far_base = kFarBase,
               std::uint32_t write_back_batch = 32)
      : base_(far_base), wb_batch_(write_back_batch),
        arena_(std::size_t{frames} * kPage) {}

  std::span<std::byte> frame_bytes(std::uint32_t f) {
    return {arena_.data() + std::size_t{f} * kPage, kPage};
  }
  void fill(std::uint32_t f, std::uint64_t key, std::uint32_t version) {
    auto p = pattern(key, version);
    std::copy(p.begin(), p.end(), frame_bytes(f).begin());
  }
  bool frame_holds(std::uint32_t f, std::uint64_t key, std::uint32_t version) {
    auto p = pattern(key, version);
    return std::equal(p.begin(), p.end(), frame_bytes(f).begin());
  }

  // ---- Frontend ----

  void lock_pages() override {
    page_mu_.lock();
    in_pass_ = true;
  }
  void unlock_pages() override {
    in_pass_ = false;
    page_mu_.unlock();
  }
  FarAddr far_of(std::uint64_t key) const override { return FarAddr{base_ + key * kPage}; }
  void on_second_chance(std::uint32_t frame, std::uint64_t key) override {
    std::lock_guard lock(rec_mu_);
    if (!in_pass_) ++violations_;
    (void)frame;
    second_chances_.push_back(key);
  }
  void isolate(std::span<Victim> victims, bool for_flush) override {
    std::lock_guard lock(rec_mu_);
    if (!in_pass_ || !sorted(victims)) ++violations_;
    ++isolate_calls_;
    if (for_flush) ++flush_isolates_;
    for (Victim& v : victims) {
      if (pinned_.contains(v.key)) v.keep = true;
    }
  }
  void stage(std::span<const Victim> victims,
             std::span<std::span<const std::byte>> sources) override {
    std::lock_guard lock(rec_mu_);
    if (!in_pass_ || !sorted(victims) || victims.size() > wb_batch_ ||
        sources.size() != victims.size()) {
      ++violations_;
    }
    ++stage_calls_;
    for (std::size_t i = 0; i < victims.size(); ++i) {
      if (victims[i].keep) ++violations_;
      staged_.push_back(victims[i].key);
      sources[i] = frame_bytes(victims[i].frame);
    }
  }
  void drop(std::span<Victim> victims) override {
    std::lock_guard lock(rec_mu_);
    if (!in_pass_ || !sorted(victims)) ++violations_;
    for (Victim& v : victims) {
      if (v.keep) ++violations_;  // kept victims must not reach drop()
      if (refuse_drop_.contains(v.key)) {
        v.keep = true;
        continue;
      }
      dropped_.push_back(v.key);
      resident_.erase(v.key);
    }
  }
  void restore(std::span<Victim> victims) override {
    std::lock_guard lock(rec_mu_);
    if (!in_pass_) ++violations_;
    for (const Victim& v : victims) restored_.push_back(v.key);
  }

  // ---- test controls ----

  void pin(std::uint64_t key) {
    std::lock_guard lock(rec_mu_);
    pinned_.insert(key);
  }
  void unpin(std::uint64_t key) {
    std::lock_guard lock(rec_mu_);
    pinned_.erase(key);
  }
  void refuse_drop(std::uint64_t key) {
    std::lock_guard lock(rec_mu_);
    refuse_drop_.insert(key);
  }
  void clear_records() {
    std::lock_guard lock(rec_mu_);
    second_chances_.clear();
    staged_.clear();
    dropped_.clear();
    restored_.clear();
  }

  /// Held by accessors of pages (and by every pager pass, through lock_pages()).
  std::mutex& page_mutex() { return page_mu_; }
  /// Caller holds page_mutex().
  std::optional<std::uint32_t> resident_frame(std::uint64_t key) {
    std::lock_guard lock(rec_mu_);
    auto it = resident_.find(key);
    if (it == resident_.end()) return std::nullopt;
    return it->second;
  }
  void set_resident(std::uint64_t key, std::uint32_t frame) {
    std::lock_guard lock(rec_mu_);
    resident_[key] = frame;
  }
  std::size_t resident_count() {
    std::lock_guard lock(rec_mu_);
    return resident_.size();
  }

  std::vector<std::uint64_t> second_chances() { return get(second_chances_); }
  std::vector<std::uint64_t> staged() { return get(staged_); }
  std::vector<std::uint64_t> dropped() { return get(dropped_); }
  std::vector<std::uint64_t> restored() { return get(restored_); }
  std::uint64_t isolate_calls() { return get(isolate_calls_); }
  std::uint64_t flush_isolates() { return get(flush_isolates_); }
  std::uint64_t stage_calls() { return get(stage_calls_); }
  std::uint64_t violations() { return get(violations_); }

 private:
  template <class T>
  T get(const T& v) {
    std::lock_guard lock(rec_mu_);
    return v;
  }
  template <class V>
  static bool sorted(std::span<V> v) {
    return std::is_sorted(v.begin(), v.end(),
                          [](const Victim& a, const Victim& b) { return a.key < b.key; });
  }

  const std::uint64_t base_;
  const std::uint32_t wb_batch_;
  std::vector<std::byte> arena_;
  std::mutex page_mu_;
  bool in_pass_ = false;  // written and read with page_mu_ held

  std::mutex rec_mu_;  // guards everything below
  std::set<std::uint64_t> pinned_, refuse_drop_;
  std::map<std::uint64_t, std::uint32_t> resident_;
  std::vector<std::uint64_t> second_chances_, staged_, dropped_, restored_;
  std::uint64_t isolate_calls_ = 0, flush_isolates_ = 0, stage_calls_ = 0, violations_ = 0;
};

PagerOptions manual(std::uint32_t frames) {
  PagerOptions o;
  o.page_bytes = kPage;
  o.frames = frames;
  o.background_evictor = false;
  return o;
}

std::unique_ptr<Pager> make(FakeFarIo& io, Budget& budget, FakeFrontend& fe, PagerOptions o) {
  auto r = Pager::create(io, budget, fe, std::move(o));
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return std::move(r).value();  // throws (failing the test) on an error
}

// Faults in keys 0 .. n-1: a frame each, filled with pattern(key, 1) and installed; a clean
// page's far copy is made current first (as after a fetch). Returns key -> frame.
std::map<std::uint64_t, std::uint32_t> load_keys(Pager& p, FakeFrontend& fe, FakeFarIo& io,
                                                 std::uint64_t n,
                                                 const std::function<bool(std::uint64_t)>& dirty) {
  std::map<std::uint64_t, std::uint32_t> frame_of;
  for (std::uint64_t key = 0; key < n; ++key) {
    auto f = p.take_frame(Clk::now() + milliseconds(1000));
    EXPECT_TRUE(f.ok()) << f.status().to_string();
    if (!f.ok()) break;
    frame_of[key] = *f;
    fe.fill(*f, key, 1);
    if (!dirty(key)) io.write_far(fe.far_of(key), pattern(key, 1));
    p.install(*f, key, dirty(key), false);
  }
  return frame_of;
}

/// Takes every frame of `p` and returns them sorted (frame f holds arena page f).
std::vector<std::uint32_t> take_all(Pager& p) {
  std::vector<std::uint32_t> out;
  std::uint32_t f = 0;
  while (p.try_take_frame(&f)) out.push_back(f);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::byte> far_page(FakeFarIo& io, FakeFrontend& fe, std::uint64_t key) {
  return io.read_far(fe.far_of(key), kPage);
}

std::vector<std::uint64_t> sorted_copy(std::vector<std::uint64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
template <class Cond>
bool eventually(Cond&& cond, milliseconds limit = milliseconds(10000)) {
  const auto deadline = Clk::now() + limit;
  while (!cond()) {
    if (Clk::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

// ---------------------------------------------------------------------------------------

TEST(Pager, CreateRejectsTooFewFramesAndZeroSizes) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  for (std::uint32_t frames : {0u, 1u, kMinFrames - 1}) {
    auto r = Pager::create(io, budget, fe, manual(frames));
    ASSERT_FALSE(r.ok()) << frames;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << frames;
  }
  PagerOptions zero_page = manual(8);
  zero_page.page_bytes = 0;
  EXPECT_EQ(Pager::create(io, budget, fe, zero_page).status().code(),
            StatusCode::kInvalidArgument);
  PagerOptions zero_batch = manual(8);
  zero_batch.write_back_batch = 0;
  EXPECT_EQ(Pager::create(io, budget, fe, zero_batch).status().code(),
            StatusCode::kInvalidArgument);

  auto ok = Pager::create(io, budget, fe, manual(kMinFrames));
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ((*ok)->frames(), kMinFrames);
  // The reserve is clamped to 1 .. frames / 4.
  PagerOptions big_reserve = manual(16);
  big_reserve.reserve_frames = 100;
  EXPECT_EQ(make(io, budget, fe, big_reserve)->reserve_frames(), 4u);
  PagerOptions no_reserve = manual(16);
  no_reserve.reserve_frames = 0;
  EXPECT_EQ(make(io, budget, fe, no_reserve)->reserve_frames(), 1u);
}

TEST(Pager, FramesAreChargedFromTakeUntilFree) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  {
    auto p = make(io, budget, fe, manual(8));
    std::uint32_t a = 0, b = 0;
    ASSERT_TRUE(p->try_take_frame(&a));
    ASSERT_TRUE(p->try_take_frame(&b));
    EXPECT_NE(a, b);
    EXPECT_EQ(p->state(a), FrameState::kLoading);
    EXPECT_EQ(budget.used(), 2u * kPage);
    EXPECT_EQ(p->frames_in_use(), 2u);
    EXPECT_EQ(p->free_frames(), 6u);
    p->give_back(a);
    EXPECT_EQ(p->state(a), FrameState::kFree);
    EXPECT_EQ(budget.used(), 1u * kPage);
    p->install(b, 7, /*dirty=*/false, /*referenced=*/false);
    EXPECT_EQ(p->state(b), FrameState::kPresent);
    EXPECT_EQ(p->key_of(b), 7u);
    EXPECT_EQ(p->key_of(a), kNoKey);
    EXPECT_EQ(p->stats().peak_frames_in_use, 2u);
  }
  EXPECT_EQ(budget.used(), 0u);  // the destructor uncharges frames still in use
}

TEST(Pager, ClockEvictsUnreferencedFirstAndGivesReferencedASecondChance) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  auto p = make(io, budget, fe, manual(8));
  const auto frames = take_all(*p);
  ASSERT_EQ(frames, (std::vector<std::uint32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  const std::set<std::uint32_t> referenced = {0, 2, 3, 5};
  for (std::uint32_t f : frames) p->install(f, 100 + f, false, referenced.contains(f));

  Status err;
  ASSERT_EQ(p->evict(2, &err), 2u);
  EXPECT_TRUE(err.ok()) << err.to_string();
  EXPECT_EQ(sorted_copy(fe.dropped()), (std::vector<std::uint64_t>{101, 104}));
  EXPECT_EQ(fe.second_chances(), (std::vector<std::uint64_t>{100, 102, 103}));
  for (std::uint32_t f : frames) {
    const bool gone = f == 1 || f == 4;
    EXPECT_EQ(p->state(f), gone ? FrameState::kFree : FrameState::kPresent) << f;
  }
  for (std::uint32_t f : {0u, 2u, 3u}) EXPECT_FALSE(p->referenced(f)) << f;
  EXPECT_TRUE(p->referenced(5));  // the hand stopped before 5

  // The hand goes on from 5: 5 gets its second chance, 6 and 7 go, then 0, whose chance
  // was used up in the first pass.
  fe.clear_records();
  ASSERT_EQ(p->evict(3, &err), 3u);
  EXPECT_EQ(fe.second_chances(), (std::vector<std::uint64_t>{105}));
  EXPECT_EQ(sorted_copy(fe.dropped()), (std::vector<std::uint64_t>{100, 106, 107}));
  EXPECT_EQ(p->stats().evictions, 5u);
  EXPECT_EQ(p->frames_in_use(), 3u);
  EXPECT_EQ(budget.used(), 3u * kPage);
  EXPECT_EQ(io.write_ops(), 0u);  // all clean
  EXPECT_EQ(fe.violations(), 0u);
}

TEST(Pager, WritesBackOnlyDirtyPagesAndCoalescesAdjacentOnes) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  auto p = make(io, budget, fe, manual(8));
  const auto frames = take_all(*p);
  ASSERT_EQ(frames.size(), 8u);
  // frame -> (key, dirty). Keys 0-2 are adjacent in far and local memory: one write. Key 4
  // is alone (3 is clean). Keys 10 and 11 are adjacent in far memory but their frames are
  // 7 and 6, backwards in local memory: two writes.
  struct Page {
    std::uint64_t key;
    bool dirty;
  };
  const Page pages[8] = {{0, true}, {1, true},  {2, true},  {3, false},
                         {4, true}, {5, false}, {11, true}, {10, true}};
  for (std::uint32_t f : frames) {
    fe.fill(f, pages[f].key, 1);
    p->install(f, pages[f].key, pages[f].dirty, false);
  }
  for (std::uint32_t f : frames) EXPECT_EQ(p->dirty(f), pages[f].dirty) << f;

  Status err;
  EXPECT_EQ(p->evict(8, &err), 8u);
  EXPECT_TRUE(err.ok()) << err.to_string();

  const auto writes = io.writes();
  ASSERT_EQ(writes.size(), 4u);
  std::map<std::uint64_t, std::uint64_t> by_addr;  // far -> bytes
  for (const auto& w : writes) by_addr[w.far.raw] = w.bytes;
  EXPECT_EQ(by_addr, (std::map<std::uint64_t, std::uint64_t>{{kFarBase, 3 * kPage},
                                                             {kFarBase + 4 * kPage, kPage},
                                                             {kFarBase + 10 * kPage, kPage},
                                                             {kFarBase + 11 * kPage, kPage}}));
  EXPECT_EQ(io.write_bytes(), 6u * kPage);
  for (std::uint64_t key : {0u, 1u, 2u, 4u, 10u, 11u}) {
    EXPECT_EQ(far_page(io, fe, key), pattern(key, 1)) << key;
  }
  for (std::uint64_t key : {3u, 5u}) EXPECT_FALSE(io.has_page(fe.far_of(key))) << key;
  EXPECT_EQ(sorted_copy(fe.staged()), (std::vector<std::uint64_t>{0, 1, 2, 4, 10, 11}));
  EXPECT_EQ(sorted_copy(fe.dropped()), (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5, 10, 11}));
  const PagerStats s = p->stats();
  EXPECT_EQ(s.writebacks, 6u);
  EXPECT_EQ(s.bytes_written, 6u * kPage);
  EXPECT_EQ(s.evictions, 8u);
  EXPECT_EQ(s.writeback_errors, 0u);
  EXPECT_EQ(p->frames_in_use(), 0u);
  EXPECT_EQ(budget.used(), 0u);
  EXPECT_EQ(io.stray_waits(), 0u);
  EXPECT_EQ(fe.violations(), 0u);
}

TEST(Pager, WriteBackBatchesHoldAtMostWriteBackBatchPages) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8, kFarBase, /*write_back_batch=*/3);
  PagerOptions o = manual(8);
  o.write_back_batch = 3;
  auto p = make(io, budget, fe, o);
  for (std::uint32_t f : take_all(*p)) {
    fe.fill(f, f, 1);
    p->install(f, f, true, false);
  }
  Status err;
  EXPECT_EQ(p->evict(8, &err), 8u);
  // 8 adjacent dirty pages in batches of 3: 3 + 3 + 2, one coalesced write per batch.
  EXPECT_EQ(fe.stage_calls(), 3u);
  std::vector<std::uint64_t> sizes;
  for (const auto& w : io.writes()) sizes.push_back(w.bytes);
  std::sort(sizes.begin(), sizes.end());
  EXPECT_EQ(sizes, (std::vector<std::uint64_t>{2 * kPage, 3 * kPage, 3 * kPage}));
  EXPECT_EQ(io.submits(), 3u);
  for (std::uint64_t key = 0; key < 8; ++key) {
    EXPECT_EQ(far_page(io, fe, key), pattern(key, 1)) << key;
  }
  EXPECT_EQ(fe.violations(), 0u);  // stage() never got more than 3
}

TEST(Pager, FailedWriteBackKeepsPagesResidentDirtyAndLosesNothing) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  auto p = make(io, budget, fe, manual(8));
  std::vector<std::uint32_t> frames;
  for (auto [key, f] : load_keys(*p, fe, io, 4, [](std::uint64_t) { return true; })) {
    frames.push_back(f);
  }
  ASSERT_EQ(frames.size(), 4u);

  // 1. The wait fails: nothing is freed, every victim stays resident and dirty.
  io.fail_next_waits(1, Unavailable("memserver gone"));
  Status err;
  EXPECT_EQ(p->evict(8, &err), 0u);
  EXPECT_EQ(err.code(), StatusCode::kUnavailable) << err.to_string();
  for (std::uint32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(p->state(frames[i]), FrameState::kPresent) << i;
    EXPECT_TRUE(p->dirty(frames[i])) << i;
    EXPECT_EQ(p->key_of(frames[i]), i);
    EXPECT_TRUE(fe.frame_holds(frames[i], i, 1));
  }
  EXPECT_TRUE(fe.dropped().empty());
  EXPECT_EQ(sorted_copy(fe.restored()), (std::vector<std::uint64_t>{0, 1, 2, 3}));
  EXPECT_EQ(p->stats().writeback_errors, 1u);
  EXPECT_EQ(p->stats().evictions, 0u);
  EXPECT_EQ(p->stats().writebacks, 0u);
  EXPECT_EQ(p->frames_in_use(), 4u);
  EXPECT_EQ(budget.used(), 4u * kPage);

  // 2. The submit fails: the same, and the pager must not wait for a batch never started.
  io.fail_next_submits(1, IoError("queue pair broken"));
  err = Status::Ok();
  EXPECT_EQ(p->evict(8, &err), 0u);
  EXPECT_EQ(err.code(), StatusCode::kIoError) << err.to_string();
  EXPECT_EQ(io.stray_waits(), 0u);
  EXPECT_EQ(io.in_flight(), 0u);
  for (std::uint32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(p->state(frames[i]), FrameState::kPresent) << i;
    EXPECT_TRUE(p->dirty(frames[i])) << i;
  }
  EXPECT_EQ(p->stats().writeback_errors, 2u);

  // The restored pages are usable again: one is written once more meanwhile.
  fe.fill(frames[2], 2, 2);
  p->mark_dirty(frames[2]);

  // 3. Far memory is back: the next pass writes every page, with its latest bytes.
  err = Status::Ok();
  EXPECT_EQ(p->evict(8, &err), 4u);
  EXPECT_TRUE(err.ok()) << err.to_string();
  for (std::uint64_t key = 0; key < 4; ++key) {
    EXPECT_EQ(far_page(io, fe, key), pattern(key, key == 2 ? 2 : 1)) << key;
  }
  EXPECT_EQ(p->frames_in_use(), 0u);
  EXPECT_EQ(budget.used(), 0u);
  EXPECT_EQ(fe.violations(), 0u);
}

TEST(Pager, FailureInALaterWriteBackBatchKeepsOnlyThePagesNotWritten) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8, kFarBase, /*write_back_batch=*/2);
  PagerOptions o = manual(8);
  o.write_back_batch = 2;
  auto p = make(io, budget, fe, o);
  ASSERT_EQ(take_all(*p).size(), 8u);
  // Keys 0-3 dirty (batches {0,1} and {2,3}), 4-5 clean; frames 6, 7 go back unused.
  for (std::uint32_t f = 0; f < 6; ++f) {
    fe.fill(f, f, 1);
    if (f >= 4) io.write_far(fe.far_of(f), pattern(f, 1));  // clean: far already has it
    p->install(f, f, /*dirty=*/f < 4, false);
  }
  p->give_back(6);
  p->give_back(7);

  io.fail_next_waits(1, Unavailable("memserver gone"), /*pass=*/1);
  Status err;
  EXPECT_EQ(p->evict(8, &err), 4u);  // 0, 1 (written) and 4, 5 (clean)
  EXPECT_EQ(err.code(), StatusCode::kUnavailable);
  for (std::uint32_t f : {0u, 1u, 4u, 5u}) EXPECT_EQ(p->state(f), FrameState::kFree) << f;
  for (std::uint32_t f : {2u, 3u}) {
    EXPECT_EQ(p->state(f), FrameState::kPresent) << f;
    EXPECT_TRUE(p->dirty(f)) << f;
    EXPECT_FALSE(io.has_page(fe.far_of(f))) << f;
  }
  EXPECT_EQ(sorted_copy(fe.dropped()), (std::vector<std::uint64_t>{0, 1, 4, 5}));
  EXPECT_EQ(sorted_copy(fe.restored()), (std::vector<std::uint64_t>{2, 3}));

  err = Status::Ok();
  EXPECT_EQ(p->evict(8, &err), 2u);
  EXPECT_TRUE(err.ok());
  for (std::uint64_t key = 0; key < 6; ++key) {
    EXPECT_EQ(far_page(io, fe, key), pattern(key, 1)) << key;
  }
  EXPECT_EQ(fe.violations(), 0u);
}

TEST(Pager, FlushWritesEveryDirtyPageAndKeepsThemResident) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  auto p = make(io, budget, fe, manual(8));
  auto frame_of = load_keys(*p, fe, io, 6, [](std::uint64_t key) { return key % 2 == 0; });
  ASSERT_EQ(frame_of.size(), 6u);

  ASSERT_TRUE(p->flush().ok());
  EXPECT_EQ(io.write_ops(), 3u);  // keys 0, 2, 4: not adjacent
  EXPECT_EQ(sorted_copy(fe.staged()), (std::vector<std::uint64_t>{0, 2, 4}));
  EXPECT_TRUE(fe.dropped().empty());
  EXPECT_EQ(sorted_copy(fe.restored()), (std::vector<std::uint64_t>{0, 2, 4}));
  EXPECT_GE(fe.flush_isolates(), 1u);
  for (auto [key, f] : frame_of) {
    EXPECT_EQ(p->state(f), FrameState::kPresent) << key;
    EXPECT_FALSE(p->dirty(f)) << key;
    EXPECT_EQ(far_page(io, fe, key), pattern(key, 1)) << key;
  }
  EXPECT_EQ(p->frames_in_use(), 6u);

  // Nothing dirty: nothing written.
  ASSERT_TRUE(p->flush().ok());
  EXPECT_EQ(io.write_ops(), 3u);

  // A page written again is flushed again, alone.
  fe.fill(frame_of[1], 1, 2);
  p->mark_dirty(frame_of[1]);
  ASSERT_TRUE(p->flush().ok());
  EXPECT_EQ(io.write_ops(), 4u);
  EXPECT_EQ(far_page(io, fe, 1), pattern(1, 2));
  EXPECT_EQ(p->stats().evictions, 0u);
  EXPECT_EQ(fe.violations(), 0u);
}

TEST(Pager, FlushWithAPinnedDirtyPageGivesUpWithTimedOut) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  auto p = make(io, budget, fe, manual(8));
  auto frame_of = load_keys(*p, fe, io, 3, [](std::uint64_t) { return true; });
  ASSERT_EQ(frame_of.size(), 3u);
  fe.pin(1);

  auto result = std::async(std::launch::async, [&] { return p->flush(); });
  if (result.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    fe.unpin(1);  // let a retrying flush finish so the test can end
    result.wait();
    FAIL() << "flush() with a pinned page did not return within 30 s";
  }
  const Status st = result.get();
  EXPECT_EQ(st.code(), StatusCode::kTimedOut) << st.to_string();
  // The other pages were written; the pinned one is untouched, resident and still dirty.
  EXPECT_EQ(far_page(io, fe, 0), pattern(0, 1));
  EXPECT_EQ(far_page(io, fe, 2), pattern(2, 1));
  EXPECT_FALSE(io.has_page(fe.far_of(1)));
  EXPECT_TRUE(p->dirty(frame_of[1]));
  EXPECT_FALSE(p->dirty(frame_of[0]));
  for (auto [key, f] : frame_of) EXPECT_EQ(p->state(f), FrameState::kPresent) << key;
  EXPECT_TRUE(fe.dropped().empty());

  fe.unpin(1);
  ASSERT_TRUE(p->flush().ok());
  EXPECT_EQ(far_page(io, fe, 1), pattern(1, 1));
  EXPECT_FALSE(p->dirty(frame_of[1]));
  EXPECT_EQ(fe.violations(), 0u);
}

TEST(Pager, FlushReportsAWriteBackError) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  auto p = make(io, budget, fe, manual(8));
  auto f = p->take_frame(Clk::now() + milliseconds(1000));
  ASSERT_TRUE(f.ok());
  fe.fill(*f, 5, 1);
  p->install(*f, 5, true, false);
  io.fail_next_waits(1, Unavailable("memserver gone"));
  EXPECT_EQ(p->flush().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(p->dirty(*f));
  EXPECT_EQ(p->state(*f), FrameState::kPresent);
  ASSERT_TRUE(p->flush().ok());
  EXPECT_EQ(far_page(io, fe, 5), pattern(5, 1));
  EXPECT_FALSE(p->dirty(*f));
}

TEST(Pager, TakeFrameWithEveryPagePinnedFailsByItsDeadline) {
  FakeFarIo io;
  Budget budget(kBigBudget);  // the frames, not the budget, run out
  FakeFrontend fe(4);
  PagerOptions o = manual(4);
  o.evict_batch = 4;
  auto p = make(io, budget, fe, o);
  const auto frames = take_all(*p);
  ASSERT_EQ(frames.size(), 4u);
  for (std::uint32_t f : frames) {
    fe.fill(f, f, 1);
    p->install(f, f, /*dirty=*/f % 2 == 0, false);
    fe.pin(f);
  }
  const auto wait = milliseconds(200);
  const auto t0 = Clk::now();
  auto r = p->take_frame(t0 + wait);
  const auto took = Clk::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().to_string();
  EXPECT_GE(took, wait);
  EXPECT_LT(took, std::chrono::seconds(10));
  EXPECT_EQ(p->stats().inline_evictions, 1u);
  for (std::uint32_t f : frames) EXPECT_EQ(p->state(f), FrameState::kPresent) << f;
  EXPECT_TRUE(fe.dropped().empty());
  EXPECT_EQ(io.write_ops(), 0u);  // pinned pages are not written either
  // It waits between attempts (kFrameRetryWait, 1 ms) rather than spinning over the pinned
  // pages: a few hundred eviction passes in 200 ms at most, not tens of thousands.
  EXPECT_LT(fe.isolate_calls(), 1000u);
  EXPECT_EQ(budget.used(), 4u * kPage);

  // Same when the budget is what runs out.
  Budget small(4 * kPage);
  FakeFrontend fe2(8, kFarBase * 2);
  auto q = make(io, small, fe2, manual(8));
  for (std::uint32_t f : take_all(*q)) {
    q->install(f, f, false, false);
    fe2.pin(f);
  }
  ASSERT_EQ(q->frames_in_use(), 4u);
  auto r2 = q->take_frame(Clk::now() + wait);
  EXPECT_EQ(r2.status().code(), StatusCode::kResourceExhausted);
  EXPECT_LT(fe2.isolate_calls(), 2000u);
  EXPECT_EQ(small.peak(), small.limit());
}

TEST(Pager, BackgroundEvictorRefillsTheReserve) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(16);
  PagerOptions o = manual(16);
  o.background_evictor = true;
  o.reserve_frames = 4;
  o.evict_batch = 4;
  o.evictor_period = milliseconds(5);
  auto p = make(io, budget, fe, o);
  ASSERT_EQ(p->reserve_frames(), 4u);

  std::uint64_t next_key = 0;
  auto load = [&](int n) {
    for (int i = 0; i < n; ++i) {
      auto f = p->take_frame(Clk::now() + milliseconds(5000));
      ASSERT_TRUE(f.ok()) << f.status().to_string();
      const std::uint64_t key = next_key++;
      fe.fill(*f, key, 1);
      const bool dirty = key % 2 == 0;
      if (!dirty) io.write_far(fe.far_of(key), pattern(key, 1));
      std::lock_guard lock(fe.page_mutex());
      p->install(*f, key, dirty, false);
    }
  };
  load(16 - 4);  // everything but the reserve
  for (int round = 0; round < 6; ++round) {
    load(4);  // the reserve, without waiting in between
    ASSERT_TRUE(eventually([&] { return p->free_frames() >= p->reserve_frames(); }))
        << "round " << round << ": free " << p->free_frames();
  }
  const PagerStats s = p->stats();
  EXPECT_GT(s.background_passes, 0u);
  EXPECT_EQ(s.inline_evictions, 0u);  // the reserve always held
  EXPECT_GE(s.evictions, 6u * 4u);
  EXPECT_GT(io.write_ops(), 0u);
  EXPECT_TRUE(p->background_error().ok());
  ASSERT_TRUE(p->flush().ok());
  for (std::uint64_t key = 0; key < next_key; ++key) {
    EXPECT_EQ(far_page(io, fe, key), pattern(key, 1)) << key;
  }
  EXPECT_EQ(fe.violations(), 0u);
}

TEST(Pager, TakingTheLastFrameOfAOneFrameReserveWakesTheEvictor) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  PagerOptions o = manual(8);
  o.background_evictor = true;
  o.reserve_frames = 1;
  o.evictor_period = milliseconds(60'000);  // the periodic look never comes in this test
  auto p = make(io, budget, fe, o);
  for (std::uint64_t key = 0; key < 8; ++key) {
    std::uint32_t f = 0;
    ASSERT_TRUE(p->try_take_frame(&f)) << key;
    std::lock_guard lock(fe.page_mutex());
    p->install(f, key, false, false);
  }
  // The reserve (1 frame) is gone: "wakes the evictor when the reserve runs below half".
  EXPECT_TRUE(eventually([&] { return p->free_frames() >= 1; }, milliseconds(5000)))
      << "the evictor was not woken by the take that emptied the reserve";
  EXPECT_GT(p->stats().background_passes, 0u);
}

TEST(Pager, BackgroundEvictorRecordsAWriteBackErrorUntilACleanFlush) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  PagerOptions o = manual(8);
  o.background_evictor = true;
  o.reserve_frames = 2;
  o.evictor_period = milliseconds(2);
  auto p = make(io, budget, fe, o);
  io.fail_next_waits(1000000, Unavailable("memserver gone"));
  for (std::uint64_t key = 0; key < 8; ++key) {
    std::uint32_t f = 0;
    ASSERT_TRUE(p->try_take_frame(&f));
    fe.fill(f, key, 1);
    std::lock_guard lock(fe.page_mutex());
    p->install(f, key, /*dirty=*/true, false);
  }
  ASSERT_TRUE(eventually([&] { return !p->background_error().ok(); }));
  EXPECT_EQ(p->background_error().code(), StatusCode::kUnavailable);
  EXPECT_EQ(p->frames_in_use(), 8u);  // nothing dirty could go
  io.recover();
  ASSERT_TRUE(p->flush().ok());
  EXPECT_TRUE(p->background_error().ok());
  for (std::uint64_t key = 0; key < 8; ++key) {
    EXPECT_EQ(far_page(io, fe, key), pattern(key, 1)) << key;
  }
}

TEST(Pager, TwoPagersSharingABudgetReclaimFromEachOther) {
  FakeFarIo io;
  Budget budget(8 * kPage);
  FakeFrontend fa(8, kFarBase), fb(8, kFarBase * 2);
  PagerOptions oa = manual(8), ob = manual(8);
  oa.evict_batch = ob.evict_batch = 2;
  oa.name = "a";
  ob.name = "b";
  auto a = make(io, budget, fa, oa);
  auto b = make(io, budget, fb, ob);
  for (std::uint32_t f : take_all(*a)) {
    fa.fill(f, f, 1);
    a->install(f, f, /*dirty=*/f % 2 == 0, false);
    if (f % 2 != 0) io.write_far(fa.far_of(f), pattern(f, 1));
  }
  ASSERT_EQ(a->frames_in_use(), 8u);
  ASSERT_EQ(budget.used(), budget.limit());
  std::uint32_t f = 0;
  EXPECT_FALSE(b->try_take_frame(&f));  // b has free slots, but the budget is full
  EXPECT_EQ(b->free_frames(), 0u);

  auto got = b->take_frame(Clk::now() + milliseconds(5000));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  b->install(*got, 0, true, false);
  EXPECT_LT(a->frames_in_use(), 8u);
  EXPECT_GE(a->frames_in_use(), 8u - 2u);  // about one evict_batch
  EXPECT_FALSE(fa.dropped().empty());
  EXPECT_TRUE(fb.dropped().empty());
  EXPECT_EQ(b->frames_in_use(), 1u);
  EXPECT_EQ(budget.used(), (a->frames_in_use() + b->frames_in_use()) * std::uint64_t{kPage});
  EXPECT_LE(budget.peak(), budget.limit());
  for (std::uint64_t key : fa.dropped()) {
    EXPECT_EQ(far_page(io, fa, key), pattern(key, 1)) << key;  // dirty ones written first
  }
  EXPECT_EQ(fa.violations(), 0u);
  EXPECT_EQ(fb.violations(), 0u);
}

TEST(Pager, PrefetchFeedbackCountsUsedAndWastedPages) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  PagerOptions o = manual(8);
  o.streams = 2;
  auto p = make(io, budget, fe, o);
  const auto frames = take_all(*p);
  // frames 0-2: stream 0; 3: stream 1; 4: by no stream; 5: demand; 6, 7: stream 0.
  const std::uint32_t stream_of[8] = {0, 0, 0, 1, kNoStream, Pager::kDemand, 0, 0};
  for (std::uint32_t f : frames) p->install(f, f, false, false, stream_of[f]);
  p->note_prefetch_issued(7);

  EXPECT_EQ(p->note_access(0), 0u);
  EXPECT_EQ(p->note_access(0), Pager::kDemand);  // only the first access counts
  EXPECT_EQ(p->note_access(3), 1u);
  EXPECT_EQ(p->note_access(5), Pager::kDemand);
  EXPECT_EQ(p->stats().prefetches_used, 2u);
  EXPECT_EQ(p->stats().prefetches_issued, 7u);

  // drop_frames (kDontNeed) does not count waste.
  const std::uint32_t advised[] = {6, 7};
  ASSERT_TRUE(p->drop_frames(advised).ok());
  EXPECT_EQ(p->stats().prefetches_wasted, 0u);
  EXPECT_EQ(p->take_wasted(0), 0u);

  // Evicting the rest: 1 and 2 (stream 0) and 4 (no stream) were never used.
  Status err;
  EXPECT_EQ(p->evict(8, &err), 6u);
  EXPECT_EQ(p->stats().prefetches_wasted, 3u);
  EXPECT_EQ(p->take_wasted(0), 2u);
  EXPECT_EQ(p->take_wasted(0), 0u);
  EXPECT_EQ(p->take_wasted(1), 0u);  // its page was used
  EXPECT_EQ(p->take_wasted(2), 0u);  // no such stream
  EXPECT_EQ(p->take_wasted(kNoStream), 0u);

  // A frame reused for a demand page forgets it was prefetched.
  auto f = p->take_frame(Clk::now() + milliseconds(1000));
  ASSERT_TRUE(f.ok());
  p->install(*f, 50, false, false);
  EXPECT_EQ(p->note_access(*f), Pager::kDemand);
  EXPECT_EQ(p->evict(8, &err), 1u);
  EXPECT_EQ(p->stats().prefetches_wasted, 3u);
}

TEST(Pager, DropFramesWritesBackDirtyPagesAndKeepsPinnedOnes) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  auto p = make(io, budget, fe, manual(8));
  ASSERT_EQ(take_all(*p).size(), 8u);
  // frame f holds key f: 0, 1 dirty; 2 clean; 3 dirty and pinned; 4 dirty, drop refused.
  for (std::uint32_t f = 0; f < 5; ++f) {
    fe.fill(f, f, 1);
    p->install(f, f, /*dirty=*/f != 2, false);
  }
  for (std::uint32_t f = 5; f < 8; ++f) p->give_back(f);
  fe.pin(3);
  fe.refuse_drop(4);

  const std::uint32_t drop[] = {0, 1, 2, 3, 4, 6 /* free */, 99 /* out of range */};
  const Status st = p->drop_frames(drop);
  EXPECT_EQ(st.code(), StatusCode::kTimedOut) << st.to_string();
  EXPECT_EQ(sorted_copy(fe.dropped()), (std::vector<std::uint64_t>{0, 1, 2}));
  EXPECT_EQ(sorted_copy(fe.restored()), (std::vector<std::uint64_t>{3, 4}));
  for (std::uint32_t f : {0u, 1u, 2u}) EXPECT_EQ(p->state(f), FrameState::kFree) << f;
  EXPECT_EQ(far_page(io, fe, 0), pattern(0, 1));
  EXPECT_EQ(far_page(io, fe, 1), pattern(1, 1));
  EXPECT_FALSE(io.has_page(fe.far_of(2)));  // clean: not written
  // Pinned: untouched.
  EXPECT_EQ(p->state(3), FrameState::kPresent);
  EXPECT_TRUE(p->dirty(3));
  EXPECT_FALSE(io.has_page(fe.far_of(3)));
  // Drop refused: written back (clean now) but resident.
  EXPECT_EQ(p->state(4), FrameState::kPresent);
  EXPECT_FALSE(p->dirty(4));
  EXPECT_EQ(far_page(io, fe, 4), pattern(4, 1));
  EXPECT_EQ(p->frames_in_use(), 2u);
  EXPECT_EQ(budget.used(), 2u * kPage);
  EXPECT_EQ(p->stats().evictions, 3u);

  // A write-back failure is reported as such; the page stays.
  fe.unpin(3);
  io.fail_next_waits(1, Unavailable("memserver gone"));
  const std::uint32_t three[] = {3};
  EXPECT_EQ(p->drop_frames(three).code(), StatusCode::kUnavailable);
  EXPECT_EQ(p->state(3), FrameState::kPresent);
  EXPECT_TRUE(p->dirty(3));
  EXPECT_TRUE(p->drop_frames(three).ok());
  EXPECT_EQ(p->state(3), FrameState::kFree);
  EXPECT_EQ(far_page(io, fe, 3), pattern(3, 1));
  EXPECT_EQ(fe.violations(), 0u);
}

TEST(Pager, DropFramesNamingAFrameTwiceFreesItOnce) {
  FakeFarIo io;
  Budget budget(kBigBudget);
  FakeFrontend fe(8);
  auto p = make(io, budget, fe, manual(8));
  auto f = p->take_frame(Clk::now() + milliseconds(1000));
  ASSERT_TRUE(f.ok());
  auto g = p->take_frame(Clk::now() + milliseconds(1000));
  ASSERT_TRUE(g.ok());
  p->install(*f, 1, true, false);
  p->install(*g, 2, false, false);
  const std::uint32_t twice[] = {*f, *f};
  EXPECT_TRUE(p->drop_frames(twice).ok());
  EXPECT_EQ(p->frames_in_use(), 1u);
  EXPECT_EQ(budget.used(), 1u * kPage);
  EXPECT_EQ(p->free_frames(), 7u);
  // The free list holds every frame once: taking all of them yields 7 distinct frames.
  auto rest = take_all(*p);
  EXPECT_EQ(rest.size(), 7u);
  EXPECT_EQ(std::set<std::uint32_t>(rest.begin(), rest.end()).size(), rest.size());
  EXPECT_EQ(io.write_ops(), 1u);
}

// Four threads fault pages in and out of a pager whose budget is smaller than its frames,
// writing a pattern into their pages as they go: the budget is never exceeded, the frame
// accounting matches it, and no write is ever lost (every fault-in reads back the page's
// last bytes; after a flush far memory holds every page's last bytes).
TEST(PagerThreads, BudgetIsNeverExceededAndNoDataIsLost) {
  constexpr std::uint32_t kFrames = 32;
  constexpr std::uint32_t kBudgetPages = 20;
  constexpr int kThreads = 4;
  constexpr std::uint64_t kKeysPerThread = 12;  // 48 keys over 20 pages of budget
  constexpr int kIterations = 2000;

  FakeFarIo io;
  io.set_delay(std::chrono::microseconds(20));
  Budget budget(std::uint64_t{kBudgetPages} * kPage);
  FakeFrontend fe(kFrames, kFarBase, /*write_back_batch=*/4);
  PagerOptions o = manual(kFrames);
  o.background_evictor = true;
  o.reserve_frames = 4;
  o.evict_batch = 4;
  o.write_back_batch = 4;
  o.evictor_period = milliseconds(2);
  auto p = make(io, budget, fe, o);

  std::vector<std::uint32_t> version(kThreads * kKeysPerThread, 0);  // each thread: own keys
  std::atomic<int> take_failures{0}, io_failures{0}, lost{0}, corrupt{0};
  auto worker = [&](int t) {
    std::mt19937 rng(1234 + t);
    for (int it = 0; it < kIterations; ++it) {
      const std::uint64_t key = t * kKeysPerThread + rng() % kKeysPerThread;
      {
        std::lock_guard lock(fe.page_mutex());
        if (auto f = fe.resident_frame(key)) {  // a hit
          if (!fe.frame_holds(*f, key, version[key])) ++corrupt;
          p->reference(*f);
          if (rng() % 3 == 0) {
            fe.fill(*f, key, ++version[key]);
            p->mark_dirty(*f);
          }
          continue;
        }
      }
      // A fault: take a frame, read the page from far memory, maybe write it, install it.
      auto f = p->take_frame(Clk::now() + milliseconds(10000));
      if (!f.ok()) {
        ++take_failures;
        continue;
      }
      IoBatch read;
      read.read(fe.far_of(key), fe.frame_bytes(*f));
      Status st = io.submit(read);
      if (st.ok()) st = io.wait(read);
      if (!st.ok()) {
        ++io_failures;
        p->give_back(*f);
        continue;
      }
      if (!fe.frame_holds(*f, key, version[key])) ++lost;
      const bool dirty = rng() % 2 == 0;
      if (dirty) fe.fill(*f, key, ++version[key]);
      std::lock_guard lock(fe.page_mutex());
      p->install(*f, key, dirty, /*referenced=*/true);
      fe.set_resident(key, *f);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();

  EXPECT_EQ(take_failures.load(), 0);
  EXPECT_EQ(io_failures.load(), 0);
  EXPECT_EQ(lost.load(), 0) << "a fault-in read stale bytes: a write-back was lost";
  EXPECT_EQ(corrupt.load(), 0);
  ASSERT_TRUE(p->flush().ok());
  p->stop();  // no evictor from here on: the accounting holds still

  EXPECT_LE(budget.peak(), budget.limit());
  EXPECT_EQ(std::uint64_t{p->frames_in_use()} * kPage, budget.used());
  EXPECT_LE(p->stats().peak_frames_in_use, kBudgetPages);
  EXPECT_EQ(fe.resident_count(), p->frames_in_use());
  EXPECT_GT(p->stats().evictions, 0u);
  std::lock_guard lock(fe.page_mutex());
  for (std::uint64_t key = 0; key < version.size(); ++key) {
    EXPECT_EQ(far_page(io, fe, key), pattern(key, version[key])) << key;
    if (auto f = fe.resident_frame(key)) {
      EXPECT_TRUE(fe.frame_holds(*f, key, version[key])) << key;
      EXPECT_EQ(p->key_of(*f), key);
      EXPECT_FALSE(p->dirty(*f)) << key;
    }
  }
  EXPECT_EQ(io.stray_waits(), 0u);
  EXPECT_EQ(io.double_submits(), 0u);
  EXPECT_EQ(fe.violations(), 0u);
}

}  // namespace
}  // namespace farmem::paging
