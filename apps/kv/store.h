// farmem-kv's item store: what lives where.
//
//   local (per item, 64 bytes)          far (through the runtime's page cache)
//   +------------------------------+    +-----------------+-------------------+
//   | Item: key hash, far address, |--->| key (<= 250 B)  | value (<= item_max)|
//   | lengths, flags, expiry, cas, |    +-----------------+-------------------+
//   | LRU and hash-chain links     |    one far object (<= a page, never straddling one)
//   +------------------------------+    or a run of whole pages (larger items)
//
// Keys and values live in far memory; the local index holds a fixed-size entry per item
// whatever the key's length, and a lookup confirms the key against the far copy (two keys
// with one 64-bit hash stay apart). Hot items stay resident in the page cache (the local
// budget, -m); cold ones are fetched on use. Items are evicted in LRU order when the far
// bytes they use would pass StoreOptions::far_capacity, or when far memory runs out before
// that: each shard keeps its items in use order, and an eviction takes the least recently
// used of the shards' tails (every use is stamped from one counter), so the order is global.
//
// Thread-safe: the index is split in shards by key hash, each behind its own mutex. Far reads
// of an item happen under its shard's lock (an item is never freed while read); new records
// are written before the lock is taken, so a store holds it only to look up and link.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <farmem/farmem.h>

namespace farmem::kv {

/// Longest key, as memcached (the protocol's limit).
inline constexpr std::size_t kMaxKeyBytes = 250;

struct StoreOptions {
  /// Far bytes items may use (at the heap's allocation sizes); past it, LRU items are evicted.
  std::uint64_t far_capacity = 1ull << 30;
  /// Largest item: key plus value bytes (memcached's -I).
  std::uint64_t item_max = 1u << 20;
  /// Index shards (a power of two): enough that worker threads rarely meet on one lock.
  std::uint32_t shards = 64;
  /// Items in malloc'd local memory instead of far memory (farmem-kv --plain): the same
  /// server with no page cache in the way, the baseline for kernel swap. An item's FarAddr
  /// then holds its pointer; capacity and LRU eviction work as in far mode.
  bool plain_memory = false;
};

enum class StoreMode : std::uint8_t { kSet, kAdd, kReplace, kAppend, kPrepend, kCas };
enum class StoreOutcome : std::uint8_t { kStored, kNotStored, kExists, kNotFound };
enum class ArithOutcome : std::uint8_t { kDone, kNotFound, kNonNumeric, kExists };

/// What a hit returns besides the value.
struct ItemInfo {
  std::uint32_t flags = 0;
  std::uint64_t cas = 0;
};

/// Counters of the store (monotonic except curr_items, bytes and far_bytes).
struct StoreStats {
  std::uint64_t curr_items = 0;
  std::uint64_t total_items = 0;    ///< items stored since start
  std::uint64_t bytes = 0;          ///< key + value bytes of current items
  std::uint64_t far_bytes = 0;      ///< far bytes they take (allocation sizes)
  std::uint64_t far_capacity = 0;
  std::uint64_t evictions = 0;      ///< live items evicted to make room
  std::uint64_t evicted_unfetched = 0;
  std::uint64_t expired = 0;        ///< items found expired and freed
  std::uint64_t index_bytes = 0;    ///< local bytes of the index
  std::uint64_t prefetch_batches = 0;  ///< prefetch() calls that found items
  std::uint64_t prefetch_items = 0;    ///< items they asked the cache to fetch
  std::uint64_t far_errors = 0;        ///< operations failed by far memory
};

class Store {
 public:
  Store(Runtime& rt, StoreOptions options);
  ~Store();  // frees every item's far memory
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  /// Appends the value of `key` to *value and returns its flags and cas; nullopt on a miss.
  /// With `touch`, sets the item's expiry (memcached's exptime) as gat does.
  Result<std::optional<ItemInfo>> get(std::string_view key, std::string* value,
                                      std::optional<std::int64_t> touch = std::nullopt);
  /// set/add/replace/append/prepend/cas. `cas` is checked by kCas (and by any mode when
  /// nonzero, as the binary protocol does); *new_cas receives the stored item's cas.
  /// kResourceExhausted: nothing could be evicted to make room.
  Result<StoreOutcome> store(StoreMode mode, std::string_view key, std::uint32_t flags,
                             std::int64_t exptime, std::string_view value, std::uint64_t cas,
                             std::uint64_t* new_cas);
  /// Deletes `key` (only if its cas is `cas`, when nonzero): kStored = deleted.
  Result<StoreOutcome> remove(std::string_view key, std::uint64_t cas = 0);
  /// incr/decr by `delta` (decr stops at 0, incr wraps at 2^64). With `initial`, a missing
  /// key is created holding *initial with expiry `exptime` (the binary protocol's form).
  Result<ArithOutcome> arith(std::string_view key, bool incr, std::uint64_t delta,
                             std::optional<std::uint64_t> initial, std::int64_t exptime,
                             std::uint64_t cas, std::uint64_t* result, std::uint64_t* new_cas);
  /// Sets the expiry of `key`; false on a miss.
  Result<bool> touch(std::string_view key, std::int64_t exptime);
  /// Invalidates every item now, or `delay_s` seconds from now.
  void flush_all(std::int64_t delay_s);
  /// Asks the page cache to fetch the items of `keys` in the background (one batch of
  /// misses in flight for all of them), so that the gets that follow find them local.
  void prefetch(std::span<const std::string_view> keys);

  StoreStats stats() const;
  /// Seconds since the store started, plus 2 (1 marks an item expired from the start).
  std::uint32_t now() const;

 private:
  static constexpr std::uint32_t kNil = 0xffffffffu;
  struct Item {
    std::uint64_t hash = 0;
    FarAddr addr;
    std::uint64_t cas = 0;
    std::uint64_t used = 0;  ///< access_clock_ at its last use (global LRU order)
    std::uint32_t value_len = 0;
    std::uint32_t flags = 0;
    std::uint32_t expire_at = 0;  ///< 0: never; expired once now() >= it
    std::uint32_t lru_prev = kNil, lru_next = kNil;  ///< head = most recently used
    std::uint32_t chain_next = kNil;                 ///< next item of its hash bucket
    std::uint8_t key_len = 0;
    bool fetched = false;  ///< read since stored (evicted_unfetched)
  };
  struct Shard {
    std::mutex mu;  ///< guards every field below and the far bytes of this shard's items
    std::vector<Item> items;
    std::vector<std::uint32_t> free_slots;
    std::vector<std::uint32_t> buckets;  ///< heads of hash chains (size: a power of two)
    std::uint32_t lru_head = kNil, lru_tail = kNil;
    std::uint64_t count = 0;
  };
  /// A record written to far memory, not yet linked into the index.
  struct Record {
    FarAddr addr;
    std::uint64_t charge = 0;  ///< far bytes it takes
  };

  Shard& shard_of(std::uint64_t hash) { return *shards_[hash >> shard_shift_]; }
  std::uint32_t expiry(std::int64_t exptime) const;
  bool dead(const Item& it, std::uint32_t now_s) const;
  void maybe_flush();

  // Index operations; the caller holds s.mu.
  Result<std::uint32_t> find_locked(Shard& s, std::uint64_t hash, std::string_view key);
  std::uint32_t link_locked(Shard& s, const Item& item);
  Record unlink_locked(Shard& s, std::uint32_t slot);
  void lru_remove_locked(Shard& s, std::uint32_t slot);
  void lru_push_locked(Shard& s, std::uint32_t slot);
  void grow_buckets_locked(Shard& s);
  /// find_locked, freeing (into *dropped) an item found expired or flushed.
  Result<std::uint32_t> find_live_locked(Shard& s, std::uint64_t hash, std::string_view key,
                                         std::vector<Record>* dropped);

  // Far memory.
  std::uint64_t charge_of(std::uint64_t bytes) const;
  /// Reserves far bytes (evicting LRU items), allocates and writes key + the pieces.
  Result<Record> write_record(std::string_view key, std::span<const std::string_view> pieces);
  /// write_record's plain_memory path: `rec` is reserved, the bytes go to a malloc'd copy.
  Result<Record> write_plain_record(Record rec, std::uint64_t total, std::string_view key,
                                    std::span<const std::string_view> pieces);
  Status reserve(std::uint64_t charge);
  bool evict_one();
  void release(const Record& r);
  void release_all(std::vector<Record>& rs);
  Status read_far(FarAddr addr, std::uint64_t bytes, char* dst);
  Status write_far(FarAddr addr, std::uint64_t bytes, const char* src, bool whole_pages);
  Status read_value_locked(const Item& it, std::string* out);

  /// Store of a record built outside the lock; `expect_cas` (nonzero) must match the item.
  Result<StoreOutcome> commit(StoreMode mode, std::uint64_t hash, std::string_view key,
                              const Record& rec, std::uint32_t value_len, std::uint32_t flags,
                              std::uint32_t expire_at, std::uint64_t expect_cas,
                              bool keep_meta, std::uint64_t* new_cas);

  Runtime& rt_;
  const StoreOptions options_;
  const std::uint32_t page_;
  std::uint32_t shard_shift_ = 0;
  std::vector<std::unique_ptr<Shard>> shards_;
  const std::chrono::steady_clock::time_point start_;
  std::atomic<std::uint64_t> next_cas_{1};
  std::atomic<std::uint64_t> far_used_{0};
  std::atomic<std::uint64_t> access_clock_{1};
  std::atomic<std::uint32_t> flush_at_{0};  ///< a delayed flush_all's time (0: none)
  /// Items whose cas is below this were flushed (a flush_all leaves later ones alone).
  std::atomic<std::uint64_t> flush_cas_{0};
  std::atomic<std::uint64_t> total_items_{0}, evictions_{0}, evicted_unfetched_{0},
      expired_{0}, bytes_{0}, curr_items_{0}, prefetch_batches_{0}, prefetch_items_{0},
      far_errors_{0};
};

}  // namespace farmem::kv
