// What the sanitizers cannot see, said to them in one place.
#pragma once

namespace farmem {

#if defined(__SANITIZE_THREAD__)
inline constexpr bool kThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kThreadSanitizer = true;
#else
inline constexpr bool kThreadSanitizer = false;
#endif
#else
inline constexpr bool kThreadSanitizer = false;
#endif

extern "C" {
// The TSan runtime's own entry points (libclang_rt.tsan / libtsan); called only when
// kThreadSanitizer, so a build without TSan never needs them. Weak: nothing to link otherwise.
[[gnu::weak]] void __tsan_ignore_thread_begin();
[[gnu::weak]] void __tsan_ignore_thread_end();
[[gnu::weak]] void __tsan_write_range(void* addr, unsigned long size);
[[gnu::weak]] void __tsan_read_range(void* addr, unsigned long size);
}

/// For its scope, TSan ignores this thread's memory accesses (interceptors' memcpy included).
/// Only for accesses ordered by something TSan cannot model, or racing by design. The users:
/// a region page copied for write-back (region_evict.cc), whose application stores are
/// ordered before the copy by the kernel's write protection (UFFDIO_WRITEPROTECT under the
/// page lock: a store after it faults and waits for the page lock), not by any user-space
/// synchronisation; and the local transport's side of far memory (local_connection.cc),
/// which, like a memserver's memory under one-sided RDMA, may be read while another op
/// writes it: a region's fetch that raced a write-back of its page is found stale by its
/// epoch and discarded (region_sigbus.cc), and the kernel's ordering of a fault after an
/// unmap is invisible to TSan.
class TsanIgnoreAccesses {
 public:
  TsanIgnoreAccesses() {
    if constexpr (kThreadSanitizer) __tsan_ignore_thread_begin();
  }
  ~TsanIgnoreAccesses() {
    if constexpr (kThreadSanitizer) __tsan_ignore_thread_end();
  }
  TsanIgnoreAccesses(const TsanIgnoreAccesses&) = delete;
  TsanIgnoreAccesses& operator=(const TsanIgnoreAccesses&) = delete;
};

/// Tells TSan this thread wrote [p, p + n): for a copy made under TsanIgnoreAccesses whose
/// destination is ordinary memory, so races on the destination are still reported.
inline void tsan_note_write(void* p, unsigned long n) {
  if constexpr (kThreadSanitizer) {
    if (__tsan_write_range != nullptr) __tsan_write_range(p, n);
  }
}

/// Tells TSan this thread read [p, p + n): the source of such a copy.
inline void tsan_note_read(const void* p, unsigned long n) {
  if constexpr (kThreadSanitizer) {
    if (__tsan_read_range != nullptr) __tsan_read_range(const_cast<void*>(p), n);
  }
}

}  // namespace farmem
