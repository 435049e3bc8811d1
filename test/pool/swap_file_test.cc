// The swap-file overflow: the file itself (grows by lease, shrinks by punched holes), and a
// runtime whose memservers are full overflowing into it and moving back when room returns.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "farmem/farmem.h"
#include "pool/swap_file.h"
#include "test/support/test_server.h"

namespace farmem::test {
namespace {

using namespace std::chrono_literals;

std::string temp_path(const char* name) {
  return (std::filesystem::temp_directory_path() /
          (std::string("farmem-") + name + "-" + std::to_string(::getpid())))
      .string();
}

TEST(SwapFile, GrowsByLeaseShrinksByFreeAndChecksEveryAccess) {
  const std::string path = temp_path("swapunit");
  std::filesystem::remove(path);
  auto f = pool::SwapFile::create({path, 8u << 20, 64u << 10});
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  pool::SwapFile& file = **f;
  EXPECT_EQ(file.stats().allocated_bytes, 0u);

  // An existing file is never overwritten.
  auto again = pool::SwapFile::create({path, 8u << 20, 64u << 10});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(again.status().message().find("exists"), std::string::npos);

  auto a = transport::alloc_slab(file, 3u << 20, 1s);
  auto b = transport::alloc_slab(file, 3u << 20, 1s);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_GE(file.stats().allocated_bytes, 6u << 20);  // fallocated at lease
  EXPECT_EQ(file.stats().used_bytes, 6u << 20);
  auto full = transport::alloc_slab(file, 3u << 20, 1s);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);

  std::vector<std::byte> out(8192), in(8192);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = std::byte(i * 7);
  auto reg = file.register_memory(out.data(), out.size());
  ASSERT_TRUE(reg.ok());
  using transport::Op;
  using transport::OpKind;
  const Op w{OpKind::kWrite, 8192, out.data(), 0, static_cast<std::uint32_t>(b->rkey),
             b->addr + 4096};
  ASSERT_TRUE(file.execute(w, 1s).ok());
  const Op r{OpKind::kRead, 8192, in.data(), 0, static_cast<std::uint32_t>(b->rkey),
             b->addr + 4096};
  ASSERT_TRUE(file.execute(r, 1s).ok());
  EXPECT_EQ(in, out);
  // Dirty pages: 4 KiB..12 KiB of b, once.
  auto dirty = file.take_dirty(b->slab_id);
  ASSERT_EQ(dirty.size(), 1u);
  EXPECT_EQ(dirty[0], std::make_pair(std::uint64_t{4096}, std::uint64_t{8192}));
  EXPECT_TRUE(file.take_dirty(b->slab_id).empty());

  Op bad = w;
  bad.rkey ^= 1;
  EXPECT_EQ(file.execute(bad, 1s).code(), StatusCode::kPermissionDenied);
  bad = w;
  bad.remote_addr = b->addr + b->bytes - 4096;  // runs past the slab
  EXPECT_EQ(file.execute(bad, 1s).code(), StatusCode::kOutOfRange);

  // Freeing the last extent shrinks the file; freeing the first punches a hole.
  const auto before = file.stats().allocated_bytes;
  ASSERT_TRUE(transport::free_slab(file, a->slab_id, 1s).ok());
  EXPECT_LE(file.stats().allocated_bytes, before - (3u << 20));
  ASSERT_TRUE(transport::free_slab(file, b->slab_id, 1s).ok());
  EXPECT_EQ(file.stats().allocated_bytes, 0u);
  EXPECT_EQ(file.stats().file_bytes, 0u);
  EXPECT_EQ(transport::free_slab(file, b->slab_id, 1s).code(), StatusCode::kNotFound);
  f->reset();
  EXPECT_FALSE(std::filesystem::exists(path));  // removed with the runtime
}

// Waits (bounded) until `done` holds.
template <typename F>
bool eventually(F done, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

TEST(SwapFile, FullMemserversOverflowToTheFileAndSlabsMoveBackWhileWritten) {
  auto small = tcp_server_of(16);
  ASSERT_TRUE(small);
  std::unique_ptr<TestServer> big;
  const std::string path = temp_path("swaprt");
  std::filesystem::remove(path);
  RuntimeOptions o;
  o.servers = {small->url()};
  o.auth_token = kToken;
  o.slab_bytes = 4u << 20;
  o.local_buffer_bytes = 1u << 20;
  o.cache_budget_bytes = 2u << 20;  // most of the vector lives far (or in the file)
  o.swap_file = path;
  o.swap_file_max_bytes = 64u << 20;
  o.swap_file_interval = 50ms;
  auto rt = Runtime::open(o);
  ASSERT_TRUE(rt.ok()) << rt.status().to_string();
  Runtime& r = **rt;

  // 8 MiB of filler on the memserver, then a 24 MiB vector: 8 MiB of it fit there, the
  // rest overflows to the file.
  auto filler = r.allocate(8u << 20);
  ASSERT_TRUE(filler.ok()) << filler.status().to_string();
  const std::size_t n = (24u << 20) / sizeof(std::uint64_t);
  std::vector<std::uint64_t> shadow(n);
  far_vector<std::uint64_t> v(r);
  for (std::size_t i = 0; i < n; ++i) {
    shadow[i] = i * 0x9e3779b97f4a7c15ull;
    ASSERT_TRUE(v.push_back(shadow[i]).ok()) << i;
  }
  ASSERT_TRUE(r.flush().ok());
  EXPECT_EQ(small->core().stats().used_bytes, 16u << 20);
  const RuntimeStats s1 = r.stats();
  EXPECT_GE(s1.swap_bytes_used, 12u << 20) << "the vector did not overflow";
  EXPECT_GE(s1.swap_file_allocated, s1.swap_bytes_used);
  auto check_all = [&] {
    for (std::size_t i = 0; i < n; ++i) {
      DerefScope scope(r);
      if (v.get(i, scope) != shadow[i]) return ::testing::AssertionFailure() << "element " << i;
    }
    return ::testing::AssertionSuccess();
  };
  ASSERT_TRUE(check_all());

  // A writer keeps changing the vector while slabs move back (pages written during a copy
  // must be copied again).
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> writes{0};
  std::thread writer([&] {
    std::mt19937_64 rng(11);
    while (!stop.load()) {
      const std::size_t i = rng() % n;
      DerefScope scope(r);
      shadow[i] = rng();
      v.get_mut(i, scope) = shadow[i];
      writes.fetch_add(1);
    }
  });
  // Room returns: the filler is freed (8 MiB), then a second memserver joins.
  ASSERT_TRUE(r.free(*filler).ok());
  EXPECT_TRUE(eventually([&] { return r.stats().swap_slabs_moved_back >= 2; }, 20s))
      << "moved back: " << r.stats().swap_slabs_moved_back;
  big = tcp_server_of(64);
  ASSERT_TRUE(big);
  ASSERT_TRUE(r.add_server(big->url()).ok());
  EXPECT_TRUE(eventually([&] { return r.stats().swap_bytes_used == 0; }, 20s))
      << "still in the file: " << r.stats().swap_bytes_used;
  stop = true;
  writer.join();
  EXPECT_GT(writes.load(), 0u);
  ASSERT_TRUE(r.flush().ok());
  EXPECT_EQ(r.stats().swap_file_allocated, 0u);  // every block given back
  EXPECT_GT(big->core().stats().used_bytes, 0u);
  ASSERT_TRUE(check_all());
}

TEST(SwapFile, RuntimeOptionsAreCheckedAndAnExistingFileIsRefused) {
  const std::string path = temp_path("swapopt");
  std::filesystem::remove(path);
  RuntimeOptions o;
  o.auth_token = kToken;
  o.swap_file = path;
  o.swap_file_max_bytes = 1u << 20;  // below one slab
  auto rt = Runtime::open(o);
  ASSERT_FALSE(rt.ok());
  EXPECT_EQ(rt.status().code(), StatusCode::kInvalidArgument);
  { std::ofstream(path) << "someone's data"; }
  o.swap_file_max_bytes = 256u << 20;
  rt = Runtime::open(o);
  ASSERT_FALSE(rt.ok());
  EXPECT_NE(rt.status().message().find("exists"), std::string::npos) << rt.status().to_string();
  std::ifstream in(path);
  std::string kept;
  std::getline(in, kept);
  EXPECT_EQ(kept, "someone's data");
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace farmem::test
