// farmem/far_hash_map.h: a hash map whose slots live in far memory (open addressing with
// linear probing over a far_vector), enough for a key-value store. Keys and values are
// trivially copyable (fixed-size records). Thread-safe: lookups share a lock, updates take it
// exclusively (growth rehashes the whole table). Every operation returns far-memory errors
// (a page that cannot be fetched) instead of aborting.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <mutex>
#include <shared_mutex>

#include "farmem/far_vector.h"

namespace farmem {

template <typename K, typename V, typename Hash = std::hash<K>>
class far_hash_map {
  struct Slot {
    std::uint8_t state;  // kEmpty, kFull or kTombstone
    K key;
    V value;
  };
  static constexpr std::uint8_t kEmpty = 0, kFull = 1, kTombstone = 2;
  // Grow past 70 % occupancy (tombstones included): linear probing stays short below it.
  static constexpr double kMaxLoad = 0.7;

 public:
  explicit far_hash_map(Runtime& rt, std::size_t initial_capacity = 1024)
      : rt_(&rt), slots_(rt), initial_(round_pow2(initial_capacity)) {}

  std::size_t size() const {
    std::shared_lock lock(mu_);
    return size_;
  }

  /// Inserts or replaces. A page that cannot be fetched (far memory unreachable, cache
  /// exhausted) returns its error; the map is then unchanged.
  Status put(const K& key, const V& value) {
    std::unique_lock lock(mu_);
    if (slots_.size() == 0) FARMEM_RETURN_IF_ERROR(rehash(initial_));
    if (static_cast<double>(size_ + tombstones_ + 1) > kMaxLoad * slots_.size()) {
      FARMEM_RETURN_IF_ERROR(rehash(slots_.size() * 2));
    }
    DerefScope scope(*rt_);
    std::size_t reuse = slots_.size();
    for (std::size_t i = start(key), n = 0; n < slots_.size(); i = next(i), ++n) {
      FARMEM_ASSIGN_OR_RETURN(const Slot* s, slots_.try_get(i, scope));
      if (s->state == kFull && s->key == key) {
        FARMEM_ASSIGN_OR_RETURN(Slot* w, slots_.try_get_mut(i, scope));
        w->value = value;
        return Status::Ok();
      }
      if (s->state == kTombstone && reuse == slots_.size()) reuse = i;
      if (s->state == kEmpty) {
        if (reuse == slots_.size()) reuse = i;
        break;
      }
    }
    FARMEM_ASSIGN_OR_RETURN(Slot* s, slots_.try_get_mut(reuse, scope));
    if (s->state == kTombstone) --tombstones_;
    *s = Slot{kFull, key, value};
    ++size_;
    return Status::Ok();
  }

  /// The value of `key`, nullopt when absent, or the error of a page that cannot be fetched.
  Result<std::optional<V>> get(const K& key) const {
    std::shared_lock lock(mu_);
    if (slots_.size() == 0) return std::optional<V>();
    DerefScope scope(*rt_);
    for (std::size_t i = start(key), n = 0; n < slots_.size(); i = next(i), ++n) {
      FARMEM_ASSIGN_OR_RETURN(const Slot* s, slots_.try_get(i, scope));
      if (s->state == kEmpty) return std::optional<V>();
      if (s->state == kFull && s->key == key) return std::optional<V>(s->value);
    }
    return std::optional<V>();
  }

  /// Removes `key`: true when it was present, false when absent, or the error of a page
  /// that cannot be fetched (the map is then unchanged).
  Result<bool> erase(const K& key) {
    std::unique_lock lock(mu_);
    if (slots_.size() == 0) return false;
    DerefScope scope(*rt_);
    for (std::size_t i = start(key), n = 0; n < slots_.size(); i = next(i), ++n) {
      FARMEM_ASSIGN_OR_RETURN(const Slot* s, slots_.try_get(i, scope));
      if (s->state == kEmpty) return false;
      if (s->state == kFull && s->key == key) {
        FARMEM_ASSIGN_OR_RETURN(Slot* w, slots_.try_get_mut(i, scope));
        w->state = kTombstone;
        --size_;
        ++tombstones_;
        return true;
      }
    }
    return false;
  }

 private:
  static std::size_t round_pow2(std::size_t n) {
    std::size_t p = 16;
    while (p < n) p *= 2;
    return p;
  }
  std::size_t start(const K& key) const { return Hash{}(key) & (slots_.size() - 1); }
  std::size_t next(std::size_t i) const { return (i + 1) & (slots_.size() - 1); }

  // Moves every entry into a table of `capacity` slots (a power of two).
  Status rehash(std::size_t capacity) {
    far_vector<Slot> bigger(*rt_);
    FARMEM_RETURN_IF_ERROR(bigger.resize(capacity));  // zeroed: every slot kEmpty
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      // One short scope per entry: a table larger than the cache must not pin it all.
      DerefScope scope(*rt_);
      FARMEM_ASSIGN_OR_RETURN(const Slot* from, slots_.try_get(i, scope));
      const Slot s = *from;
      if (s.state != kFull) continue;
      std::size_t j = Hash{}(s.key) & (capacity - 1);
      for (;;) {  // bounded: the bigger table has free slots (load stays below kMaxLoad)
        FARMEM_ASSIGN_OR_RETURN(Slot* to, bigger.try_get_mut(j, scope));
        if (to->state != kFull) {
          *to = s;
          break;
        }
        j = (j + 1) & (capacity - 1);
      }
    }
    slots_ = std::move(bigger);
    tombstones_ = 0;
    return Status::Ok();
  }

  Runtime* rt_;
  mutable std::shared_mutex mu_;  ///< shared for get, exclusive for put/erase/rehash
  far_vector<Slot> slots_;
  std::size_t initial_;
  std::size_t size_ = 0;
  std::size_t tombstones_ = 0;
};

}  // namespace farmem
