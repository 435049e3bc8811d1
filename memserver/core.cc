#include "memserver/core.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "common/log.h"

namespace farmem::memserver {

namespace {
// Compares without an early exit, so response time does not leak the matching prefix.
bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}
}  // namespace

Result<std::byte*> Session::resolve_locked(std::uint64_t addr, std::uint32_t rkey,
                                           std::uint64_t len) const {
  if (closed_) return Unavailable("session closed");
  auto it = slabs_.upper_bound(addr);
  if (it == slabs_.begin()) return proto::check_access(nullptr, addr, len, rkey);
  --it;
  const Slab& slab = it->second;
  const std::uint64_t base = it->first;
  const proto::SlabBounds bounds{slab.id, base, slab.memory.bytes(), slab.rkey};
  FARMEM_RETURN_IF_ERROR(proto::check_access(&bounds, addr, len, rkey));
  return slab.memory.base() + (addr - base);
}

Core::Core(CoreOptions options)
    : options_(std::move(options)),
      pool_(options_.capacity_bytes, options_.chunk_bytes, options_.numa_node),
      key_state_(std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32)) {}

Core::~Core() = default;

Result<std::shared_ptr<Session>> Core::open_session(std::uint16_t version,
                                                    std::string_view token, std::string peer,
                                                    std::unique_ptr<SlabRegistrar> registrar) {
  if (version != proto::kVersion) {
    count_error();
    return ProtocolError("client speaks protocol version " + std::to_string(version) +
                         ", this memserver speaks " + std::to_string(proto::kVersion));
  }
  if (!constant_time_equal(token, options_.token)) {
    count_error();
    log().warn("rejected {}: wrong auth token", peer);
    return PermissionDenied("wrong auth token");
  }
  const auto id = next_session_id_.fetch_add(1, std::memory_order_relaxed);
  sessions_.fetch_add(1, std::memory_order_relaxed);
  log().info("session {} opened for {}", id, peer);
  auto session = std::make_shared<Session>(id, std::move(peer), std::move(registrar));
  MutexLock lock(open_mu_);
  open_[id] = session;
  return session;
}

void Core::close_session(Session& session) {
  {
    MutexLock lock(open_mu_);
    open_.erase(session.id());
  }
  WriterLock lock(session.mu_);
  if (session.closed_) return;
  session.closed_ = true;
  const auto reclaimed = session.slabs_.size();
  for (auto& [base, slab] : session.slabs_) release_slab_locked(session, slab);
  session.slabs_.clear();
  slabs_reclaimed_.fetch_add(reclaimed, std::memory_order_relaxed);
  sessions_.fetch_sub(1, std::memory_order_relaxed);
  log().info("session {} ({}) closed, {} slab(s) reclaimed", session.id(), session.peer(),
             reclaimed);
}

proto::HelloOk Core::hello_reply(const Session& session) const {
  return proto::HelloOk{session.id(), pool_.capacity_bytes(), options_.chunk_bytes};
}

proto::Message Core::handle(Session& session, const proto::Message& req) {
  requests_.fetch_add(1, std::memory_order_relaxed);
  proto::Message reply;
  switch (req.type) {
    case proto::MsgType::kAllocSlab:
      reply = alloc_slab(session, req);
      break;
    case proto::MsgType::kFreeSlab:
      reply = free_slab(session, req);
      break;
    case proto::MsgType::kStats:
      reply = proto::Message::of(proto::MsgType::kStatsReply, stats());
      break;
    case proto::MsgType::kSetLabel:
      reply = set_label(session, req);
      break;
    case proto::MsgType::kListSessions:
      reply = list_sessions(req);
      break;
    case proto::MsgType::kHello:
      reply = proto::Message::error(StatusCode::kProtocolError, "HELLO sent twice", req.req_id);
      break;
    default:
      reply = proto::Message::error(
          StatusCode::kProtocolError,
          "unknown control message type " + std::to_string(static_cast<unsigned>(req.type)),
          req.req_id);
  }
  if (reply.type == proto::MsgType::kError) count_error();
  reply.req_id = req.req_id;
  return reply;
}

proto::Message Core::alloc_slab(Session& s, const proto::Message& req) {
  auto body = req.as<proto::AllocSlab>();
  if (!body.ok()) return proto::Message::error(body.status().code(), body.status().message(), 0);
  auto mem = pool_.map(body->bytes);
  if (!mem.ok()) return proto::Message::error(mem.status().code(), mem.status().message(), 0);

  Slab slab;
  slab.id = next_slab_id_.fetch_add(1, std::memory_order_relaxed);
  slab.memory = std::move(mem).value();
  WriterLock lock(s.mu_);
  if (s.closed_) {
    pool_.unmap(std::move(slab.memory));
    return proto::Message::error(StatusCode::kUnavailable, "session closed", 0);
  }
  if (s.registrar_) {
    auto rkey = s.registrar_->register_slab(slab.memory.base(), slab.memory.bytes());
    if (!rkey.ok()) {
      pool_.unmap(std::move(slab.memory));
      return proto::Message::error(rkey.status().code(), rkey.status().message(), 0);
    }
    slab.rkey = *rkey;
  } else {
    slab.rkey = next_key();
  }
  const proto::SlabInfo info{slab.id, reinterpret_cast<std::uint64_t>(slab.memory.base()),
                             slab.memory.bytes(), slab.rkey, 0};
  s.slabs_.emplace(info.addr, std::move(slab));
  slabs_.fetch_add(1, std::memory_order_relaxed);
  log().debug("session {}: slab {} of {} bytes", s.id(), info.slab_id, info.bytes);
  return proto::Message::of(proto::MsgType::kSlabInfo, info);
}

proto::Message Core::free_slab(Session& s, const proto::Message& req) {
  auto body = req.as<proto::FreeSlab>();
  if (!body.ok()) return proto::Message::error(body.status().code(), body.status().message(), 0);
  WriterLock lock(s.mu_);
  for (auto it = s.slabs_.begin(); it != s.slabs_.end(); ++it) {
    if (it->second.id == body->slab_id) {
      release_slab_locked(s, it->second);
      s.slabs_.erase(it);
      proto::Message ok;
      ok.type = proto::MsgType::kFreeOk;
      return ok;
    }
  }
  // Whether it never existed, was freed already or belongs to another session, the answer
  // is the same: this session holds no such slab (and we reveal nothing about others').
  return proto::Message::error(StatusCode::kNotFound,
                               "slab " + std::to_string(body->slab_id) +
                                   " is not leased to this session (freed already, or never "
                                   "allocated by it)",
                               0);
}

proto::Message Core::set_label(Session& s, const proto::Message& req) {
  if (req.payload.empty() || req.payload.size() > proto::kMaxLabelBytes) {
    return proto::Message::error(StatusCode::kInvalidArgument,
                                 "a label is 1.." + std::to_string(proto::kMaxLabelBytes) +
                                     " bytes, got " + std::to_string(req.payload.size()),
                                 0);
  }
  std::string label(reinterpret_cast<const char*>(req.payload.data()), req.payload.size());
  log().info("session {} ({}) is {}", s.id(), s.peer(), label);
  WriterLock lock(s.mu_);
  s.label_ = std::move(label);
  proto::Message ok;
  ok.type = proto::MsgType::kLabelOk;
  return ok;
}

proto::Message Core::list_sessions(const proto::Message& req) const {
  auto body = req.as<proto::ListSessions>();
  if (!body.ok()) return proto::Message::error(body.status().code(), body.status().message(), 0);
  bool more = false;
  const auto entries = sessions(body->after_session_id, proto::kMaxSessionsPerList, &more);
  const proto::SessionListHead head{static_cast<std::uint32_t>(entries.size()), more ? 1u : 0u};
  proto::Message m;
  m.type = proto::MsgType::kSessionList;
  m.payload.resize(sizeof head + entries.size() * sizeof(proto::SessionEntry));
  std::memcpy(m.payload.data(), &head, sizeof head);
  if (!entries.empty()) {
    std::memcpy(m.payload.data() + sizeof head, entries.data(),
                entries.size() * sizeof(proto::SessionEntry));
  }
  return m;
}

std::vector<proto::SessionEntry> Core::sessions(std::uint64_t after_id, std::size_t max,
                                                bool* more) const {
  // Collect first, then read each session under its own lock: open_mu_ is never held while
  // a session's lock is (close_session takes them one after the other).
  std::vector<std::shared_ptr<Session>> open;
  *more = false;
  {
    MutexLock lock(open_mu_);
    for (auto it = open_.upper_bound(after_id); it != open_.end(); ++it) {
      auto s = it->second.lock();
      if (!s) continue;
      if (open.size() == max) {
        *more = true;
        break;
      }
      open.push_back(std::move(s));
    }
  }
  std::vector<proto::SessionEntry> out;
  out.reserve(open.size());
  for (const auto& s : open) {
    proto::SessionEntry e{};
    e.session_id = s->id();
    ReaderLock lock(s->mu_);
    for (const auto& [base, slab] : s->slabs_) e.leased_bytes += slab.memory.bytes();
    e.slabs = static_cast<std::uint32_t>(s->slabs_.size());
    e.label_len = static_cast<std::uint16_t>(std::min(s->label_.size(), sizeof e.label));
    std::memcpy(e.label, s->label_.data(), e.label_len);
    out.push_back(e);
  }
  return out;
}

void Core::release_slab_locked(Session& s, Slab& slab) {
  if (s.registrar_) s.registrar_->deregister_slab(slab.memory.base());
  pool_.unmap(std::move(slab.memory));
  slabs_.fetch_sub(1, std::memory_order_relaxed);
}

std::uint32_t Core::next_key() {
  // splitmix64: keys of non-RDMA sessions are unguessable enough to catch stale or forged
  // addresses; the session's slab map is what actually isolates clients.
  MutexLock lock(key_mu_);
  std::uint64_t z = (key_state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<std::uint32_t>(z ^ (z >> 31));
}

proto::ServerStats Core::stats() const {
  proto::ServerStats st{};
  st.capacity_bytes = pool_.capacity_bytes();
  st.used_bytes = pool_.used_bytes();
  st.mapped_bytes = pool_.used_bytes();
  st.slabs = slabs_.load(std::memory_order_relaxed);
  st.sessions = sessions_.load(std::memory_order_relaxed);
  st.slabs_reclaimed = slabs_reclaimed_.load(std::memory_order_relaxed);
  st.requests = requests_.load(std::memory_order_relaxed);
  st.errors = errors_.load(std::memory_order_relaxed);
  return st;
}

}  // namespace farmem::memserver
