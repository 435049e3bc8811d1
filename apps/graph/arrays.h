// farmem-graph's two storages behind one interface, so that one implementation of each
// algorithm runs on either: FarArray (a far_vector behind the page cache) and LocalArray (a
// std::vector, the all-local reference). The algorithms move data only through read/write
// of index ranges (sequential page scans, which the cache's trend detector prefetches ahead
// of) and gather/scatter of index lists (many misses in flight), never element by element.
//
// Threads: distinct threads may read any range and write disjoint ranges at once. The
// algorithms cut vertex ranges at kChunkVertices (a multiple of every element count a 4 KiB
// page holds), so two threads never write the same page in one pass.
#pragma once

#include <farmem/farmem.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace farmem::graph {

namespace detail {
inline Status range_error(const char* what, std::size_t lo, std::size_t n, std::size_t size) {
  return OutOfRange(std::string(what) + ": elements [" + std::to_string(lo) + ", " +
                    std::to_string(lo + n) + ") of " + std::to_string(size));
}
}  // namespace detail

/// A std::vector with the storage interface: the all-local reference (--mode local).
template <typename T>
class LocalArray {
 public:
  std::size_t size() const { return v_.size(); }
  /// Grows with value-initialised (zero) elements, or shrinks.
  Status resize(std::size_t n) {
    v_.resize(n);
    return Status::Ok();
  }
  /// out[k] = element lo + k.
  Status read(std::size_t lo, std::span<T> out) const {
    if (lo + out.size() > v_.size()) return detail::range_error("read", lo, out.size(), size());
    std::copy_n(v_.begin() + static_cast<std::ptrdiff_t>(lo), out.size(), out.begin());
    return Status::Ok();
  }
  /// Element lo + k = in[k].
  Status write(std::size_t lo, std::span<const T> in) {
    if (lo + in.size() > v_.size()) return detail::range_error("write", lo, in.size(), size());
    std::copy(in.begin(), in.end(), v_.begin() + static_cast<std::ptrdiff_t>(lo));
    return Status::Ok();
  }
  /// out[k] = element idx[k].
  Status gather(std::span<const std::size_t> idx, std::span<T> out) const {
    for (std::size_t k = 0; k < idx.size(); ++k) {
      if (idx[k] >= v_.size()) return detail::range_error("gather", idx[k], 1, size());
      out[k] = v_[idx[k]];
    }
    return Status::Ok();
  }
  /// Element idx[k] = in[k].
  Status scatter(std::span<const std::size_t> idx, std::span<const T> in) {
    for (std::size_t k = 0; k < idx.size(); ++k) {
      if (idx[k] >= v_.size()) return detail::range_error("scatter", idx[k], 1, size());
      v_[idx[k]] = in[k];
    }
    return Status::Ok();
  }

 private:
  std::vector<T> v_;
};

/// A far_vector with the storage interface. Ranges are copied a page at a time, each page in
/// its own DerefScope (a scan larger than the cache pins one page at a time).
template <typename T>
class FarArray {
 public:
  explicit FarArray(Runtime& rt) : rt_(&rt), v_(rt), per_page_(rt.page_bytes() / sizeof(T)) {}

  std::size_t size() const { return v_.size(); }
  Status resize(std::size_t n) { return v_.resize(n); }
  Status read(std::size_t lo, std::span<T> out) const {
    if (lo + out.size() > v_.size()) return detail::range_error("read", lo, out.size(), size());
    return pages(lo, out.size(), false, [&](std::size_t i, std::byte* p, std::size_t n) {
      std::memcpy(out.data() + (i - lo), p, n * sizeof(T));
    });
  }
  Status write(std::size_t lo, std::span<const T> in) {
    if (lo + in.size() > v_.size()) return detail::range_error("write", lo, in.size(), size());
    return pages(lo, in.size(), true, [&](std::size_t i, std::byte* p, std::size_t n) {
      std::memcpy(p, in.data() + (i - lo), n * sizeof(T));
    });
  }
  Status gather(std::span<const std::size_t> idx, std::span<T> out) const {
    return v_.gather(idx, out);
  }
  Status scatter(std::span<const std::size_t> idx, std::span<const T> in) {
    return v_.scatter(idx, in);
  }

 private:
  // Calls fn(first index, page bytes, element count) for each page of [lo, lo + n).
  template <typename Fn>
  Status pages(std::size_t lo, std::size_t n, bool write, Fn&& fn) const {
    for (std::size_t i = lo, end = lo + n; i < end;) {
      DerefScope scope(*rt_);
      std::byte* p = scope.translate(v_.addr_of(i), write);
      if (p == nullptr) return scope.error();
      const std::size_t page_end = std::min(end, (i / per_page_ + 1) * per_page_);
      fn(i, p, page_end - i);
      i = page_end;
    }
    return Status::Ok();
  }

  Runtime* rt_;
  far_vector<T> v_;
  std::size_t per_page_;
};

/// Makes the arrays of one storage: LocalStore for --mode local, FarStore for --mode far.
struct LocalStore {
  template <typename T>
  using Array = LocalArray<T>;
  template <typename T>
  Array<T> make() const {
    return {};
  }
};
struct FarStore {
  template <typename T>
  using Array = FarArray<T>;
  template <typename T>
  Array<T> make() const {
    return Array<T>(*rt);
  }
  Runtime* rt = nullptr;
};

}  // namespace farmem::graph
