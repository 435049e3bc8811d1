#include "pool/far_pool.h"

#include <algorithm>

#include "common/dcheck.h"
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
    down_.push_back(false);
  }
  count_.store(n, std::memory_order_release);
  if (options_.replicas > 1) replicator_ = std::thread([this] { replication_loop(); });
}

FarPool::~FarPool() {
  {
    MutexLock lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (migrator_.joinable()) migrator_.join();
  if (replicator_.joinable()) replicator_.join();
  std::vector<Piece> all;
  {
    WriterLock lock(mu_);
    for (Slab& s : slabs_) {
      if (!s.live) continue;
      s.live = false;
      // No piece is syncing: the replicator, stopped above, ends every rebuild it starts.
      for (const Piece& p : held_pieces(s)) all.push_back(p);
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
  down_.push_back(false);
  count_.store(n + 1, std::memory_order_release);
  return n;
}

Status FarPool::open_server(std::size_t i) {
  WriterLock lock(mu_);
  if (i >= closed_.size()) return OutOfRange("no server " + std::to_string(i));
  if (swap_ && i == overflow_) {
    return InvalidArgument("the swap file takes only slabs no memserver can lease");
  }
  if (down_[i]) {
    return Unavailable(names_[i] + " was judged dead; add it again for a new connection");
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
  const std::uint64_t r = options_.replicas;
  std::string why;
  auto room = room_for(u, why);  // a server with room for less than a stripe cannot help
  std::sort(room.begin(), room.end(), [](auto& x, auto& y) { return x.free > y.free; });
  if (r > 1) {  // neighbours on different hosts: the copies of a position go to neighbours
    std::vector<std::size_t> order;
    for (auto& x : room) order.push_back(x.conn);
    order = interleave_hosts(order);
    std::vector<Room> sorted;
    for (std::size_t c : order) {
      sorted.push_back(*std::find_if(room.begin(), room.end(), [&](auto& x) { return x.conn == c; }));
    }
    room = std::move(sorted);
  }
  // Widest first: k stripe positions on m = max(k, r) servers, copy c of position j on
  // server (j + c) % m, so the r copies of a position are on r distinct servers; each server
  // then holds min(k, r) pieces of an equal share. A server that refuses leaves the
  // candidates, so this ends after at most servers + stripes rounds.
  std::uint64_t k = std::min<std::uint64_t>(room.size(), stripes);
  while (k >= 1 && room.size() >= r) {
    const std::uint64_t share = (stripes + k - 1) / k * u;
    const std::uint64_t m = std::max(k, r);
    std::vector<Room> chosen;
    for (auto& x : room) {
      if (x.free >= std::min(k, r) * share && chosen.size() < m) chosen.push_back(x);
    }
    if (chosen.size() < m) {
      --k;
      continue;
    }
    Slab s;
    s.bytes = stripes * u;
    s.stripe = k > 1 ? u : 0;
    s.copies.assign(r, std::vector<Piece>(k));
    std::vector<Piece> leased;
    std::size_t refused = SIZE_MAX;
    for (std::uint64_t c = 0; c < r && refused == SIZE_MAX; ++c) {
      for (std::uint64_t j = 0; j < k; ++j) {
        const std::size_t conn = chosen[(j + c) % m].conn;
        auto info = transport::alloc_slab(*conns_[conn], share, options_.control_timeout);
        if (!info.ok()) {
          append_why(why, conns_[conn]->peer(), info.status().to_string());
          refused = conn;
          break;
        }
        s.copies[c][j] = {conn, info->slab_id, info->addr, info->rkey, info->bytes};
        leased.push_back(s.copies[c][j]);
      }
    }
    if (refused == SIZE_MAX) return s;
    release(leased);
    std::erase_if(room, [&](auto& x) { return x.conn == refused; });
    k = std::min<std::uint64_t>(k, room.size());
  }
  if (r > 1 && room.size() < r) {
    append_why(why, "replicas", std::to_string(r) + " copies need " + std::to_string(r) +
                                    " servers with room, " + std::to_string(room.size()) +
                                    " have");
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
    if (options_.replicas > 1 && !loss_of(i, s).ok()) continue;  // no new data in a lost slab
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
      if (options_.replicas > 1) return striped.status();  // the file holds one copy
      FARMEM_ASSIGN_OR_RETURN(Piece p, lease_overflow(bytes, striped.status()));
      s.bytes = p.bytes;
      s.copies = {{p}};
    }
    s.dedicated = true;
  } else {
    {
      WriterLock lock(mu_);  // another thread may have leased one meanwhile
      if (auto r = allocate_in_shared_locked(bytes)) return *r;
    }
    if (options_.replicas > 1) {
      FARMEM_ASSIGN_OR_RETURN(s.copies, lease_copies(options_.slab_bytes));
      s.bytes = s.copies[0][0].bytes;  // as granted (a server may round up), the same in each
      for (const auto& copy : s.copies) s.bytes = std::min(s.bytes, copy[0].bytes);
    } else {
      std::string why;
      auto p = lease_piece(options_.slab_bytes, why);
      if (!p.ok()) p = lease_overflow(options_.slab_bytes, p.status());
      if (!p.ok()) return p.status();
      s.bytes = p->bytes;
      s.copies = {{*p}};
    }
  }
  const std::vector<Piece> pieces = held_pieces(s);
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
      // Not a syncing piece: the replicator gives that back itself when it sees the slab gone.
      for (const Piece& p : held_pieces(s)) {
        if (p.state == PieceState::kLive) give_back.push_back(p);
      }
      s.copies.clear();
    }
  }
  release(give_back);
  return Status::Ok();
}

FarPool::Segment FarPool::locate(const Slab& s, std::uint64_t off, std::uint64_t len) {
  const std::size_t k = s.copies[0].size();
  if (k == 1) return {0, off, len};
  const std::uint64_t stripe = off / s.stripe, in = off % s.stripe;
  return {static_cast<std::size_t>(stripe % k), stripe / k * s.stripe + in,
          std::min(len, s.stripe - in)};
}

Result<const FarPool::Slab*> FarPool::slab_for(FarAddr addr, std::uint64_t len) const {
  if (addr.is_null()) return InvalidArgument("access through a null far address");
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
  FARMEM_DCHECK(!s.copies.empty() && !s.copies[0].empty());
  return &s;
}

Result<RemoteTarget> FarPool::resolve(FarAddr addr, std::uint64_t len) const {
  ReaderLock lock(mu_);
  FARMEM_ASSIGN_OR_RETURN(const Slab* s, slab_for(addr, len));
  const Segment g = locate(*s, offset_of(addr), len);
  if (s->copies.size() == 1) {  // unreplicated: the one piece, whatever its state
    const Piece& p = s->copies[0][g.pos];
    return RemoteTarget{p.conn, p.remote_addr + g.at, p.rkey, g.bytes};
  }
  // A stable choice among the live pieces of this position, different from slab to slab:
  // every copy carries reads.
  const std::size_t n = live_at(*s, g.pos);
  if (n == 0) return loss_of(slab_index_of(addr), *s);
  std::size_t pick = (slab_index_of(addr) + g.pos) % n;
  for (const auto& copy : s->copies) {
    const Piece& p = copy[g.pos];
    if (p.state != PieceState::kLive) continue;
    if (pick-- == 0) return RemoteTarget{p.conn, p.remote_addr + g.at, p.rkey, g.bytes};
  }
  return Internal("unreachable: a live piece vanished under the lock");
}

Result<WriteTargets> FarPool::resolve_write(FarAddr addr, std::uint64_t len) const {
  ReaderLock lock(mu_);
  FARMEM_ASSIGN_OR_RETURN(const Slab* s, slab_for(addr, len));
  const Segment g = locate(*s, offset_of(addr), len);
  WriteTargets out;
  if (s->copies.size() > 1 && live_at(*s, g.pos) == 0) return loss_of(slab_index_of(addr), *s);
  for (const auto& copy : s->copies) {
    const Piece& p = copy[g.pos];
    if (s->copies.size() > 1 && p.state == PieceState::kLost) continue;
    FARMEM_DCHECK_LT(out.count, kMaxReplicas);
    out.at[out.count++] = RemoteTarget{p.conn, p.remote_addr + g.at, p.rkey, g.bytes};
  }
  return out;
}

Status FarPool::check_live(FarAddr addr, std::uint64_t len) const {
  ReaderLock lock(mu_);
  FARMEM_ASSIGN_OR_RETURN(const Slab* s, slab_for(addr, len));
  for (std::uint64_t at = 0; at < len;) {  // each stripe the range touches
    const Segment g = locate(*s, offset_of(addr) + at, len - at);
    if (live_at(*s, g.pos) == 0) return loss_of(slab_index_of(addr), *s);
    at += g.bytes;
  }
  return Status::Ok();
}

std::size_t FarPool::live_at(const Slab& s, std::size_t pos) {
  std::size_t n = 0;
  for (const auto& copy : s.copies) n += copy[pos].state == PieceState::kLive ? 1 : 0;
  return n;
}

Status FarPool::loss_of(std::size_t i, const Slab& s) const {
  bool lost = false;
  for (std::size_t pos = 0; pos < s.copies[0].size() && !lost; ++pos) lost = live_at(s, pos) == 0;
  if (!lost) return Status::Ok();
  std::string servers;
  for (std::size_t c : s.lost_on) servers += (servers.empty() ? "" : ", ") + names_[c];
  return DataLoss("slab " + std::to_string(i) + " (" + std::to_string(s.bytes) +
                  " bytes) has no live copy of some of its bytes left: its copies were lost "
                  "with " + (servers.empty() ? std::string("(no server named)") : servers));
}

std::vector<FarPool::Piece> FarPool::held_pieces(const Slab& s) {
  std::vector<Piece> out;
  for (const auto& copy : s.copies) {
    for (const Piece& p : copy) {
      if (p.state != PieceState::kLost) out.push_back(p);
    }
  }
  return out;
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
    for (const Piece& p : held_pieces(s)) n += s.live ? p.bytes : 0;
  }
  return n;
}

std::vector<std::uint64_t> FarPool::leased_bytes_per_server() const {
  ReaderLock lock(mu_);
  std::vector<std::uint64_t> out(names_.size(), 0);
  for (const Slab& s : slabs_) {
    for (const Piece& p : held_pieces(s)) out[p.conn] += s.live ? p.bytes : 0;
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
