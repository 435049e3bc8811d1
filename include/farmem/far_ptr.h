// farmem/far_ptr.h: explicit far pointers (AIFM-style) and the DerefScope that keeps what
// they reference local.
//
//   farmem::DerefScope scope(rt);
//   const Node& n = ptr.deref(scope);   // valid until `scope` ends
//   ptr.deref_mut(scope).count++;       // marks the page dirty
//
// A hit costs a compare against the scope's one-entry TLB, or a radix walk of three plain
// loads; it takes no lock and performs no atomic read-modify-write. Keep scopes short: while
// a thread is inside one, the pages it touched cannot be evicted.
#pragma once

#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

#include "farmem/detail/cache_view.h"
#include "farmem/runtime.h"

namespace farmem {

namespace detail {
/// deref() on a page that could not be fetched: logs the error and aborts (a reference
/// cannot carry an error). Use try_deref() to handle the failure instead.
[[noreturn]] void deref_failed(const Status& error);
}  // namespace detail

/// While alive, every page dereferenced through it stays resident and its references valid.
/// Not movable; one thread. Scopes nest.
class DerefScope {
 public:
  explicit DerefScope(Runtime& rt) : v_(rt.cache_view()) {
    if (v_.cache == nullptr) [[unlikely]] {
      error_ = *v_.error;  // no page cache: every translation fails with its error
      slot_ = nullptr;
      return;
    }
    slot_ = thread_slot(v_);
    if (slot_ == nullptr) [[unlikely]] {
      // More threads than RuntimeOptions.max_cache_threads: every translation fails.
      detail::cache_no_slot_error(v_.cache, &error_);
      return;
    }
    if (slot_->depth++ == 0) {
      slot_->ntouched.store(0, std::memory_order_relaxed);
      slot_->state.store(slot_->state.load(std::memory_order_relaxed) + 1,
                         std::memory_order_relaxed);
      // Pairs with the evictor's fence: either it sees us inside the scope, or we see its
      // kEvicting mark on every entry we read from here on.
      std::atomic_thread_fence(std::memory_order_seq_cst);
    }
  }
  ~DerefScope() {
    if (slot_ == nullptr) [[unlikely]] return;
    if (hits_ != 0) {  // one publication a scope, not one a hit
      slot_->hits.store(slot_->hits.load(std::memory_order_relaxed) + hits_,
                        std::memory_order_relaxed);
    }
    if (--slot_->depth == 0) {
      slot_->state.store(slot_->state.load(std::memory_order_relaxed) + 1,
                         std::memory_order_release);
    }
  }
  DerefScope(const DerefScope&) = delete;
  DerefScope& operator=(const DerefScope&) = delete;

  /// The local address of far byte `addr`, fetching its page if needed; nullptr (see
  /// error()) when the page could not be fetched. `write` marks the page dirty.
  std::byte* translate(FarAddr addr, bool write) {
    const std::uint64_t key = addr.raw >> v_.page_shift;
    const std::uint64_t off = addr.raw & ((std::uint64_t{1} << v_.page_shift) - 1);
    if (key == tlb_key_ && (tlb_writable_ || !write)) return tlb_base_ + off;
    std::byte* base = lookup(key, write);
    return base == nullptr ? nullptr : base + off;
  }

  /// translate(addr, true) for a caller that overwrites the whole page holding `addr` before
  /// anything reads it: a page not in the cache is not fetched but gets a zeroed frame (its
  /// far content is lost). For filling fresh memory (far_vector::append), where a fetch would
  /// read bytes about to be overwritten.
  std::byte* translate_for_overwrite(FarAddr addr) {
    const std::uint64_t key = addr.raw >> v_.page_shift;
    const std::uint64_t off = addr.raw & ((std::uint64_t{1} << v_.page_shift) - 1);
    if (key == tlb_key_ && tlb_writable_) return tlb_base_ + off;
    std::byte* base = lookup(key, true, /*overwrite=*/true);
    return base == nullptr ? nullptr : base + off;
  }

  /// Why the last translate() returned nullptr.
  const Status& error() const { return error_; }

 private:
  static detail::ThreadSlot* thread_slot(const detail::CacheView& v) {
    thread_local detail::PageCache* last_cache = nullptr;
    thread_local std::uint64_t last_id = 0;
    thread_local detail::ThreadSlot* last_slot = nullptr;
    if (v.cache != last_cache || v.id != last_id || last_slot == nullptr) {
      last_slot = detail::cache_thread_slot(v.cache);
      last_cache = v.cache;
      last_id = v.id;
    }
    return last_slot;
  }

  std::byte* lookup(std::uint64_t key, bool write, bool overwrite = false) {
    if (slot_ == nullptr) [[unlikely]] return nullptr;  // error_ says why
    const std::uint64_t pte = detail::pte_of(v_, key);
    if (detail::pte_state(pte) == detail::kPtePresent) return hit(key, detail::pte_frame(pte), write);
    std::byte* base = overwrite ? detail::cache_fault_overwrite(v_.cache, slot_, key, &error_)
                                : detail::cache_fault(v_.cache, slot_, key, write, &error_);
    if (base != nullptr) remember(key, base, write);
    return base;
  }

  std::byte* hit(std::uint64_t key, std::uint32_t frame, bool write) {
    // Stores only when the bit is clear: hot frames' lines stay clean and shared.
    if (v_.ref[frame].load(std::memory_order_relaxed) == 0) {
      v_.ref[frame].store(1, std::memory_order_relaxed);
    }
    if (write) v_.dirty[frame].store(1, std::memory_order_relaxed);
    if (v_.prefetched[frame].load(std::memory_order_relaxed) != 0) {
      detail::cache_prefetch_hit(v_.cache, slot_, key, frame);
    }
    ++hits_;
    std::byte* base = v_.frames + (std::uint64_t{frame} << v_.page_shift);
    detail::note_touched(slot_, key);  // honoured by the evictor while we block in the cache
    remember(key, base, write);
    return base;
  }

  void remember(std::uint64_t key, std::byte* base, bool write) {
    if (key != tlb_key_) tlb_writable_ = false;
    tlb_key_ = key;
    tlb_base_ = base;
    tlb_writable_ = tlb_writable_ || write;
  }

  detail::CacheView v_;
  detail::ThreadSlot* slot_;
  std::uint64_t tlb_key_ = ~std::uint64_t{0};
  std::byte* tlb_base_ = nullptr;
  bool tlb_writable_ = false;
  std::uint64_t hits_ = 0;  ///< page-table hits of this scope, published at its end
  Status error_;
};

/// A pointer to a T in far memory. T must be trivially copyable (it moves as bytes) and fit
/// in one cache page (objects never straddle pages).
template <typename T>
class far_ptr {
  static_assert(std::is_trivially_copyable_v<T>, "far objects move as bytes");

 public:
  far_ptr() = default;
  explicit far_ptr(FarAddr addr) : addr_(addr) {}

  FarAddr addr() const { return addr_; }
  bool is_null() const { return addr_.is_null(); }
  explicit operator bool() const { return !is_null(); }

  /// Read access; valid until `scope` ends. Aborts with a clear message if the page cannot
  /// be fetched (use try_deref to handle that).
  const T& deref(DerefScope& scope) const { return *checked(scope, false); }
  /// Write access; marks the page dirty.
  T& deref_mut(DerefScope& scope) const { return *checked(scope, true); }
  /// Like deref/deref_mut, but returns the fetch error instead of aborting.
  Result<T*> try_deref(DerefScope& scope, bool write = false) const {
    std::byte* p = scope.translate(addr_, write);
    if (p == nullptr) return scope.error();
    return std::launder(reinterpret_cast<T*>(p));
  }

  friend bool operator==(const far_ptr&, const far_ptr&) = default;

 private:
  T* checked(DerefScope& scope, bool write) const {
    std::byte* p = scope.translate(addr_, write);
    if (p == nullptr) [[unlikely]] detail::deref_failed(scope.error());
    return std::launder(reinterpret_cast<T*>(p));
  }

  FarAddr addr_;
};

template <typename T, typename... Args>
Result<far_ptr<T>> Runtime::make_far(Args&&... args) {
  auto addr = allocate_object(sizeof(T), alignof(T));
  if (!addr.ok()) return addr.status();
  DerefScope scope(*this);
  std::byte* p = scope.translate(*addr, true);
  if (p == nullptr) {
    (void)free_object(*addr);
    return scope.error();
  }
  ::new (static_cast<void*>(p)) T(std::forward<Args>(args)...);
  return far_ptr<T>(*addr);
}

template <typename T>
Status Runtime::destroy(far_ptr<T>& ptr) {
  auto st = free_object(ptr.addr());
  if (st.ok()) ptr = far_ptr<T>();
  return st;
}

}  // namespace farmem
