// The in-slab allocator and the FarAddr layout, as pure logic.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "pool/far_addr.h"
#include "pool/slab_allocator.h"

namespace farmem::pool {
namespace {

TEST(FarAddr, PacksSlabAndOffset) {
  const auto a = make_far_addr(5, 12345);
  EXPECT_EQ(slab_index_of(a), 5u);
  EXPECT_EQ(offset_of(a), 12345u);
  EXPECT_FALSE(a.is_null());
  EXPECT_FALSE(make_far_addr(0, 0).is_null());  // slab 0 offset 0 is a real address
  EXPECT_EQ(slab_index_of(make_far_addr(kMaxSlabs - 1, kOffsetMask)), kMaxSlabs - 1);
}

TEST(SlabAllocator, AlignsAndNeverOverlaps) {
  SlabAllocator a(1 << 20);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> blocks;
  for (std::uint64_t sz : {1u, 64u, 65u, 4096u, 5000u, 100u, 8192u}) {
    auto off = a.allocate(sz);
    ASSERT_TRUE(off.has_value()) << sz;
    EXPECT_EQ(*off % alignment_for(sz), 0u) << sz;
    for (auto [o, s] : blocks) EXPECT_TRUE(*off >= o + s || *off + sz <= o) << sz;
    blocks.emplace_back(*off, sz);
  }
}

TEST(SlabAllocator, FullThenCoalescesBackToOneExtent) {
  SlabAllocator a(64 * 1024);
  std::vector<std::uint64_t> offs;
  while (auto off = a.allocate(4096)) offs.push_back(*off);
  EXPECT_EQ(offs.size(), 16u);
  EXPECT_FALSE(a.allocate(1).has_value());
  // Free in a scrambled order; the slab must coalesce into one extent again.
  std::mt19937 rng(7);
  std::shuffle(offs.begin(), offs.end(), rng);
  for (auto o : offs) EXPECT_TRUE(a.free(o));
  EXPECT_TRUE(a.empty());
  auto whole = a.allocate(64 * 1024);
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(*whole, 0u);
}

TEST(SlabAllocator, RejectsDoubleFreeAndBadOffsets) {
  SlabAllocator a(4096 * 4);
  auto off = a.allocate(100);
  ASSERT_TRUE(off);
  EXPECT_FALSE(a.free(*off + 1));
  EXPECT_TRUE(a.free(*off));
  EXPECT_FALSE(a.free(*off));
  EXPECT_FALSE(a.allocate(0).has_value());
  EXPECT_FALSE(a.allocate(4096 * 4 + 1).has_value());
}

TEST(SlabAllocator, RandomChurnKeepsAccountingExact) {
  SlabAllocator a(1 << 20);
  std::mt19937_64 rng(42);
  std::map<std::uint64_t, std::uint64_t> live;
  std::uint64_t used = 0;
  for (int i = 0; i < 20000; ++i) {
    if (live.empty() || rng() % 3 != 0) {
      const std::uint64_t sz = 1 + rng() % 9000;
      if (auto off = a.allocate(sz)) {
        auto [it, fresh] = live.emplace(*off, a.block_bytes(*off));
        ASSERT_TRUE(fresh) << "offset handed out twice";
        used += it->second;
      }
    } else {
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      ASSERT_TRUE(a.free(it->first));
      used -= it->second;
      live.erase(it);
    }
    ASSERT_EQ(a.used_bytes(), used);
  }
  // Live blocks never overlap.
  std::uint64_t end = 0;
  for (auto [o, s] : live) {
    ASSERT_GE(o, end);
    end = o + s;
  }
}

}  // namespace
}  // namespace farmem::pool
