// The pool's replication (see far_pool.h, "Replication" and "Rebuilding"): placing copies,
// judging servers dead, and the thread that finds lost pieces (far_pool_rebuild.cc copies
// them).
#include <algorithm>
#include <map>

#include "common/dcheck.h"
#include "common/log.h"
#include "pool/far_pool.h"

namespace farmem::pool {

std::string FarPool::host_of(const std::string& name) {
  auto ep = transport::parse_endpoint(name);
  return ep.ok() && !ep->host.empty() ? ep->host : name;
}

std::vector<std::size_t> FarPool::interleave_hosts(const std::vector<std::size_t>& conns) const {
  std::vector<std::string> hosts;
  {
    ReaderLock lock(mu_);
    for (std::size_t c : conns) hosts.push_back(host_of(names_[c]));
  }
  // Round robin over the hosts, each host's servers in their given order.
  std::vector<std::string> order;  // hosts by first appearance
  std::map<std::string, std::vector<std::size_t>> by_host;
  for (std::size_t i = 0; i < conns.size(); ++i) {
    if (by_host[hosts[i]].empty()) order.push_back(hosts[i]);
    by_host[hosts[i]].push_back(conns[i]);
  }
  std::vector<std::size_t> out;
  for (std::size_t round = 0; out.size() < conns.size(); ++round) {  // one server a host a round
    for (const auto& h : order) {
      if (round < by_host[h].size()) out.push_back(by_host[h][round]);
    }
  }
  return out;
}

Result<std::vector<std::vector<FarPool::Piece>>> FarPool::lease_copies(std::uint64_t bytes) {
  std::string why;
  const std::vector<std::size_t> order = placement_order(bytes, why);
  std::vector<std::vector<Piece>> copies;
  std::vector<std::string> hosts;  // of the copies leased so far
  std::vector<bool> tried(order.size(), false);
  while (copies.size() < options_.replicas) {
    // The first untried server of placement order on a host holding no copy yet; else the
    // first untried one.
    std::size_t pick = order.size();
    for (int pass = 0; pass < 2 && pick == order.size(); ++pass) {
      for (std::size_t k = 0; k < order.size() && pick == order.size(); ++k) {
        const bool new_host =
            std::find(hosts.begin(), hosts.end(), host_of(server_name(order[k]))) == hosts.end();
        if (!tried[k] && (pass == 1 || new_host)) pick = k;
      }
    }
    if (pick == order.size()) break;
    tried[pick] = true;
    const std::size_t c = order[pick];
    auto info = transport::alloc_slab(*conns_[c], bytes, options_.control_timeout);
    if (!info.ok()) {
      why += (why.empty() ? "" : "; ") + conns_[c]->peer() + ": " + info.status().to_string();
      continue;
    }
    copies.push_back({Piece{c, info->slab_id, info->addr, info->rkey, info->bytes}});
    hosts.push_back(host_of(server_name(c)));
  }
  if (copies.size() == options_.replicas) return copies;
  std::vector<Piece> leased;
  for (auto& copy : copies) leased.push_back(copy[0]);
  release(leased);
  return ResourceExhausted("no " + std::to_string(options_.replicas) +
                           " memservers could lease a slab of " + std::to_string(bytes) +
                           " bytes each (replicas = " + std::to_string(options_.replicas) +
                           ", " + std::to_string(copies.size()) + " did): " +
                           (why.empty() ? std::string("the others are closed to new slabs")
                                        : why));
}

void FarPool::server_failed(std::size_t c, const Status& why) {
  std::size_t pieces = 0, lost_slabs = 0;
  std::string name;
  {
    WriterLock lock(mu_);
    if (c >= down_.size() || down_[c]) return;
    down_[c] = true;
    closed_[c] = true;
    name = names_[c];
    for (std::size_t i = 0; i < slabs_.size(); ++i) {
      Slab& s = slabs_[i];
      if (!s.live) continue;
      bool hit = false;
      for (auto& copy : s.copies) {
        for (Piece& p : copy) {
          if (p.conn != c || p.state == PieceState::kLost) continue;
          // A syncing piece is lost too; its rebuild sees that and gives up.
          p.state = PieceState::kLost;
          hit = true;
          ++pieces;
        }
      }
      if (hit) {
        s.lost_on.push_back(c);
        lost_slabs += loss_of(i, s).ok() ? 0 : 1;
      }
    }
  }
  log().warn("memserver {} judged dead ({}): {} slab piece(s) lost, {} slab(s) now without a "
             "live copy", name, why.to_string(), pieces, lost_slabs);
}

bool FarPool::server_down(std::size_t c) const {
  ReaderLock lock(mu_);
  return c < down_.size() && down_[c];
}

ReplicaStats FarPool::replica_stats() const {
  ReplicaStats r = copy_stats();
  r.replicas = options_.replicas;
  ReaderLock lock(mu_);
  for (bool d : down_) r.servers_down += d ? 1 : 0;
  if (options_.replicas == 1) return r;
  for (std::size_t i = 0; i < slabs_.size(); ++i) {
    const Slab& s = slabs_[i];
    if (!s.live) continue;
    if (!loss_of(i, s).ok()) {
      ++r.slabs_lost;
      continue;
    }
    for (std::size_t pos = 0; pos < s.copies[0].size(); ++pos) {
      if (live_at(s, pos) < options_.replicas) {
        ++r.slabs_degraded;
        break;
      }
    }
  }
  return r;
}

bool FarPool::stopping() {
  MutexLock lock(stop_mu_);
  return stop_;
}

bool FarPool::sleep_until(std::chrono::steady_clock::time_point t) {
  UniqueLock lock(stop_mu_);
  return !lock.wait_until(stop_cv_, t, [&]() FARMEM_REQUIRES(stop_mu_) { return stop_; });
}

void FarPool::replication_loop() {
  // A quarter of the grace: a server that stops answering is judged dead within about
  // 1.25 graces, and probes stay rare enough to cost nothing (one small control call each).
  const auto interval = std::clamp<std::chrono::nanoseconds>(
      options_.replica_grace / 4, std::chrono::milliseconds(50), std::chrono::seconds(1));
  while (sleep_until(std::chrono::steady_clock::now() + interval)) replicate_once();
}

std::size_t FarPool::replicate_once() {
  MutexLock pass(replicate_mu_);
  probe_servers();
  std::vector<Slot> lost;
  {
    ReaderLock lock(mu_);
    for (std::size_t i = 0; i < slabs_.size(); ++i) {
      const Slab& s = slabs_[i];
      if (!s.live || s.copies.size() < 2) continue;
      for (std::size_t pos = 0; pos < s.copies[0].size(); ++pos) {
        if (live_at(s, pos) == 0) continue;  // nothing left to copy from
        for (std::size_t c = 0; c < s.copies.size(); ++c) {
          if (s.copies[c][pos].state == PieceState::kLost) lost.push_back({i, c, pos});
        }
      }
    }
  }
  std::size_t rebuilt = 0;
  for (const Slot& slot : lost) {
    if (stopping()) break;
    rebuilt += rebuild(slot) ? 1 : 0;
  }
  return rebuilt;
}

void FarPool::probe_servers() {
  std::vector<std::size_t> up;
  {
    ReaderLock lock(mu_);
    for (std::size_t c = 0; c < down_.size(); ++c) {
      if (!down_[c] && !(swap_ && c == overflow_)) up.push_back(c);
    }
  }
  for (std::size_t c : up) {
    if (stopping()) return;
    // A stalled server times out here, which also breaks its connection: ops waiting on it
    // fail at once and fail over instead of waiting for their own op_timeout.
    auto st = transport::server_stats(*conns_[c], options_.replica_grace);
    if (!st.ok() && is_transport_failure(st.status())) server_failed(c, st.status());
  }
}

std::optional<std::pair<FarPool::Piece, FarPool::Piece>> FarPool::install_replacement(
    const Slot& slot) {
  std::uint64_t bytes = 0;
  std::vector<std::size_t> holding;  // servers with a piece of this position, in any state
  std::vector<std::string> live_hosts;
  {
    ReaderLock lock(mu_);
    const Slab& s = slabs_[slot.slab];
    if (!s.live || s.copies[slot.copy][slot.pos].state != PieceState::kLost) return std::nullopt;
    bytes = s.copies[slot.copy][slot.pos].bytes;
    for (const auto& copy : s.copies) {
      holding.push_back(copy[slot.pos].conn);
      if (copy[slot.pos].state == PieceState::kLive) {
        live_hosts.push_back(host_of(names_[copy[slot.pos].conn]));
      }
    }
  }
  Piece fresh;
  {
    MutexLock lease(lease_mu_);
    std::string why;
    auto room = room_for(bytes, why);
    std::erase_if(room, [&](const Room& r) {
      return std::find(holding.begin(), holding.end(), r.conn) != holding.end();
    });
    // Another host than the live copies' first, then the emptiest by free fraction.
    auto rank = [&](const Room& r) {
      const bool same_host = std::find(live_hosts.begin(), live_hosts.end(),
                                       host_of(server_name(r.conn))) != live_hosts.end();
      return std::make_pair(same_host, r.capacity ? -double(r.free) / double(r.capacity) : 0.0);
    };
    std::sort(room.begin(), room.end(), [&](auto& x, auto& y) { return rank(x) < rank(y); });
    bool got = false;
    for (const Room& r : room) {
      auto info = transport::alloc_slab(*conns_[r.conn], bytes, options_.control_timeout);
      if (!info.ok()) continue;
      fresh = Piece{r.conn, info->slab_id, info->addr, info->rkey, info->bytes,
                    PieceState::kSyncing};
      got = true;
      break;
    }
    if (!got) return std::nullopt;  // no server can take it now: next pass
  }
  {
    WriterLock lock(mu_);
    Slab& s = slabs_[slot.slab];
    if (s.live && s.copies[slot.copy][slot.pos].state == PieceState::kLost) {
      const Piece old = s.copies[slot.copy][slot.pos];
      s.copies[slot.copy][slot.pos] = fresh;  // from here on every write resolved reaches it
      return std::make_pair(fresh, old);
    }
  }
  release({fresh});
  return std::nullopt;
}

}  // namespace farmem::pool
