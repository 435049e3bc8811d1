// CLOCK (second-chance) eviction over frame indices: pure logic, no frames, no transport.
//
// Why CLOCK and not LRU: an LRU list must be updated on every cache hit, which means a lock or
// an atomic read-modify-write on the hit path. CLOCK needs only one byte per frame, set with a
// plain relaxed store on a hit; all ordering work is done by the evictor, off the hit path.
//
//   frames:   0   1   2   3   4   5   6   7
//   ref bit: [1] [0] [1] [1] [0] [0] [1] [0]
//                     ^ hand: a set bit is cleared (second chance), a clear bit is a victim
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace farmem::paging {

/// One "recently used" byte per frame.
///
/// Thread safety: mark() may run on any number of threads at once (the cache-hit path);
/// test_and_clear() and clear() run only on the evictor, which is serialised by its own lock.
class ReferenceBits {
 public:
  explicit ReferenceBits(std::uint32_t frames)
      : frames_(frames), bits_(std::make_unique<std::atomic<std::uint8_t>[]>(frames)) {}

  std::uint32_t frames() const { return frames_; }

  /// Cache-hit path: no lock, no read-modify-write. The load first keeps a hot frame's cache
  /// line clean when its bit is already set (hit-heavy threads then share it read-only); the
  /// write itself is a plain relaxed store of 1.
  void mark(std::uint32_t frame) {
    std::atomic<std::uint8_t>& bit = bits_[frame];
    if (bit.load(std::memory_order_relaxed) == 0) bit.store(1, std::memory_order_relaxed);
  }

  /// Evictor only: returns whether the frame was referenced, and clears the bit if so.
  /// Not atomic as a whole, on purpose: a mark() racing between the load and the store is lost,
  /// which is harmless because the frame is getting its second chance right now anyway. A
  /// mark() racing with a load that saw 0 is never lost (nothing is stored then).
  bool test_and_clear(std::uint32_t frame) {
    std::atomic<std::uint8_t>& bit = bits_[frame];
    if (bit.load(std::memory_order_relaxed) == 0) return false;
    bit.store(0, std::memory_order_relaxed);
    return true;
  }

  /// Evictor / frame (re)installation: forget the frame's history.
  void clear(std::uint32_t frame) { bits_[frame].store(0, std::memory_order_relaxed); }

  /// The raw bytes, for the inline hit path of far_ptr (include/farmem/detail/cache_view.h),
  /// which marks with the same relaxed store as mark().
  std::atomic<std::uint8_t>* data() { return bits_.get(); }

  /// For statistics and tests.
  bool is_set(std::uint32_t frame) const {
    return bits_[frame].load(std::memory_order_relaxed) != 0;
  }

 private:
  std::uint32_t frames_;
  std::unique_ptr<std::atomic<std::uint8_t>[]> bits_;
};

/// The clock hand and the victim search.
///
/// Not thread-safe: the evictor calls pick() under its own lock (the hand is plain state).
class Clock {
 public:
  /// Two sweeps: the first may only clear reference bits, the second then finds those frames
  /// unreferenced. More would only spin when every frame is pinned or re-marked concurrently.
  static constexpr std::uint64_t kMaxSweeps = 2;

  explicit Clock(std::uint32_t frames) : frames_(frames) {}

  std::uint32_t frames() const { return frames_; }
  /// The next frame the hand will look at; persists across pick() calls.
  std::uint32_t hand() const { return hand_; }

  /// Appends up to `want` victims to `out` and returns how many it appended.
  ///
  /// Frames for which `evictable(frame)` is false (pinned, free, in flight) are skipped with
  /// their bit untouched. A referenced evictable frame has its bit cleared and is passed over
  /// (second chance); an unreferenced evictable frame becomes a victim. Looks at no more than
  /// kMaxSweeps * frames() frames, so it terminates even when everything is pinned, and never
  /// returns the same frame twice in one call. The caller evicts the victims (or, if it changes
  /// its mind, simply does not); pick() does not remember them.
  template <class Evictable>
  std::size_t pick(std::size_t want, ReferenceBits& ref, Evictable&& evictable,
                   std::vector<std::uint32_t>& out) {
    return pick(want, ref, evictable, [](std::uint32_t) {}, out);
  }

  /// As above; `on_second_chance(frame)` runs for every referenced frame passed over.
  template <class Evictable, class OnSecondChance>
  std::size_t pick(std::size_t want, ReferenceBits& ref, Evictable&& evictable,
                   OnSecondChance&& on_second_chance, std::vector<std::uint32_t>& out) {
    const std::size_t base = out.size();
    // Index into out of the next victim of this call that the hand will meet again; victims
    // are met again in the order they were picked, one full sweep later.
    std::size_t revisit = base;
    const std::uint64_t max_steps = kMaxSweeps * frames_;
    for (std::uint64_t step = 0; step < max_steps && out.size() - base < want; ++step) {
      const std::uint32_t frame = advance();
      if (step >= frames_ && revisit < out.size() && out[revisit] == frame) {
        ++revisit;  // already a victim of this call
        continue;
      }
      if (!evictable(frame)) continue;
      if (ref.test_and_clear(frame)) {  // second chance
        on_second_chance(frame);
        continue;
      }
      out.push_back(frame);
    }
    return out.size() - base;
  }

 private:
  /// Returns the frame under the hand and moves the hand on.
  std::uint32_t advance() {
    const std::uint32_t frame = hand_;
    hand_ = (hand_ + 1 == frames_) ? 0 : hand_ + 1;
    return frame;
  }

  std::uint32_t frames_;
  std::uint32_t hand_ = 0;
};

}  // namespace farmem::paging
