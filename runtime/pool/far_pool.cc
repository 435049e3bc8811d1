#include "pool/far_pool.h"

#include <algorithm>

#include "common/log.h"

namespace farmem::pool {

namespace {
void append_why(std::string& why, const std::string& server, const std::string& reason) {
  why += (why.empty() ? "" : "; ") + server + ": " + reason;
}
}  // namespace

FarPool::FarPool(std::vector<std::unique_ptr<transport::Connection>> conns,
                 std::vector<std::string> names, PoolOptions options)
    : options_(options),
      conns_(std::make_unique<std::unique_ptr<transport::Connection>[]>(kMaxServers)) {
  const std::size_t n = std::min(conns.size(), kMaxServers);  // Runtime::open checks
  for (std::size_t i = 0; i < n; ++i) {
    conns_[i] = std::move(conns[i]);
    names_.push_back(i < names.size() ? names[i] : conns_[i]->peer());
    closed_.push_back(false);
  }
  count_.store(n, std::memory_order_release);
}

FarPool::~FarPool() {
  if (migrator_.joinable()) {
    {
      MutexLock lock(stop_mu_);
      stop_ = true;
    }
    stop_cv_.notify_all();
    migrator_.join();
  }
  std::vector<Piece> all;
  {
    WriterLock lock(mu_);
    for (Slab& s : slabs_) {
      if (!s.live) continue;
      s.live = false;
      all.insert(all.end(), s.pieces.begin(), s.pieces.end());
    }
  }
  release(all);
}

Result<std::size_t> FarPool::add_connection(std::unique_ptr<transport::Connection> conn,
                                            std::string name) {
  WriterLock lock(mu_);
  const std::size_t n = count_.load(std::memory_order_relaxed);
  if (n == kMaxServers) {
    return ResourceExhausted("a runtime uses at most " + std::to_string(kMaxServers) +
                             " memserver connections");
  }
  conns_[n] = std::move(conn);
  names_.push_back(std::move(name));
  closed_.push_back(true);  // opened once its local memory is registered
  count_.store(n + 1, std::memory_order_release);
  return n;
}

Status FarPool::open_server(std::size_t i) {
  WriterLock lock(mu_);
  if (i >= closed_.size()) return OutOfRange("no server " + std::to_string(i));
  if (swap_ && i == overflow_) {
    return InvalidArgument("the swap file takes only slabs no memserver can lease");
  }
  closed_[i] = false;
  return Status::Ok();
}

Status FarPool::close_server(std::size_t i) {
  WriterLock lock(mu_);
  if (i >= closed_.size()) return OutOfRange("no server " + std::to_string(i));
  closed_[i] = true;
  return Status::Ok();
}

bool FarPool::server_closed(std::size_t i) const {
  ReaderLock lock(mu_);
  return i < closed_.size() && closed_[i];
}

std::optional<std::size_t> FarPool::find_server(const std::string& name) const {
  ReaderLock lock(mu_);
  for (std::size_t i = names_.size(); i-- > 0;) {
    if (names_[i] == name) return i;
  }
  return std::nullopt;
}

std::string FarPool::server_name(std::size_t i) const {
  ReaderLock lock(mu_);
  return i < names_.size() ? names_[i] : std::string();
}

std::vector<std::size_t> FarPool::current_servers() const {
  ReaderLock lock(mu_);
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < names_.size(); ++i) {
    bool newest = true;
    for (std::size_t j = i + 1; j < names_.size() && newest; ++j) newest = names_[j] != names_[i];
    if (newest) out.push_back(i);
  }
  return out;
}

std::vector<FarPool::Room> FarPool::room_for(std::uint64_t bytes, std::string& why) {
  std::vector<std::size_t> open;
  {
    ReaderLock lock(mu_);
    for (std::size_t c = 0; c < closed_.size(); ++c) {
      if (!closed_[c]) open.push_back(c);
    }
  }
  // A control call each: slab leases are rare (the etcd registry also reports free bytes,
  // but a lease needs the figure of now, not of the last refresh).
  std::vector<Room> room;
  for (std::size_t c : open) {
    auto st = transport::server_stats(*conns_[c], options_.control_timeout);
    if (!st.ok()) {
      append_why(why, conns_[c]->peer(), st.status().to_string());
      continue;
    }
    const std::uint64_t free =
        st->capacity_bytes > st->used_bytes ? st->capacity_bytes - st->used_bytes : 0;
    if (free < bytes) {
      append_why(why, conns_[c]->peer(), "full (" + std::to_string(free) + " bytes free)");
      continue;
    }
    room.push_back({free, st->capacity_bytes, c});
  }
  return room;
}

std::vector<std::size_t> FarPool::placement_order(std::uint64_t bytes, std::string& why) {
  auto room = room_for(bytes, why);
  // Of two servers, the one with the larger free fraction goes first: every server then
  // lends about the same fraction of itself, so far bytes follow capacity and every server
  // carries traffic from the start (comparing free bytes instead would fill the biggest
  // server alone until its free room came down to the others').
  auto emptier = [](const Room& x, const Room& y) {
    const double fx = x.capacity ? double(x.free) / double(x.capacity) : 0;
    const double fy = y.capacity ? double(y.free) / double(y.capacity) : 0;
    return fx > fy;
  };
  std::vector<std::size_t> order;
  if (room.size() >= 3) {
    std::uint64_t total = 0;
    for (auto& r : room) total += r.free;
    // Power of two choices, each drawn with probability proportional to free bytes. Only
    // lease_mu_ holders draw (rng_ is passed in: the analysis checks a lambda as a function
    // holding nothing).
    auto draw = [&](std::mt19937_64& rng, std::uint64_t skip_total, std::size_t skip) {
      std::uniform_int_distribution<std::uint64_t> d(0, total - skip_total - 1);
      std::uint64_t x = d(rng);
      for (std::size_t k = 0; k < room.size(); ++k) {
        if (k == skip) continue;
        if (x < room[k].free) return k;
        x -= room[k].free;
      }
      return room.size() - 1;
    };
    const std::size_t a = draw(rng_, 0, room.size());
    const std::size_t b = draw(rng_, room[a].free, a);
    const std::size_t first = emptier(room[b], room[a]) ? b : a;
    const std::size_t second = first == a ? b : a;
    order.push_back(room[first].conn);
    order.push_back(room[second].conn);
    room.erase(room.begin() + static_cast<std::ptrdiff_t>(std::max(a, b)));
    room.erase(room.begin() + static_cast<std::ptrdiff_t>(std::min(a, b)));
  }
  // The rest (or all, with fewer than three), emptiest first: tried only when the chosen
  // ones refuse the lease.
  std::sort(room.begin(), room.end(), emptier);
  for (auto& r : room) order.push_back(r.conn);
  return order;
}

Result<FarPool::Piece> FarPool::lease_piece(std::uint64_t bytes, std::string& why) {
  for (std::size_t c : placement_order(bytes, why)) {
    auto info = transport::alloc_slab(*conns_[c], bytes, options_.control_timeout);
    if (!info.ok()) {
      append_why(why, conns_[c]->peer(), info.status().to_string());
      continue;
    }
    return Piece{c, info->slab_id, info->addr, info->rkey, info->bytes};
  }
  return ResourceExhausted("no memserver could lease a slab of " + std::to_string(bytes) +
                           " bytes: " +
                           (why.empty() ? std::string("every server is closed to new slabs")
                                        : why));
}

Result<FarPool::Slab> FarPool::lease_striped(std::uint64_t bytes) {
  const std::uint64_t u = options_.stripe_bytes;
  const std::uint64_t stripes = (bytes + u - 1) / u;
  std::string why;
  auto room = room_for(u, why);  // a server with room for less than a stripe cannot help
  std::sort(room.begin(), room.end(), [](auto& x, auto& y) { return x.free > y.free; });
  // Widest first: k servers with room for an equal share each; a server that refuses its
  // share leaves the candidates, so this ends after at most servers + stripes rounds.
  std::uint64_t k = std::min<std::uint64_t>(room.size(), stripes);
  while (k >= 1) {
    const std::uint64_t share = (stripes + k - 1) / k * u;
    std::vector<Room> chosen;
    for (auto& r : room) {
      if (r.free >= share && chosen.size() < k) chosen.push_back(r);
    }
    if (chosen.size() < k) {
      --k;
      continue;
    }
    Slab s;
    s.bytes = stripes * u;
    s.stripe = k > 1 ? u : 0;
    std::size_t refused = SIZE_MAX;
    for (auto& [f, cap, c] : chosen) {
      auto info = transport::alloc_slab(*conns_[c], share, options_.control_timeout);
      if (!info.ok()) {
        append_why(why, conns_[c]->peer(), info.status().to_string());
        refused = c;
        break;
      }
      s.pieces.push_back({c, info->slab_id, info->addr, info->rkey, info->bytes});
    }
    if (refused == SIZE_MAX) return s;
    release(s.pieces);
    std::erase_if(room, [&](auto& r) { return r.conn == refused; });
    k = std::min<std::uint64_t>(k, room.size());
  }
  for (auto& [f, cap, c] : room) {
    append_why(why, conns_[c]->peer(), "too full for an equal share (" + std::to_string(f) +
                                           " bytes free)");
  }
  return ResourceExhausted("no memservers could lease " + std::to_string(bytes) +
                           " bytes, whole or striped: " +
                           (why.empty() ? std::string("every server is closed to new slabs")
                                        : why));
}

Result<std::size_t> FarPool::install_locked(Slab slab) {
  if (slabs_.size() >= kMaxSlabs) return ResourceExhausted("slab table full");
  slab.live = true;
  slab.alloc = std::make_unique<SlabAllocator>(slab.bytes);
  slabs_.push_back(std::move(slab));
  return slabs_.size() - 1;
}

void FarPool::release(const std::vector<Piece>& pieces) {
  for (const Piece& p : pieces) {
    auto st = transport::free_slab(*conns_[p.conn], p.server_slab_id, options_.control_timeout);
    if (!st.ok()) {
      log().warn("returning slab {} to {} failed ({}); the memserver reclaims it when this "
                 "session ends", p.server_slab_id, conns_[p.conn]->peer(), st.to_string());
    }
  }
}

std::optional<FarRange> FarPool::allocate_in_shared_locked(std::uint64_t bytes) {
  for (std::size_t i = 0; i < slabs_.size(); ++i) {
    Slab& s = slabs_[i];
    if (!s.live || s.dedicated) continue;
    if (auto off = s.alloc->allocate(bytes)) return FarRange{make_far_addr(i, *off), bytes};
  }
  return std::nullopt;
}

Result<FarRange> FarPool::allocate(std::uint64_t bytes) {
  if (bytes == 0) return InvalidArgument("allocation of 0 bytes");
  if (bytes > kMaxSlabBytes) {
    return InvalidArgument("allocation of " + std::to_string(bytes) + " bytes exceeds the " +
                           std::to_string(kMaxSlabBytes) + "-byte slab limit");
  }
  const bool dedicated = bytes > options_.slab_bytes;
  if (!dedicated) {
    WriterLock lock(mu_);
    if (auto r = allocate_in_shared_locked(bytes)) return *r;
  }
  MutexLock lease(lease_mu_);
  Slab s;
  if (dedicated) {
    auto striped = lease_striped(bytes);
    if (striped.ok()) {
      s = std::move(striped).value();
    } else {
      FARMEM_ASSIGN_OR_RETURN(Piece p, lease_overflow(bytes, striped.status()));
      s.bytes = p.bytes;
      s.pieces.push_back(p);
    }
    s.dedicated = true;
  } else {
    {
      WriterLock lock(mu_);  // another thread may have leased one meanwhile
      if (auto r = allocate_in_shared_locked(bytes)) return *r;
    }
    std::string why;
    auto p = lease_piece(options_.slab_bytes, why);
    if (!p.ok()) p = lease_overflow(options_.slab_bytes, p.status());
    if (!p.ok()) return p.status();
    s.bytes = p->bytes;
    s.pieces.push_back(*p);
  }
  const std::vector<Piece> pieces = s.pieces;
  Status refused;
  {
    WriterLock lock(mu_);
    auto i = install_locked(std::move(s));
    if (i.ok()) {
      auto off = slabs_[*i].alloc->allocate(bytes);
      if (!off) return Internal("fresh slab cannot hold " + std::to_string(bytes) + " bytes");
      return FarRange{make_far_addr(*i, *off), bytes};
    }
    refused = i.status();
  }
  release(pieces);  // not under mu_: network calls
  return refused;
}

Status FarPool::free(FarRange range) {
  if (range.addr.is_null()) return InvalidArgument("free of a null far address");
  std::vector<Piece> give_back;
  {
    WriterLock lock(mu_);
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
    if (s.alloc->empty()) {  // give the memory back to its servers
      s.live = false;
      s.alloc.reset();
      give_back = std::move(s.pieces);
      s.pieces.clear();
    }
  }
  release(give_back);
  return Status::Ok();
}

Result<RemoteTarget> FarPool::resolve(FarAddr addr, std::uint64_t len) const {
  if (addr.is_null()) return InvalidArgument("access through a null far address");
  ReaderLock lock(mu_);
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
  if (s.pieces.size() == 1) {
    const Piece& p = s.pieces[0];
    return RemoteTarget{p.conn, p.remote_addr + off, p.rkey, len};
  }
  const std::uint64_t stripe = off / s.stripe, in = off % s.stripe;
  const Piece& p = s.pieces[stripe % s.pieces.size()];
  const std::uint64_t at = stripe / s.pieces.size() * s.stripe + in;
  return RemoteTarget{p.conn, p.remote_addr + at, p.rkey, std::min(len, s.stripe - in)};
}

std::uint64_t FarPool::slab_bytes(std::uint64_t index) const {
  ReaderLock lock(mu_);
  return index < slabs_.size() && slabs_[index].live ? slabs_[index].bytes : 0;
}

std::uint64_t FarPool::slabs() const {
  ReaderLock lock(mu_);
  std::uint64_t n = 0;
  for (const Slab& s : slabs_) n += s.live ? 1 : 0;
  return n;
}

std::uint64_t FarPool::leased_bytes() const {
  ReaderLock lock(mu_);
  std::uint64_t n = 0;
  for (const Slab& s : slabs_) {
    for (const Piece& p : s.pieces) n += s.live ? p.bytes : 0;
  }
  return n;
}

std::vector<std::uint64_t> FarPool::leased_bytes_per_server() const {
  ReaderLock lock(mu_);
  std::vector<std::uint64_t> out(names_.size(), 0);
  for (const Slab& s : slabs_) {
    for (const Piece& p : s.pieces) out[p.conn] += s.live ? p.bytes : 0;
  }
  return out;
}

std::uint64_t FarPool::allocated_bytes() const {
  ReaderLock lock(mu_);
  std::uint64_t n = 0;
  for (const Slab& s : slabs_) n += s.live ? s.alloc->used_bytes() : 0;
  return n;
}

}  // namespace farmem::pool
