// The paging core (paging/pager.h) driven by hand, on a fake far memory and a fake front end
// (pager_support.h): frame accounting, CLOCK order, dirty-only coalesced write-back,
// write-back failures, flush, take_frame's deadline and drops.
#include <gtest/gtest.h>

#include "test/paging/pager_support.h"

namespace farmem::paging::pager_test {
namespace {

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

}  // namespace
}  // namespace farmem::paging::pager_test
