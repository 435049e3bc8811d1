// farmem/far_vector.h: a growable array in far memory.
//
// Elements never straddle a page: a page holds page_bytes / sizeof(T) of them. Storage is a
// table of segments of kSegmentPages pages each, so growth never copies elements. Access goes
// through a DerefScope like far_ptr; iterating in order is a sequential page stream, which the
// cache's trend detector recognises and prefetches ahead of.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "farmem/far_ptr.h"

namespace farmem {

template <typename T>
class far_vector {
  static_assert(std::is_trivially_copyable_v<T>, "far elements move as bytes");

 public:
  /// Pages per segment: 16 pages (64 KiB at 4 KiB pages) amortise allocation while a small
  /// vector wastes at most one segment.
  static constexpr std::uint64_t kSegmentPages = 16;

  explicit far_vector(Runtime& rt)
      : rt_(&rt),
        page_(rt.page_bytes()),
        per_page_(page_ / sizeof(T)),
        per_segment_(per_page_ * kSegmentPages) {
    static_assert(sizeof(T) <= 4096, "elements must fit the smallest page");
  }
  ~far_vector() { release(); }
  far_vector(const far_vector&) = delete;
  far_vector& operator=(const far_vector&) = delete;
  far_vector(far_vector&& o) noexcept { *this = std::move(o); }
  far_vector& operator=(far_vector&& o) noexcept {
    if (this != &o) {
      release();
      rt_ = o.rt_;
      page_ = o.page_;
      per_page_ = o.per_page_;
      per_segment_ = o.per_segment_;
      segments_ = std::move(o.segments_);
      size_ = o.size_;
      o.segments_.clear();
      o.size_ = 0;
    }
    return *this;
  }

  /// The runtime whose far memory holds the elements.
  Runtime& runtime() const { return *rt_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::size_t capacity() const { return segments_.size() * per_segment_; }

  /// The far address of element i (i < capacity()).
  FarAddr addr_of(std::size_t i) const {
    const std::size_t seg = i / per_segment_;
    const std::size_t in = i % per_segment_;
    return segments_[seg] + (in / per_page_) * page_ + (in % per_page_) * sizeof(T);
  }

  /// Element i within `scope`. Aborts with a clear message if its page cannot be fetched (a
  /// reference cannot carry an error); try_get/try_get_mut return the error instead.
  const T& get(std::size_t i, DerefScope& scope) const { return *ptr(i, scope, false); }
  T& get_mut(std::size_t i, DerefScope& scope) { return *ptr(i, scope, true); }
  Result<const T*> try_get(std::size_t i, DerefScope& scope) const {
    std::byte* p = scope.translate(addr_of(i), false);
    if (p == nullptr) return scope.error();
    return std::launder(reinterpret_cast<const T*>(p));
  }
  Result<T*> try_get_mut(std::size_t i, DerefScope& scope) {
    std::byte* p = scope.translate(addr_of(i), true);
    if (p == nullptr) return scope.error();
    return std::launder(reinterpret_cast<T*>(p));
  }

  /// Copies element i out (its own scope); the fetch error if its page cannot be fetched.
  Result<T> load(std::size_t i) const {
    DerefScope scope(*rt_);
    std::byte* p = scope.translate(addr_of(i), false);
    if (p == nullptr) return scope.error();
    T out;
    std::memcpy(&out, p, sizeof(T));
    return out;
  }
  Status store(std::size_t i, const T& value) {
    DerefScope scope(*rt_);
    std::byte* p = scope.translate(addr_of(i), true);
    if (p == nullptr) return scope.error();
    std::memcpy(p, &value, sizeof(T));
    return Status::Ok();
  }

  /// Most pages whose misses one gather or scatter keeps in flight while it works on the
  /// previous group (fewer with a small cache: Runtime::prefetch_window()).
  static constexpr std::size_t kGatherWindow = 128;
  /// Elements a gather or scatter copies under one DerefScope.
  static constexpr std::size_t kScopeElements = 32;
  static_assert(kScopeElements < detail::kMaxTouched);

  /// out[k] = element indices[k], for every k, with many page misses in flight: the pages
  /// of the next group of indices (Runtime::prefetch_window() of them) are fetched
  /// (Runtime::prefetch) while this group is copied, so random reads from one thread move at batch speed rather than one round trip
  /// each. kOutOfRange for an index past size() (nothing copied from that group on);
  /// kInvalidArgument when `out` is shorter than `indices`; a fetch error as load() gives it.
  Status gather(std::span<const std::size_t> indices, std::span<T> out) const {
    if (out.size() < indices.size()) {
      return InvalidArgument("far_vector::gather: " + std::to_string(indices.size()) +
                             " indices but room for " + std::to_string(out.size()));
    }
    return batched(indices, false, [&](std::size_t k, std::byte* p) {
      std::memcpy(&out[k], p, sizeof(T));
    });
  }
  /// Element indices[k] = values[k], for every k, with the same misses in flight as
  /// gather(). A repeated index takes the last of its values.
  Status scatter(std::span<const std::size_t> indices, std::span<const T> values) {
    if (values.size() < indices.size()) {
      return InvalidArgument("far_vector::scatter: " + std::to_string(indices.size()) +
                             " indices but " + std::to_string(values.size()) + " values");
    }
    return batched(indices, true, [&](std::size_t k, std::byte* p) {
      std::memcpy(p, &values[k], sizeof(T));
    });
  }

  Status reserve(std::size_t n) {
    while (capacity() < n) {
      auto seg = rt_->allocate_pages(kSegmentPages);
      if (!seg.ok()) return seg.status();
      segments_.push_back(*seg);
    }
    return Status::Ok();
  }
  Status push_back(const T& value) {
    if (auto st = reserve(size_ + 1); !st.ok()) return st;
    if (auto st = store(size_, value); !st.ok()) return st;
    ++size_;
    return Status::Ok();
  }
  /// Appends `n` elements, element i (its index in the vector) being gen(i), with one
  /// DerefScope and one translation per page instead of per element: the way to fill a vector
  /// larger than the cache (push_back pays both, and the scope's fences, for every element).
  /// A page it fills whole is not fetched from far memory (translate_for_overwrite).
  /// On an error the elements written before it stay appended: size() tells how many.
  template <typename Gen>
  Status append(std::size_t n, Gen&& gen) {
    if (auto st = reserve(size_ + n); !st.ok()) return st;
    const std::size_t end = size_ + n;
    while (size_ < end) {
      DerefScope scope(*rt_);
      const bool whole_page = size_ % per_page_ == 0 && end - size_ >= per_page_;
      std::byte* p = whole_page ? scope.translate_for_overwrite(addr_of(size_))
                                : scope.translate(addr_of(size_), true);
      if (p == nullptr) return scope.error();
      T* elems = std::launder(reinterpret_cast<T*>(p));
      const std::size_t page_end = std::min(end, (size_ / per_page_ + 1) * per_page_);
      for (const std::size_t first = size_; size_ < page_end; ++size_) {
        const T value = gen(size_);
        std::memcpy(&elems[size_ - first], &value, sizeof(T));
      }
    }
    return Status::Ok();
  }
  /// Grows with value-initialised elements (through append: whole pages are not fetched),
  /// or shrinks. On an error while growing, size() tells how many elements were added.
  Status resize(std::size_t n) {
    if (n <= size_) {
      size_ = n;
      return Status::Ok();
    }
    return append(n - size_, [](std::size_t) { return T{}; });
  }

  /// Calls fn(index, const T&) for every element in order, in a fresh DerefScope per page:
  /// the way to scan a vector larger than the cache (the reference is valid during the call).
  template <typename Fn>
  Status for_each(Fn&& fn) const {
    for (std::size_t i = 0; i < size_;) {
      DerefScope scope(*rt_);
      // Elements of one page are contiguous: translate once, then walk them as an array.
      std::byte* p = scope.translate(addr_of(i), false);
      if (p == nullptr) return scope.error();
      const T* elems = std::launder(reinterpret_cast<const T*>(p));
      const std::size_t page_end = std::min(size_, (i / per_page_ + 1) * per_page_);
      for (const std::size_t first = i; i < page_end; ++i) fn(i, elems[i - first]);
    }
    return Status::Ok();
  }

  /// Calls fn(index, T&) for every element in order, in a fresh DerefScope per page, and
  /// marks every page dirty: for_each() for passes that change elements in place.
  template <typename Fn>
  Status for_each_mut(Fn&& fn) {
    for (std::size_t i = 0; i < size_;) {
      DerefScope scope(*rt_);
      std::byte* p = scope.translate(addr_of(i), true);
      if (p == nullptr) return scope.error();
      T* elems = std::launder(reinterpret_cast<T*>(p));
      const std::size_t page_end = std::min(size_, (i / per_page_ + 1) * per_page_);
      for (const std::size_t first = i; i < page_end; ++i) fn(i, elems[i - first]);
    }
    return Status::Ok();
  }

  /// A random-access iterator reading elements within `scope`. Every page it visits stays
  /// resident until the scope ends, so one scope can only iterate over what fits the cache;
  /// use for_each() for larger scans.
  class const_iterator {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = const T*;
    using reference = const T&;

    const_iterator() = default;
    const_iterator(const far_vector* v, std::size_t i, DerefScope* s) : v_(v), i_(i), s_(s) {}
    reference operator*() const { return v_->get(i_, *s_); }
    pointer operator->() const { return &**this; }
    reference operator[](difference_type n) const { return v_->get(i_ + n, *s_); }
    const_iterator& operator++() { ++i_; return *this; }
    const_iterator operator++(int) { auto t = *this; ++i_; return t; }
    const_iterator& operator--() { --i_; return *this; }
    const_iterator operator--(int) { auto t = *this; --i_; return t; }
    const_iterator& operator+=(difference_type n) { i_ += n; return *this; }
    const_iterator& operator-=(difference_type n) { i_ -= n; return *this; }
    friend const_iterator operator+(const_iterator a, difference_type n) { return a += n; }
    friend const_iterator operator-(const_iterator a, difference_type n) { return a -= n; }
    friend difference_type operator-(const const_iterator& a, const const_iterator& b) {
      return static_cast<difference_type>(a.i_) - static_cast<difference_type>(b.i_);
    }
    friend bool operator==(const const_iterator& a, const const_iterator& b) { return a.i_ == b.i_; }
    friend auto operator<=>(const const_iterator& a, const const_iterator& b) { return a.i_ <=> b.i_; }

   private:
    const far_vector* v_ = nullptr;
    std::size_t i_ = 0;
    DerefScope* s_ = nullptr;
  };

  const_iterator begin(DerefScope& scope) const { return {this, 0, &scope}; }
  const_iterator end(DerefScope& scope) const { return {this, size_, &scope}; }

 private:
  // gather/scatter: visits indices[k] with fn(k, element bytes), the next window's pages
  // prefetched before this one is visited.
  template <typename Fn>
  Status batched(std::span<const std::size_t> indices, bool write, Fn&& fn) const {
    const std::size_t n = indices.size();
    const std::size_t window = std::min(kGatherWindow, rt_->prefetch_window());
    const std::size_t group = std::min(kScopeElements, window);
    const detail::CacheView& view = rt_->cache_view();
    FarAddr addrs[kGatherWindow];
    // Asks the cache for the group's pages that are not resident now. A resident page costs
    // no call into the cache (the radix walk of the hit path only), so at a budget that holds
    // the data no prefetch runs at all. Without a cache every page is asked for, and the
    // prefetch reports why there is none.
    const auto post = [&](std::size_t from) -> Status {
      const std::size_t to = std::min(n, from + window);
      std::size_t missing = 0;
      std::uint64_t last_key = ~std::uint64_t{0};
      for (std::size_t k = from; k < to; ++k) {
        if (indices[k] >= size_) {
          return OutOfRange("far_vector: index " + std::to_string(indices[k]) + " of " +
                            std::to_string(size_));
        }
        const FarAddr a = addr_of(indices[k]);
        const std::uint64_t key = a.raw >> view.page_shift;
        if (key == last_key) continue;
        last_key = key;
        if (view.cache != nullptr &&
            detail::pte_state(detail::pte_of(view, key)) == detail::kPtePresent) {
          continue;
        }
        addrs[missing++] = a;
      }
      return missing == 0 ? Status::Ok() : rt_->prefetch(std::span<const FarAddr>(addrs, missing));
    };
    if (n > 0) FARMEM_RETURN_IF_ERROR(post(0));
    for (std::size_t w = 0; w < n; w += window) {
      if (w + window < n) FARMEM_RETURN_IF_ERROR(post(w + window));
      const std::size_t end = std::min(n, w + window);
      for (std::size_t k = w; k < end;) {
        // One scope a run of `group` elements: its set-up (a fence) is paid once a run, and
        // it pins at most that many pages: no more than the window (a sixteenth of the
        // cache), and fewer than detail::kMaxTouched, past which a scope that waits for room
        // pins every page it has touched.
        DerefScope scope(*rt_);
        for (const std::size_t stop = std::min(end, k + group); k < stop; ++k) {
          std::byte* p = scope.translate(addr_of(indices[k]), write);
          if (p == nullptr) return scope.error();
          fn(k, p);
        }
      }
    }
    return Status::Ok();
  }

  T* ptr(std::size_t i, DerefScope& scope, bool write) const {
    std::byte* p = scope.translate(addr_of(i), write);
    if (p == nullptr) [[unlikely]] detail::deref_failed(scope.error());
    return std::launder(reinterpret_cast<T*>(p));
  }
  void release() {
    for (FarAddr s : segments_) (void)rt_->free_pages(s, kSegmentPages);
    segments_.clear();
    size_ = 0;
  }

  Runtime* rt_ = nullptr;
  std::size_t page_ = 0;
  std::size_t per_page_ = 0;
  std::size_t per_segment_ = 0;
  std::vector<FarAddr> segments_;
  std::size_t size_ = 0;
};

}  // namespace farmem
