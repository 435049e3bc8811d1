#include "pool/far_pool.h"

#include <algorithm>
#include <mutex>
#include <optional>

#include "common/log.h"

namespace farmem::pool {

FarPool::FarPool(std::vector<std::unique_ptr<transport::Connection>> conns, PoolOptions options)
    : conns_(std::move(conns)), options_(options), closed_(conns_.size(), false) {}

Status FarPool::close_server(std::size_t i) {
  std::unique_lock lock(mu_);
  if (i >= conns_.size()) return OutOfRange("no server " + std::to_string(i));
  closed_[i] = true;
  return Status::Ok();
}

bool FarPool::server_closed(std::size_t i) const {
  std::shared_lock lock(mu_);
  return i < closed_.size() && closed_[i];
}

std::vector<std::size_t> FarPool::placement_order_locked(std::uint64_t bytes, std::string& why) {
  std::vector<std::size_t> open;
  for (std::size_t c = 0; c < conns_.size(); ++c) {
    if (!closed_[c]) open.push_back(c);
  }
  // Free room of a server, or nullopt (unreachable, or too full for this slab).
  auto free_of = [&](std::size_t c) -> std::optional<std::uint64_t> {
    auto st = transport::server_stats(*conns_[c], options_.control_timeout);
    if (!st.ok()) {
      why += (why.empty() ? "" : "; ") + conns_[c]->peer() + ": " + st.status().to_string();
      return std::nullopt;
    }
    const std::uint64_t free = st->capacity_bytes > st->used_bytes
                                   ? st->capacity_bytes - st->used_bytes : 0;
    if (free < bytes) {
      why += (why.empty() ? "" : "; ") + conns_[c]->peer() + ": full (" +
             std::to_string(free) + " bytes free)";
      return std::nullopt;
    }
    return free;
  };
  // Every open server's free room (a control call each: slab leases are rare, and the
  // registry of issue 7 will report free bytes without them).
  std::vector<std::pair<std::uint64_t, std::size_t>> room;
  std::uint64_t total = 0;
  for (std::size_t c : open) {
    if (auto f = free_of(c)) {
      room.emplace_back(*f, c);
      total += *f;
    }
  }
  std::vector<std::size_t> order;
  if (room.size() >= 3) {
    // Power of two choices, each drawn with probability proportional to free room: the
    // roomier of the two goes first. (Uniform draws would let two small servers win a third
    // of the time, whatever the big one has free.)
    auto draw = [&](std::uint64_t skip_total, std::size_t skip) {
      std::uniform_int_distribution<std::uint64_t> d(0, total - skip_total - 1);
      std::uint64_t x = d(rng_);
      for (std::size_t k = 0; k < room.size(); ++k) {
        if (k == skip) continue;
        if (x < room[k].first) return k;
        x -= room[k].first;
      }
      return room.size() - 1;
    };
    const std::size_t a = draw(0, room.size());
    const std::size_t b = draw(room[a].first, a);
    const std::size_t first = room[a].first >= room[b].first ? a : b;
    const std::size_t second = first == a ? b : a;
    order.push_back(room[first].second);
    order.push_back(room[second].second);
    room.erase(room.begin() + static_cast<std::ptrdiff_t>(std::max(a, b)));
    room.erase(room.begin() + static_cast<std::ptrdiff_t>(std::min(a, b)));
  }
  // The rest (or all, with fewer than three), roomiest first: tried only when the chosen
  // ones refuse the lease.
  std::sort(room.begin(), room.end(), [](auto& x, auto& y) { return x.first > y.first; });
  for (auto& [f, c] : room) order.push_back(c);
  return order;
}

FarPool::~FarPool() {
  std::unique_lock lock(mu_);
  for (Slab& s : slabs_) {
    if (s.live) release_slab_locked(s);
  }
}

Result<std::size_t> FarPool::lease_slab_locked(std::uint64_t bytes, bool dedicated) {
  if (slabs_.size() >= kMaxSlabs) return ResourceExhausted("slab table full");
  if (bytes > kMaxSlabBytes) {
    return InvalidArgument("allocation of " + std::to_string(bytes) + " bytes exceeds the " +
                           std::to_string(kMaxSlabBytes) + "-byte slab limit");
  }
  // Placed by free room; a full, failing or unreachable server passes the request on.
  std::string why;
  for (std::size_t c : placement_order_locked(bytes, why)) {
    auto info = transport::alloc_slab(*conns_[c], bytes, options_.control_timeout);
    if (!info.ok()) {
      why += (why.empty() ? "" : "; ") + conns_[c]->peer() + ": " + info.status().to_string();
      continue;
    }
    Slab s;
    s.conn = c;
    s.server_slab_id = info->slab_id;
    s.remote_addr = info->addr;
    s.rkey = info->rkey;
    s.bytes = info->bytes;
    s.live = true;
    s.dedicated = dedicated;
    s.alloc = std::make_unique<SlabAllocator>(info->bytes);
    slabs_.push_back(std::move(s));
    return slabs_.size() - 1;
  }
  return ResourceExhausted("no memserver could lease a slab of " + std::to_string(bytes) +
                           " bytes: " + (why.empty() ? std::string("every server is closed to new slabs") : why));
}

void FarPool::release_slab_locked(Slab& s) {
  s.live = false;
  s.alloc.reset();
  auto st = transport::free_slab(*conns_[s.conn], s.server_slab_id, options_.control_timeout);
  if (!st.ok()) {
    log().warn("returning slab {} to {} failed ({}); the memserver reclaims it when this "
               "session ends", s.server_slab_id, conns_[s.conn]->peer(), st.to_string());
  }
}

Result<FarRange> FarPool::allocate(std::uint64_t bytes) {
  if (bytes == 0) return InvalidArgument("allocation of 0 bytes");
  std::unique_lock lock(mu_);
  const bool dedicated = bytes > options_.slab_bytes;
  if (!dedicated) {
    for (std::size_t i = 0; i < slabs_.size(); ++i) {
      Slab& s = slabs_[i];
      if (!s.live || s.dedicated) continue;
      if (auto off = s.alloc->allocate(bytes)) return FarRange{make_far_addr(i, *off), bytes};
    }
  }
  FARMEM_ASSIGN_OR_RETURN(std::size_t i,
                          lease_slab_locked(dedicated ? bytes : options_.slab_bytes, dedicated));
  auto off = slabs_[i].alloc->allocate(bytes);
  if (!off) return Internal("fresh slab cannot hold " + std::to_string(bytes) + " bytes");
  return FarRange{make_far_addr(i, *off), bytes};
}

Status FarPool::free(FarRange range) {
  if (range.addr.is_null()) return InvalidArgument("free of a null far address");
  std::unique_lock lock(mu_);
  const auto i = slab_index_of(range.addr);
  if (i >= slabs_.size() || !slabs_[i].live) {
    return InvalidArgument("free of a far address in no live slab (double free?)");
  }
  Slab& s = slabs_[i];
  const auto off = offset_of(range.addr);
  const auto len = s.alloc->block_bytes(off);
  if (len == 0) return InvalidArgument("free of a far address that is not an allocation");
  if (range.bytes > len) {
    return InvalidArgument("free of " + std::to_string(range.bytes) +
                           " bytes, but the allocation there holds " + std::to_string(len));
  }
  s.alloc->free(off);
  if (s.alloc->empty()) release_slab_locked(s);  // give the memory back to its server
  return Status::Ok();
}

Result<RemoteTarget> FarPool::resolve(FarAddr addr, std::uint64_t len) const {
  if (addr.is_null()) return InvalidArgument("access through a null far address");
  std::shared_lock lock(mu_);
  const auto i = slab_index_of(addr);
  if (i >= slabs_.size() || !slabs_[i].live) {
    return OutOfRange("far address names no live slab (freed?)");
  }
  const Slab& s = slabs_[i];
  const auto off = offset_of(addr);
  if (off >= s.bytes || len > s.bytes - off) {
    return OutOfRange("access of " + std::to_string(len) + " bytes at slab offset " +
                      std::to_string(off) + " runs past the slab's " + std::to_string(s.bytes) +
                      " bytes");
  }
  return RemoteTarget{s.conn, s.remote_addr + off, s.rkey};
}

std::uint64_t FarPool::slab_bytes(std::uint64_t index) const {
  std::shared_lock lock(mu_);
  return index < slabs_.size() && slabs_[index].live ? slabs_[index].bytes : 0;
}

std::uint64_t FarPool::slabs() const {
  std::shared_lock lock(mu_);
  std::uint64_t n = 0;
  for (const Slab& s : slabs_) n += s.live ? 1 : 0;
  return n;
}

std::uint64_t FarPool::leased_bytes() const {
  std::shared_lock lock(mu_);
  std::uint64_t n = 0;
  for (const Slab& s : slabs_) n += s.live ? s.bytes : 0;
  return n;
}

std::uint64_t FarPool::allocated_bytes() const {
  std::shared_lock lock(mu_);
  std::uint64_t n = 0;
  for (const Slab& s : slabs_) n += s.live ? s.alloc->used_bytes() : 0;
  return n;
}

}  // namespace farmem::pool
