#include "sort/memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace farmem::sort {
namespace {

constexpr std::size_t kOsPage = 4096;  // madvise ranges start on a page

class FarMemory final : public Memory {
 public:
  explicit FarMemory(std::unique_ptr<Region> r) : region_(std::move(r)) {}
  std::byte* data() const override { return region_->data(); }
  std::size_t size() const override { return region_->size(); }
  Status advise(std::size_t offset, std::size_t length, Advice a) override {
    return region_->advise(offset, length, a);
  }
  Status prefault(std::size_t offset, std::size_t length) override {
    return region_->prefault(offset, length);
  }
  CacheStats stats() const override { return region_->stats(); }

 private:
  std::unique_ptr<Region> region_;
};

class PlainMemory final : public Memory {
 public:
  PlainMemory(std::byte* p, std::size_t bytes) : p_(p), bytes_(bytes) {}
  ~PlainMemory() override { std::free(p_); }
  std::byte* data() const override { return p_; }
  std::size_t size() const override { return bytes_; }
  Status advise(std::size_t offset, std::size_t length, Advice a) override {
    const std::size_t begin = offset / kOsPage * kOsPage;
    const std::size_t end = std::min(bytes_, offset + length);
    if (end <= begin) return Status::Ok();
    if (::madvise(p_ + begin, end - begin, to_madvise(a)) != 0) {
      return Internal(std::string("madvise: ") + std::strerror(errno));
    }
    return Status::Ok();
  }
  Status prefault(std::size_t, std::size_t) override { return Status::Ok(); }
  CacheStats stats() const override { return {}; }

 private:
  static int to_madvise(Advice a) {
    switch (a) {
      case Advice::kSequential: return MADV_SEQUENTIAL;
      case Advice::kRandom: return MADV_RANDOM;
      case Advice::kWillNeed: return MADV_WILLNEED;
      case Advice::kDontNeed: return MADV_COLD;  // MADV_DONTNEED would zero the pages
      case Advice::kNormal: break;
    }
    return MADV_NORMAL;
  }
  std::byte* p_;
  std::size_t bytes_;
};

}  // namespace

Result<std::unique_ptr<Memory>> map_far(Runtime& rt, std::size_t bytes, const RegionOptions& o) {
  FARMEM_ASSIGN_OR_RETURN(auto region, rt.map(bytes, o));
  return std::unique_ptr<Memory>(new FarMemory(std::move(region)));
}

Result<std::unique_ptr<Memory>> allocate_plain(std::size_t bytes) {
  const std::size_t rounded = (bytes + kOsPage - 1) / kOsPage * kOsPage;
  void* p = std::aligned_alloc(kOsPage, rounded == 0 ? kOsPage : rounded);
  if (p == nullptr) return ResourceExhausted("cannot allocate " + std::to_string(bytes) + " bytes");
  return std::unique_ptr<Memory>(new PlainMemory(static_cast<std::byte*>(p), rounded));
}

}  // namespace farmem::sort
