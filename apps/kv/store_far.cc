// Store: far memory. Records are written through the page cache (a DerefScope a page, so a
// large item never pins more than one page), far bytes are reserved against the capacity,
// and LRU items are evicted to make room. With StoreOptions::plain_memory, records are
// malloc'd instead and an item's FarAddr holds its pointer.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kv/store.h"

namespace farmem::kv {

namespace {
// Objects start at 8-byte boundaries: records hold bytes only, the heap's smallest class is
// 16 bytes anyway.
constexpr std::size_t kRecordAlign = 8;
// Evictions one reservation may make before it gives up: a reservation racing with many
// others that refill what it frees must still end.
constexpr int kMaxEvictionsPerReserve = 1 << 16;
// Allocations retried after the runtime ran out of far memory (each after an eviction).
constexpr int kMaxAllocRetries = 64;
}  // namespace

std::uint64_t Store::charge_of(std::uint64_t bytes) const {
  if (bytes <= page_) return std::max<std::uint64_t>(16, std::bit_ceil(bytes));
  return (bytes + page_ - 1) / page_ * page_;
}

namespace {
char* plain_ptr(FarAddr a) { return reinterpret_cast<char*>(static_cast<std::uintptr_t>(a.raw)); }
}  // namespace

Status Store::read_far(FarAddr addr, std::uint64_t bytes, char* dst) {
  if (options_.plain_memory) {
    std::memcpy(dst, plain_ptr(addr), bytes);
    return Status::Ok();
  }
  for (std::uint64_t off = 0; off < bytes;) {
    const FarAddr a = addr + off;
    const std::uint64_t n = std::min<std::uint64_t>(bytes - off, page_ - a.raw % page_);
    DerefScope scope(rt_);
    const std::byte* p = scope.translate(a, false);
    if (p == nullptr) return scope.error();
    std::memcpy(dst + off, p, n);
    off += n;
  }
  return Status::Ok();
}

Status Store::read_value_locked(const Item& it, std::string* out) {
  const std::size_t at = out->size();
  out->resize(at + it.value_len);
  Status st = read_far(it.addr + it.key_len, it.value_len, out->data() + at);
  if (!st.ok()) out->resize(at);
  return st;
}

Status Store::reserve(std::uint64_t charge) {
  if (charge > options_.far_capacity) {
    return ResourceExhausted("out of memory storing object");
  }
  for (int evicted = 0; evicted < kMaxEvictionsPerReserve; ++evicted) {
    std::uint64_t used = far_used_.load();
    while (used + charge <= options_.far_capacity) {
      if (far_used_.compare_exchange_weak(used, used + charge)) return Status::Ok();
    }
    if (!evict_one()) break;
  }
  return ResourceExhausted("out of memory storing object");
}

bool Store::evict_one() {
  // The least recently used item overall is the oldest of the shards' LRU tails. The scan
  // takes one shard lock at a time; a tail that changed meanwhile is still an old item.
  std::uint64_t oldest = ~std::uint64_t{0};
  Shard* victim = nullptr;
  for (auto& sp : shards_) {
    std::lock_guard lock(sp->mu);
    if (sp->lru_tail != kNil && sp->items[sp->lru_tail].used < oldest) {
      oldest = sp->items[sp->lru_tail].used;
      victim = sp.get();
    }
  }
  if (victim == nullptr) return false;
  Record rec;
  {
    std::lock_guard lock(victim->mu);
    if (victim->lru_tail == kNil) return true;  // emptied meanwhile: room was made anyway
    const Item& it = victim->items[victim->lru_tail];
    if (dead(it, now())) {
      expired_.fetch_add(1, std::memory_order_relaxed);
    } else {
      evictions_.fetch_add(1, std::memory_order_relaxed);
      if (!it.fetched) evicted_unfetched_.fetch_add(1, std::memory_order_relaxed);
    }
    rec = unlink_locked(*victim, victim->lru_tail);
  }
  release(rec);
  return true;
}

void Store::release(const Record& r) {
  if (r.addr.is_null()) return;
  if (options_.plain_memory) {
    std::free(plain_ptr(r.addr));
    far_used_.fetch_sub(r.charge);
    return;
  }
  Status st = r.charge <= page_ ? rt_.free_object(r.addr) : rt_.free_pages(r.addr, r.charge / page_);
  if (!st.ok()) far_errors_.fetch_add(1, std::memory_order_relaxed);
  far_used_.fetch_sub(r.charge);
}

void Store::release_all(std::vector<Record>& rs) {
  for (const Record& r : rs) release(r);
  rs.clear();
}

Result<Store::Record> Store::write_record(std::string_view key,
                                          std::span<const std::string_view> pieces) {
  std::uint64_t total = key.size();
  for (std::string_view p : pieces) total += p.size();
  const std::uint64_t charge = charge_of(total);
  FARMEM_RETURN_IF_ERROR(reserve(charge));
  Record rec{FarAddr{}, charge};
  if (options_.plain_memory) return write_plain_record(rec, total, key, pieces);
  for (int attempt = 0;; ++attempt) {
    auto a = total <= page_ ? rt_.allocate_object(total, kRecordAlign)
                            : rt_.allocate_pages(charge / page_);
    if (a.ok()) {
      rec.addr = *a;
      break;
    }
    // The memservers are full before our capacity is: make room as memcached would.
    if (a.status().code() != StatusCode::kResourceExhausted || attempt >= kMaxAllocRetries ||
        !evict_one()) {
      far_used_.fetch_sub(charge);
      far_errors_.fetch_add(1, std::memory_order_relaxed);
      return a.status();
    }
  }
  // One pass over the record's pages, each filled from the key and pieces in order. A run
  // of whole pages belongs to this record alone: its pages are not fetched first.
  const bool own_pages = total > page_;
  std::size_t piece = 0, in_piece = 0;
  std::string_view cur = key;
  for (std::uint64_t off = 0; off < total;) {
    const FarAddr a = rec.addr + off;
    const std::uint64_t n = std::min<std::uint64_t>(total - off, page_ - a.raw % page_);
    DerefScope scope(rt_);
    std::byte* p = own_pages ? scope.translate_for_overwrite(a) : scope.translate(a, true);
    if (p == nullptr) {
      Status st = scope.error();
      release(rec);
      far_errors_.fetch_add(1, std::memory_order_relaxed);
      return st;
    }
    for (std::uint64_t done = 0; done < n;) {
      while (in_piece == cur.size()) {  // bounded: total counts every piece's bytes
        cur = pieces[piece++];
        in_piece = 0;
      }
      const std::size_t m = std::min<std::size_t>(n - done, cur.size() - in_piece);
      std::memcpy(p + done, cur.data() + in_piece, m);
      done += m;
      in_piece += m;
    }
    off += n;
  }
  return rec;
}

Result<Store::Record> Store::write_plain_record(Record rec, std::uint64_t total,
                                                std::string_view key,
                                                std::span<const std::string_view> pieces) {
  char* p = static_cast<char*>(std::malloc(total));
  if (p == nullptr) {
    far_used_.fetch_sub(rec.charge);
    return ResourceExhausted("out of memory storing object");
  }
  rec.addr = FarAddr{reinterpret_cast<std::uintptr_t>(p)};
  std::memcpy(p, key.data(), key.size());
  p += key.size();
  for (std::string_view piece : pieces) {
    if (piece.empty()) continue;  // an empty value's data() may be null: no memcpy from it
    std::memcpy(p, piece.data(), piece.size());
    p += piece.size();
  }
  return rec;
}

}  // namespace farmem::kv
