// Giving frames back (PagerOptions::chunk_frames): the lowest free frame is taken first,
// chunks the budget leaves unused are emptied and retired, and a retired chunk is revived
// before any of its frames is handed out again; on the fake front end, which scribbles over
// retired frames and counts any pass that names one.
#include <gtest/gtest.h>

#include "test/paging/pager_support.h"

namespace farmem::paging::pager_test {
namespace {

constexpr std::uint32_t kFrames = 32, kChunk = 8;

PagerOptions chunked() {
  PagerOptions o = manual(kFrames);
  o.chunk_frames = kChunk;
  o.reserve_frames = 2;
  o.evict_batch = 4;
  return o;
}

// Takes a frame for `key` (dirty when odd: its far copy is written only by write-back) and
// fails the test if the frame was retired when it was handed out.
std::uint32_t load(Pager& p, FakeFrontend& fe, FakeFarIo& io, std::uint64_t key,
                   std::uint32_t version) {
  auto f = p.take_frame(Clk::now() + milliseconds(2000));
  EXPECT_TRUE(f.ok()) << f.status().to_string();
  if (!f.ok()) return 0;
  EXPECT_FALSE(fe.retired(*f)) << "frame " << *f << " handed out while given back";
  fe.fill(*f, key, version);
  const bool dirty = key % 2 == 1;
  if (!dirty) io.write_far(fe.far_of(key), pattern(key, version));
  p.install(*f, key, dirty, false);
  return *f;
}

TEST(PagerChunks, UnusedChunksAreGivenBackAndRevivedBeforeTheirFramesAreReused) {
  FakeFarIo io;
  Budget budget(kFrames * kPage, kFrames * kPage);
  FakeFrontend fe(kFrames);
  fe.retire_all();  // the front end registers nothing itself
  auto p = make(io, budget, fe, chunked());
  // Only what the reserve needs is taken into use at first.
  EXPECT_EQ(fe.revive_calls(), (std::vector<std::uint32_t>{0}));
  EXPECT_EQ(p->stats().active_frames, kChunk);

  // Filling every frame takes chunks back lowest first, each before its first frame is used.
  std::vector<std::uint32_t> frames;
  for (std::uint64_t key = 0; key < kFrames; ++key) frames.push_back(load(*p, fe, io, key, 1));
  for (std::uint32_t i = 0; i < kFrames; ++i) EXPECT_EQ(frames[i], i);  // lowest first
  EXPECT_EQ(fe.revive_calls(), (std::vector<std::uint32_t>{0, 8, 16, 24}));

  // The budget shrinks to 10 pages: chunks 2 and 3 (frames 16..31) are wholly unused. Their
  // pages go first, and then the chunks.
  budget.set_limit(10 * kPage);
  EXPECT_EQ(budget.reclaim_over_limit(), 0u);
  ASSERT_TRUE(p->adjust_chunks().ok());
  EXPECT_FALSE(p->chunk_work_pending());
  EXPECT_EQ(fe.retire_calls(), (std::vector<std::uint32_t>{16, 24}));
  const PagerStats s = p->stats();
  EXPECT_EQ(s.chunks_retired, 2u);
  EXPECT_EQ(s.active_frames, 2u * kChunk);
  for (std::uint32_t f = 16; f < kFrames; ++f) EXPECT_EQ(p->state(f), FrameState::kFree) << f;
  // Every page that left is intact in far memory (the dirty ones were written back).
  for (std::uint64_t key = 0; key < kFrames; ++key) {
    if (p->state(frames[key]) != FrameState::kPresent) {
      EXPECT_EQ(far_page(io, fe, key), pattern(key, 1)) << key;
    }
  }

  // At the small budget no frame of a retired chunk is handed out.
  for (std::uint64_t key = 100; key < 140; ++key) EXPECT_LT(load(*p, fe, io, key, 1), 16u);

  // The budget grows back: frames past 16 come only from chunks revived first.
  budget.set_limit(kFrames * kPage);
  std::set<std::uint32_t> seen;
  for (std::uint64_t key = 200; key < 200 + kFrames; ++key) {
    seen.insert(load(*p, fe, io, key, 2));
  }
  EXPECT_GT(*seen.rbegin(), 16u);
  EXPECT_EQ(p->stats().chunks_revived, 6u);  // 4 at first, 2 after the growth
  EXPECT_EQ(p->stats().active_frames, kFrames);
  // Flushing writes every dirty page from its frame: a frame scribbled over by a retire
  // that was not revived-and-refilled would show here.
  ASSERT_TRUE(p->flush().ok());
  for (std::uint64_t key = 200; key < 200 + kFrames; ++key) {
    EXPECT_EQ(far_page(io, fe, key), pattern(key, 2)) << key;
  }
  EXPECT_EQ(fe.violations(), 0u);
  EXPECT_EQ(io.stray_waits(), 0u);
}

TEST(PagerChunks, FailedRetireKeepsTheChunkAndFailedReviveHandsOutNoFrameOfIt) {
  FakeFarIo io;
  Budget budget(kFrames * kPage, kFrames * kPage);
  FakeFrontend fe(kFrames);
  fe.retire_all();
  auto p = make(io, budget, fe, chunked());
  for (std::uint64_t key = 0; key < kFrames; ++key) load(*p, fe, io, key, 1);
  budget.set_limit(kChunk * kPage);
  EXPECT_EQ(budget.reclaim_over_limit(), 0u);

  fe.fail_retire(true);  // the chunks stay in use, as they were
  ASSERT_TRUE(p->adjust_chunks().ok());
  EXPECT_EQ(p->stats().chunks_retired, 0u);
  EXPECT_EQ(p->stats().active_frames, kFrames);
  EXPECT_TRUE(p->chunk_work_pending());

  fe.fail_retire(false);
  ASSERT_TRUE(p->adjust_chunks().ok());
  EXPECT_EQ(p->stats().chunks_retired, 3u);
  EXPECT_EQ(p->stats().active_frames, kChunk);

  // Grown again, but the front end cannot take chunks back: the pager makes do with chunk 0.
  fe.fail_revive(true);
  budget.set_limit(kFrames * kPage);
  for (std::uint64_t key = 300; key < 300 + 2 * kFrames; ++key) {
    EXPECT_LT(load(*p, fe, io, key, 1), kChunk);
  }
  EXPECT_EQ(p->stats().active_frames, kChunk);
  fe.fail_revive(false);
  for (std::uint64_t key = 400; key < 400 + kFrames; ++key) load(*p, fe, io, key, 1);
  EXPECT_EQ(p->stats().active_frames, kFrames);
  EXPECT_EQ(fe.violations(), 0u);
}

// A chunked pager created while another consumer holds the whole budget starts with no frame
// in use; its first take must still get one (a chunk back, then room from the other).
TEST(PagerChunks, APagerWithNoChunkInUseTakesOneBackWhenTheBudgetIsHeldByAnother) {
  FakeFarIo io;
  Budget budget(kFrames * kPage, kFrames * kPage);
  FakeFrontend other_fe(kFrames, kFarBase + (std::uint64_t{1} << 30));
  auto other = make(io, budget, other_fe, manual(kFrames));
  for (std::uint64_t key = 0; key < kFrames; ++key) load(*other, other_fe, io, key, 1);
  ASSERT_EQ(budget.used(), budget.limit());

  FakeFrontend fe(kFrames);
  fe.retire_all();
  auto p = make(io, budget, fe, chunked());
  EXPECT_EQ(p->stats().active_frames, 0u);  // no room: nothing taken into use yet
  EXPECT_LT(load(*p, fe, io, 1000, 1), kChunk);
  EXPECT_EQ(p->stats().active_frames, kChunk);
  EXPECT_GT(other->stats().evictions, 0u);  // the room came from the other consumer
  EXPECT_EQ(fe.violations(), 0u);
  EXPECT_EQ(other_fe.violations(), 0u);
}

}  // namespace
}  // namespace farmem::paging::pager_test
