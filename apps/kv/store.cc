// Store: the index (shards, hash chains, LRU lists) and the operations on items. Far memory
// access and eviction are in store_far.cc.
#include "kv/store.h"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <functional>

namespace farmem::kv {

namespace {
// memcached's rule: an exptime up to 30 days is relative, larger is a Unix time.
constexpr std::int64_t kRelativeLimit = 60 * 60 * 24 * 30;
// Buckets per shard at start; chains stay about one item long (grown at load 1).
constexpr std::uint32_t kInitialBuckets = 1024;
// The longest decimal value incr/decr accepts: 2^64 - 1 has 20 digits.
constexpr std::size_t kMaxNumberDigits = 20;

std::uint64_t hash_key(std::string_view key) { return std::hash<std::string_view>{}(key); }
}  // namespace

Store::Store(Runtime& rt, StoreOptions options)
    : rt_(rt), options_(options), page_(rt.page_bytes()), start_(std::chrono::steady_clock::now()) {
  std::uint32_t n = 1, bits = 0;
  while (n < std::max<std::uint32_t>(options_.shards, 1)) n *= 2, ++bits;
  shard_shift_ = 64 - bits;
  if (bits == 0) shard_shift_ = 63;  // a shift by 64 is undefined: two shards of one
  for (std::uint32_t i = 0; i < (bits == 0 ? 2u : n); ++i) {
    auto s = std::make_unique<Shard>();
    s->buckets.assign(kInitialBuckets, kNil);
    shards_.push_back(std::move(s));
  }
}

Store::~Store() {
  for (auto& s : shards_) {
    for (const Item& it : s->items) {
      if (!it.addr.is_null()) release(Record{it.addr, charge_of(it.key_len + it.value_len)});
    }
  }
}

std::uint32_t Store::now() const {
  return static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                        std::chrono::steady_clock::now() - start_)
                                        .count()) +
         2;
}

std::uint32_t Store::expiry(std::int64_t exptime) const {
  if (exptime == 0) return 0;
  if (exptime < 0) return 1;  // expired at once
  std::int64_t rel = exptime;
  if (exptime > kRelativeLimit) {
    rel = exptime - static_cast<std::int64_t>(std::time(nullptr));
    if (rel <= 0) return 1;
  }
  return static_cast<std::uint32_t>(std::min<std::int64_t>(now() + rel, 0xfffffff0));
}

bool Store::dead(const Item& it, std::uint32_t now_s) const {
  return (it.expire_at != 0 && now_s >= it.expire_at) ||
         it.cas < flush_cas_.load(std::memory_order_acquire);
}

void Store::maybe_flush() {
  std::uint32_t at = flush_at_.load(std::memory_order_relaxed);
  if (at == 0 || now() < at) return;
  if (flush_at_.compare_exchange_strong(at, 0)) flush_all(0);
}

void Store::flush_all(std::int64_t delay_s) {
  if (delay_s > 0) {
    flush_at_.store(expiry(delay_s), std::memory_order_relaxed);
    return;
  }
  flush_cas_.store(next_cas_.load(), std::memory_order_release);
  for (auto& sp : shards_) {
    std::vector<Record> dropped;
    {
      std::lock_guard lock(sp->mu);
      for (std::uint32_t i = 0; i < sp->items.size(); ++i) {
        const Item& it = sp->items[i];
        if (!it.addr.is_null() && it.cas < flush_cas_.load()) {
          dropped.push_back(unlink_locked(*sp, i));
        }
      }
    }
    release_all(dropped);
  }
}

// ---- the index ----

Result<std::uint32_t> Store::find_locked(Shard& s, std::uint64_t hash, std::string_view key) {
  char far_key[kMaxKeyBytes];
  for (std::uint32_t i = s.buckets[hash & (s.buckets.size() - 1)]; i != kNil;
       i = s.items[i].chain_next) {
    const Item& it = s.items[i];
    if (it.hash != hash || it.key_len != key.size()) continue;
    // Confirm against the far copy: 64-bit hashes of different keys may collide.
    FARMEM_RETURN_IF_ERROR(read_far(it.addr, it.key_len, far_key));
    if (key == std::string_view(far_key, it.key_len)) return i;
  }
  return kNil;
}

Result<std::uint32_t> Store::find_live_locked(Shard& s, std::uint64_t hash, std::string_view key,
                                              std::vector<Record>* dropped) {
  FARMEM_ASSIGN_OR_RETURN(std::uint32_t i, find_locked(s, hash, key));
  if (i != kNil && dead(s.items[i], now())) {
    dropped->push_back(unlink_locked(s, i));
    expired_.fetch_add(1, std::memory_order_relaxed);
    return kNil;
  }
  return i;
}

void Store::grow_buckets_locked(Shard& s) {
  std::vector<std::uint32_t> bigger(s.buckets.size() * 2, kNil);
  for (std::uint32_t b = 0; b < s.buckets.size(); ++b) {
    for (std::uint32_t i = s.buckets[b]; i != kNil;) {
      const std::uint32_t next = s.items[i].chain_next;
      std::uint32_t& head = bigger[s.items[i].hash & (bigger.size() - 1)];
      s.items[i].chain_next = head;
      head = i;
      i = next;
    }
  }
  s.buckets = std::move(bigger);
}

std::uint32_t Store::link_locked(Shard& s, const Item& item) {
  if (s.count + 1 > s.buckets.size()) grow_buckets_locked(s);
  std::uint32_t slot;
  if (!s.free_slots.empty()) {
    slot = s.free_slots.back();
    s.free_slots.pop_back();
    s.items[slot] = item;
  } else {
    slot = static_cast<std::uint32_t>(s.items.size());
    s.items.push_back(item);
  }
  std::uint32_t& head = s.buckets[item.hash & (s.buckets.size() - 1)];
  s.items[slot].chain_next = head;
  head = slot;
  lru_push_locked(s, slot);
  ++s.count;
  curr_items_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(item.key_len + item.value_len, std::memory_order_relaxed);
  return slot;
}

Store::Record Store::unlink_locked(Shard& s, std::uint32_t slot) {
  Item& it = s.items[slot];
  for (std::uint32_t* p = &s.buckets[it.hash & (s.buckets.size() - 1)]; *p != kNil;
       p = &s.items[*p].chain_next) {
    if (*p == slot) {
      *p = it.chain_next;
      break;
    }
  }
  lru_remove_locked(s, slot);
  const Record r{it.addr, charge_of(it.key_len + it.value_len)};
  --s.count;
  curr_items_.fetch_sub(1, std::memory_order_relaxed);
  bytes_.fetch_sub(it.key_len + it.value_len, std::memory_order_relaxed);
  it = Item{};
  s.free_slots.push_back(slot);
  return r;
}

void Store::lru_remove_locked(Shard& s, std::uint32_t slot) {
  Item& it = s.items[slot];
  if (it.lru_prev != kNil) s.items[it.lru_prev].lru_next = it.lru_next;
  else s.lru_head = it.lru_next;
  if (it.lru_next != kNil) s.items[it.lru_next].lru_prev = it.lru_prev;
  else s.lru_tail = it.lru_prev;
  it.lru_prev = it.lru_next = kNil;
}

void Store::lru_push_locked(Shard& s, std::uint32_t slot) {
  Item& it = s.items[slot];
  it.used = access_clock_.fetch_add(1, std::memory_order_relaxed);
  it.lru_prev = kNil;
  it.lru_next = s.lru_head;
  if (s.lru_head != kNil) s.items[s.lru_head].lru_prev = slot;
  s.lru_head = slot;
  if (s.lru_tail == kNil) s.lru_tail = slot;
}

// ---- operations ----

Result<std::optional<ItemInfo>> Store::get(std::string_view key, std::string* value,
                                           std::optional<std::int64_t> touch) {
  maybe_flush();
  const std::uint64_t h = hash_key(key);
  Shard& s = shard_of(h);
  std::vector<Record> dropped;
  std::optional<ItemInfo> info;
  Status st;
  {
    std::lock_guard lock(s.mu);
    auto found = find_live_locked(s, h, key, &dropped);
    if (!found.ok()) {
      st = found.status();
    } else if (*found != kNil) {
      Item& it = s.items[*found];
      st = read_value_locked(it, value);
      if (st.ok()) {
        if (touch) it.expire_at = expiry(*touch);
        it.fetched = true;
        lru_remove_locked(s, *found);
        lru_push_locked(s, *found);
        info = ItemInfo{it.flags, it.cas};
      }
    }
  }
  release_all(dropped);
  if (!st.ok()) {
    far_errors_.fetch_add(1, std::memory_order_relaxed);
    return st;
  }
  return info;
}

Result<StoreOutcome> Store::commit(StoreMode mode, std::uint64_t hash, std::string_view key,
                                   const Record& rec, std::uint32_t value_len,
                                   std::uint32_t flags, std::uint32_t expire_at,
                                   std::uint64_t expect_cas, bool keep_meta,
                                   std::uint64_t* new_cas) {
  Shard& s = shard_of(hash);
  std::vector<Record> dropped;
  StoreOutcome out = StoreOutcome::kStored;
  Status st;
  {
    std::lock_guard lock(s.mu);
    auto found = find_live_locked(s, hash, key, &dropped);
    if (!found.ok()) {
      st = found.status();
    } else {
      const std::uint32_t old = *found;
      const bool exists = old != kNil;
      if (mode == StoreMode::kAdd && exists) out = StoreOutcome::kNotStored;
      else if ((mode == StoreMode::kReplace || mode == StoreMode::kAppend ||
                mode == StoreMode::kPrepend) && !exists) out = StoreOutcome::kNotStored;
      else if (mode == StoreMode::kCas && !exists) out = StoreOutcome::kNotFound;
      else if (expect_cas != 0 && !exists) out = StoreOutcome::kNotFound;
      else if ((expect_cas != 0 || mode == StoreMode::kCas) && s.items[old].cas != expect_cas) {
        out = StoreOutcome::kExists;
      }
      if (out == StoreOutcome::kStored) {
        Item it;
        it.hash = hash;
        it.addr = rec.addr;
        it.key_len = static_cast<std::uint8_t>(key.size());
        it.value_len = value_len;
        it.flags = flags;
        it.expire_at = expire_at;
        if (exists) {
          if (keep_meta) {  // append/prepend/incr keep the item's flags and expiry
            it.flags = s.items[old].flags;
            it.expire_at = s.items[old].expire_at;
          }
          dropped.push_back(unlink_locked(s, old));
        }
        it.cas = next_cas_.fetch_add(1);
        *new_cas = it.cas;
        link_locked(s, it);
        total_items_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  release_all(dropped);
  if (!st.ok()) {
    far_errors_.fetch_add(1, std::memory_order_relaxed);
    return st;
  }
  return out;
}

Result<StoreOutcome> Store::store(StoreMode mode, std::string_view key, std::uint32_t flags,
                                  std::int64_t exptime, std::string_view value,
                                  std::uint64_t cas, std::uint64_t* new_cas) {
  maybe_flush();
  if (key.empty() || key.size() > kMaxKeyBytes) return InvalidArgument("bad key length");
  if (key.size() + value.size() > options_.item_max) return OutOfRange("object too large");
  const std::uint64_t h = hash_key(key);
  const bool concat = mode == StoreMode::kAppend || mode == StoreMode::kPrepend;
  // Bounded: a concurrent change to the item between the read and the commit retries.
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string old;
    std::uint64_t seen_cas = cas;
    if (concat) {
      auto got = get(key, &old);
      if (!got.ok()) return got.status();
      if (!got->has_value()) return StoreOutcome::kNotStored;
      if (cas != 0 && (*got)->cas != cas) return StoreOutcome::kExists;
      seen_cas = (*got)->cas;
      if (key.size() + old.size() + value.size() > options_.item_max) {
        return OutOfRange("object too large");
      }
    }
    std::string_view pieces[2] = {value, {}};
    if (mode == StoreMode::kAppend) pieces[0] = old, pieces[1] = value;
    if (mode == StoreMode::kPrepend) pieces[0] = value, pieces[1] = old;
    FARMEM_ASSIGN_OR_RETURN(Record rec, write_record(key, pieces));
    const auto len = static_cast<std::uint32_t>(pieces[0].size() + pieces[1].size());
    auto out = commit(mode, h, key, rec, len, flags, expiry(exptime), seen_cas, concat, new_cas);
    if (!out.ok() || *out != StoreOutcome::kStored) release(rec);
    if (!out.ok()) return out;
    // An append that lost a race with another change reads the new value and tries again.
    if (concat && cas == 0 && *out == StoreOutcome::kExists) continue;
    if (concat && *out == StoreOutcome::kNotFound) return StoreOutcome::kNotStored;
    return out;
  }
  return StoreOutcome::kExists;
}

Result<StoreOutcome> Store::remove(std::string_view key, std::uint64_t cas) {
  maybe_flush();
  const std::uint64_t h = hash_key(key);
  Shard& s = shard_of(h);
  std::vector<Record> dropped;
  StoreOutcome out = StoreOutcome::kNotFound;
  Status st;
  {
    std::lock_guard lock(s.mu);
    auto found = find_live_locked(s, h, key, &dropped);
    if (!found.ok()) st = found.status();
    else if (*found != kNil && cas != 0 && s.items[*found].cas != cas) out = StoreOutcome::kExists;
    else if (*found != kNil) {
      dropped.push_back(unlink_locked(s, *found));
      out = StoreOutcome::kStored;
    }
  }
  release_all(dropped);
  if (!st.ok()) return st;
  return out;
}

Result<bool> Store::touch(std::string_view key, std::int64_t exptime) {
  maybe_flush();
  const std::uint64_t h = hash_key(key);
  Shard& s = shard_of(h);
  std::vector<Record> dropped;
  bool hit = false;
  Status st;
  {
    std::lock_guard lock(s.mu);
    auto found = find_live_locked(s, h, key, &dropped);
    if (!found.ok()) st = found.status();
    else if (*found != kNil) {
      s.items[*found].expire_at = expiry(exptime);
      lru_remove_locked(s, *found);
      lru_push_locked(s, *found);
      hit = true;
    }
  }
  release_all(dropped);
  if (!st.ok()) return st;
  return hit;
}

Result<ArithOutcome> Store::arith(std::string_view key, bool incr, std::uint64_t delta,
                                  std::optional<std::uint64_t> initial, std::int64_t exptime,
                                  std::uint64_t cas, std::uint64_t* result,
                                  std::uint64_t* new_cas) {
  if (key.empty() || key.size() > kMaxKeyBytes) return InvalidArgument("bad key length");
  const std::uint64_t h = hash_key(key);
  for (int attempt = 0; attempt < 16; ++attempt) {  // bounded, as in store()
    std::string old;
    FARMEM_ASSIGN_OR_RETURN(auto got, get(key, &old));
    StoreMode mode = StoreMode::kCas;
    std::uint64_t v = 0;
    if (!got) {
      if (!initial) return ArithOutcome::kNotFound;
      mode = StoreMode::kAdd;
      v = *initial;
    } else {
      if (cas != 0 && got->cas != cas) return ArithOutcome::kExists;
      // memcached's values may carry trailing spaces (it pads in place); digits first.
      const std::size_t digits = old.find_first_not_of("0123456789");
      const std::string_view num(old.data(), digits == std::string::npos ? old.size() : digits);
      if (num.empty() || num.size() > kMaxNumberDigits ||
          old.find_first_not_of(' ', num.size()) != std::string::npos) {
        return ArithOutcome::kNonNumeric;
      }
      if (std::from_chars(num.data(), num.data() + num.size(), v).ec != std::errc()) {
        return ArithOutcome::kNonNumeric;  // more than 2^64 - 1
      }
      v = incr ? v + delta : (delta > v ? 0 : v - delta);
    }
    char buf[kMaxNumberDigits + 1];
    const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
    const std::string_view text(buf, static_cast<std::size_t>(end - buf));
    const std::string_view pieces[1] = {text};
    FARMEM_ASSIGN_OR_RETURN(Record rec, write_record(key, pieces));
    auto out = commit(mode, h, key, rec, static_cast<std::uint32_t>(text.size()), 0,
                      expiry(exptime), got ? got->cas : 0, /*keep_meta=*/got.has_value(),
                      new_cas);
    if (!out.ok() || *out != StoreOutcome::kStored) release(rec);
    if (!out.ok()) return out.status();
    if (*out == StoreOutcome::kStored) {
      *result = v;
      return ArithOutcome::kDone;
    }
    // Changed (or created, or deleted) between the read and the commit: read again.
  }
  return ArithOutcome::kExists;
}

void Store::prefetch(std::span<const std::string_view> keys) {
  if (options_.plain_memory) return;  // nothing is far
  std::uint64_t asked = 0;
  thread_local std::vector<FarAddr> addrs;
  addrs.clear();
  const std::uint64_t page = rt_.page_bytes();
  // Only a hint: a failure shows up (and is reported) when the get reads the item.
  const auto post = [&] {
    for (std::size_t i = 0; i < addrs.size(); i += Runtime::kMaxPrefetchBatch) {
      const std::size_t n = std::min(Runtime::kMaxPrefetchBatch, addrs.size() - i);
      (void)rt_.prefetch(std::span<const FarAddr>(addrs.data() + i, n));
    }
    addrs.clear();
  };
  for (std::string_view key : keys) {
    if (key.empty() || key.size() > kMaxKeyBytes) continue;
    const std::uint64_t h = hash_key(key);
    Shard& s = shard_of(h);
    std::lock_guard lock(s.mu);
    for (std::uint32_t i = s.buckets[h & (s.buckets.size() - 1)]; i != kNil;
         i = s.items[i].chain_next) {
      const Item& it = s.items[i];
      if (it.hash != h || it.key_len != key.size()) continue;
      // Every page of the record; all of the round's items go in one batch.
      const std::uint64_t len = std::max<std::uint64_t>(1, it.key_len + it.value_len);
      for (std::uint64_t p = it.addr.raw / page; p <= (it.addr.raw + len - 1) / page; ++p) {
        addrs.push_back(FarAddr{p * page});
      }
      ++asked;
    }
  }
  // Outside the shard locks: an item freed meanwhile costs at most a page fetched for
  // nothing (or a failed prefetch, which the cache gives up quietly); its get finds it gone.
  post();
  if (asked > 0) {
    prefetch_batches_.fetch_add(1, std::memory_order_relaxed);
    prefetch_items_.fetch_add(asked, std::memory_order_relaxed);
  }
}

StoreStats Store::stats() const {
  StoreStats st;
  st.curr_items = curr_items_.load(std::memory_order_relaxed);
  st.total_items = total_items_.load(std::memory_order_relaxed);
  st.bytes = bytes_.load(std::memory_order_relaxed);
  st.far_bytes = far_used_.load(std::memory_order_relaxed);
  st.far_capacity = options_.far_capacity;
  st.evictions = evictions_.load(std::memory_order_relaxed);
  st.evicted_unfetched = evicted_unfetched_.load(std::memory_order_relaxed);
  st.expired = expired_.load(std::memory_order_relaxed);
  st.prefetch_batches = prefetch_batches_.load(std::memory_order_relaxed);
  st.prefetch_items = prefetch_items_.load(std::memory_order_relaxed);
  st.far_errors = far_errors_.load(std::memory_order_relaxed);
  for (const auto& s : shards_) {
    std::lock_guard lock(s->mu);
    st.index_bytes += s->items.capacity() * sizeof(Item) +
                      s->buckets.capacity() * sizeof(std::uint32_t) +
                      s->free_slots.capacity() * sizeof(std::uint32_t);
  }
  return st;
}

}  // namespace farmem::kv
