#include "memserver/core.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "common/log.h"

namespace farmem::memserver {

namespace {
std::string tenant_label(std::string_view name) {
  return name.empty() ? std::string("the anonymous tenant") : "tenant '" + std::string(name) + "'";
}
}  // namespace

bool Tenant::take_bytes(std::uint64_t n) {
  if (config_.quota_bytes == 0) {
    used_.fetch_add(n, std::memory_order_relaxed);
    return true;
  }
  std::uint64_t used = used_.load(std::memory_order_relaxed);
  // Bounded: each retry means another session of this tenant changed used_ meanwhile.
  do {
    if (n > config_.quota_bytes || used > config_.quota_bytes - n) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  } while (!used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
  return true;
}

bool Tenant::take_connection() {
  std::uint32_t n = connections_.load(std::memory_order_relaxed);
  do {
    if (config_.max_connections != 0 && n >= config_.max_connections) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  } while (!connections_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
  return true;
}

TenantUsage Tenant::usage() const {
  return TenantUsage{config_.name, used_.load(std::memory_order_relaxed), config_.quota_bytes,
                     connections_.load(std::memory_order_relaxed), config_.max_connections,
                     refused_.load(std::memory_order_relaxed)};
}

Result<std::byte*> Session::resolve_locked(std::uint64_t addr, std::uint32_t rkey,
                                           std::uint64_t len) const {
  if (closed_) return Unavailable("session closed");
  if (tenant_ == nullptr) return PermissionDenied("not authenticated: AUTH first");
  auto it = slabs_.upper_bound(addr);
  if (it == slabs_.begin()) return proto::check_access(nullptr, addr, len, rkey);
  --it;
  const Slab& slab = it->second;
  const std::uint64_t base = it->first;
  const proto::SlabBounds bounds{slab.id, base, slab.memory.bytes(), slab.rkey};
  FARMEM_RETURN_IF_ERROR(proto::check_access(&bounds, addr, len, rkey));
  return slab.memory.base() + (addr - base);
}

namespace {
std::string random_secret() {
  std::string out;
  for (int i = 0; i < 2; ++i) {
    auto n = proto::random_nonce();
    std::random_device rd;  // the fallback only matters if the CSPRNG failed
    for (std::size_t j = 0; j < proto::kNonceBytes; ++j) {
      out.push_back(static_cast<char>(n.ok() ? (*n)[j] : static_cast<std::uint8_t>(rd())));
    }
  }
  return out;
}
}  // namespace

Core::Core(CoreOptions options)
    : options_(std::move(options)),
      auth_required_(!options_.token.empty() || !options_.tenants.empty()),
      decoy_secret_(random_secret()),
      pool_(options_.capacity_bytes, options_.chunk_bytes, options_.numa_node),
      key_state_(std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32)) {
  // The anonymous tenant always exists: with --token it is the one tenant that can log in;
  // with no secrets at all (--insecure) every session belongs to it.
  TenantConfig anonymous;
  anonymous.secret = options_.token;
  tenants_.emplace("", std::make_shared<Tenant>(std::move(anonymous)));
  for (const TenantConfig& t : options_.tenants) {
    if (!t.name.empty()) tenants_.emplace(t.name, std::make_shared<Tenant>(t));
  }
  if (options_.lease_grace.count() > 0) reaper_ = std::thread([this] { reaper_loop(); });
}

Core::~Core() {
  if (reaper_.joinable()) {
    {
      MutexLock lock(reaper_mu_);
      reaper_stop_ = true;
    }
    reaper_cv_.notify_all();
    reaper_.join();
  }
}

void Core::reaper_loop() {
  // Checks a quarter of the grace (at most 1 s) after the last check: a detached session
  // is reclaimed at most that late. Bounded: ends when the destructor sets reaper_stop_.
  const auto period = std::min<std::chrono::milliseconds>(options_.lease_grace / 4,
                                                          std::chrono::seconds(1));
  UniqueLock lock(reaper_mu_);
  while (!reaper_stop_) {
    lock.wait_for(reaper_cv_, std::max(period, std::chrono::milliseconds(1)));
    if (reaper_stop_) break;
    lock.unlock();
    reap_expired(std::chrono::steady_clock::now());
    lock.lock();
  }
}

std::size_t Core::reap_expired(std::chrono::steady_clock::time_point now) {
  std::vector<std::shared_ptr<Session>> open;
  {
    MutexLock lock(open_mu_);
    for (auto& [id, e] : open_) {
      if (auto s = e.session.lock()) open.push_back(std::move(s));
    }
  }
  std::size_t n = 0;
  for (const auto& s : open) {
    std::size_t reclaimed = 0;
    {
      // Checked and closed under one lock: a RESUME that came first wins.
      WriterLock lock(s->mu_);
      if (!s->detached_ || s->closed_ || now < s->expires_) continue;
      reclaimed = close_locked(*s);
    }
    {
      MutexLock lock(open_mu_);
      open_.erase(s->id());
    }
    expired_.fetch_add(1, std::memory_order_relaxed);
    log().info("session {} ({}) not resumed within the lease grace: closed, {} slab(s) reclaimed",
               s->id(), s->peer(), reclaimed);
    ++n;
  }
  return n;
}

void Core::detach_session(Session& session, std::uint64_t attachment) {
  bool close_now = false;
  {
    WriterLock lock(session.mu_);
    if (session.closed_ || session.detached_ || session.attachment_ != attachment) return;
    close_now = options_.lease_grace.count() == 0 || session.tenant_ == nullptr;
    if (!close_now) {
      session.detached_ = true;
      session.expires_ = std::chrono::steady_clock::now() + options_.lease_grace;
      session.tenant_->give_connection();
      detached_now_.fetch_add(1, std::memory_order_relaxed);
      log().info("session {} ({}): connection lost; its {} slab(s) are kept {} ms for a resume",
                 session.id(), session.peer(), session.slabs_.size(),
                 options_.lease_grace.count());
    }
  }
  if (close_now) {
    close_session(session);
    return;
  }
  // The Core keeps it alive now: its connection's owner lets go of it.
  MutexLock lock(open_mu_);
  if (auto it = open_.find(session.id()); it != open_.end()) it->second.kept = it->second.session.lock();
}

Result<std::shared_ptr<Session>> Core::resume_session(Session& fresh,
                                                      const proto::ResumeRequest& req) {
  const auto gone = [&] {
    return NotFound("no session " + std::to_string(req.session_id) +
                    " to resume (closed, expired, or not this tenant's)");
  };
  std::shared_ptr<Tenant> tenant;
  {
    ReaderLock lock(fresh.mu_);
    if (fresh.closed_) return Unavailable("session closed");
    if (fresh.tenant_ == nullptr) return PermissionDenied("not authenticated: AUTH first");
    if (!fresh.slabs_.empty()) {
      return InvalidArgument("RESUME must come before anything is leased on the connection");
    }
    tenant = fresh.tenant_;
  }
  std::shared_ptr<Session> old;
  {
    MutexLock lock(open_mu_);
    if (auto it = open_.find(req.session_id); it != open_.end()) old = it->second.session.lock();
  }
  if (!old || old.get() == &fresh) return gone();
  bool take_slot = false;
  {
    WriterLock lock(old->mu_);
    proto::Mac a{}, b{};
    std::copy(req.resume_secret.begin(), req.resume_secret.end(), a.begin());
    std::copy(old->resume_secret_.begin(), old->resume_secret_.end(), b.begin());
    if (old->closed_ || old->tenant_ != tenant || !proto::mac_equal(a, b)) return gone();
    {
      WriterLock fresh_lock(fresh.mu_);  // old before fresh: the only place both are held
      if ((old->registrar_ != nullptr) != (fresh.registrar_ != nullptr)) {
        return InvalidArgument("session " + std::to_string(old->id()) +
                               " resumes only over the kind of transport it was opened on");
      }
      if (fresh.registrar_ != nullptr) {
        FARMEM_RETURN_IF_ERROR(move_registrations_locked(*old, fresh));
      }
    }
    ++old->attachment_;  // the connection before (if it still runs) can do nothing more
    take_slot = old->detached_;
    if (old->detached_) {
      old->detached_ = false;
      detached_now_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  {
    MutexLock lock(open_mu_);
    if (auto it = open_.find(old->id()); it != open_.end()) it->second.kept.reset();
  }
  if (take_slot) {
    // The resumed session takes over the fresh one's place under its tenant's cap.
    WriterLock lock(fresh.mu_);
    fresh.detached_ = true;  // so closing it does not give the slot back
    detached_now_.fetch_add(1, std::memory_order_relaxed);  // close_session takes it off
  }
  close_session(fresh);
  resumed_.fetch_add(1, std::memory_order_relaxed);
  log().info("session {} ({}) resumed by {}", old->id(), old->peer(), fresh.peer());
  return old;
}

Status Core::move_registrations_locked(Session& old, Session& fresh) {
  // Register everything anew first: a failure then leaves the old session untouched.
  std::vector<std::pair<Slab*, std::uint32_t>> fresh_keys;
  fresh_keys.reserve(old.slabs_.size());
  for (auto& [base, slab] : old.slabs_) {
    auto rkey = fresh.registrar_->register_slab(slab.memory.base(), slab.memory.bytes());
    if (!rkey.ok()) {
      for (auto& [done, key] : fresh_keys) fresh.registrar_->deregister_slab(done->memory.base());
      return rkey.status().with_context("re-registering session " + std::to_string(old.id()) +
                                        "'s slabs for its new connection");
    }
    fresh_keys.emplace_back(&slab, *rkey);
  }
  // The old keys die with the old registrations (the connection before can reach nothing);
  // the old registrar, with its protection domain, ends with `fresh`.
  for (auto& [slab, key] : fresh_keys) {
    old.registrar_->deregister_slab(slab->memory.base());
    slab->rkey = key;
  }
  std::swap(old.registrar_, fresh.registrar_);
  return Status::Ok();
}

Result<std::shared_ptr<Session>> Core::open_session(const proto::Hello& hello, std::string peer,
                                                    std::unique_ptr<SlabRegistrar> registrar) {
  if (hello.version != proto::kVersion) {
    count_error();
    return ProtocolError("client speaks protocol version " + std::to_string(hello.version) +
                         ", this memserver speaks " + std::to_string(proto::kVersion));
  }
  if (hello.tenant.size() > proto::kMaxTenantBytes) {
    count_error();
    return InvalidArgument("tenant name of " + std::to_string(hello.tenant.size()) +
                           " bytes; at most " + std::to_string(proto::kMaxTenantBytes));
  }
  FARMEM_ASSIGN_OR_RETURN(proto::Nonce server_nonce, proto::random_nonce());
  const auto id = next_session_id_.fetch_add(1, std::memory_order_relaxed);
  auto session = std::make_shared<Session>(id, std::move(peer), std::move(registrar));
  session->claimed_tenant_ = std::string(hello.tenant);
  session->client_nonce_ = hello.client_nonce;
  session->server_nonce_ = server_nonce;
  FARMEM_ASSIGN_OR_RETURN(session->resume_secret_, proto::random_nonce());
  if (!auth_required_) {
    // --insecure: everyone is the anonymous tenant, which has no cap.
    auto anonymous = tenants_.find("")->second;
    anonymous->take_connection();
    WriterLock lock(session->mu_);
    session->tenant_ = std::move(anonymous);
  }
  sessions_.fetch_add(1, std::memory_order_relaxed);
  log().info("session {} opened for {}{}", id, session->peer(),
             auth_required_ ? " (authenticating as " + tenant_label(hello.tenant) + ")" : "");
  MutexLock lock(open_mu_);
  open_[id] = OpenEntry{session, auth_required_ ? nullptr : tenants_.find("")->second.get()};
  return session;
}

void Core::close_session(Session& session) {
  {
    MutexLock lock(open_mu_);
    open_.erase(session.id());
  }
  WriterLock lock(session.mu_);
  if (session.closed_) return;
  const auto reclaimed = close_locked(session);
  log().info("session {} ({}) closed, {} slab(s) reclaimed", session.id(), session.peer(),
             reclaimed);
}

std::size_t Core::close_locked(Session& session) {
  session.closed_ = true;
  const auto reclaimed = session.slabs_.size();
  for (auto& [base, slab] : session.slabs_) release_slab_locked(session, slab);
  session.slabs_.clear();
  if (session.detached_) {
    detached_now_.fetch_sub(1, std::memory_order_relaxed);
  } else if (session.tenant_) {
    session.tenant_->give_connection();
  }
  slabs_reclaimed_.fetch_add(reclaimed, std::memory_order_relaxed);
  sessions_.fetch_sub(1, std::memory_order_relaxed);
  return reclaimed;
}

proto::HelloOk Core::hello_reply(const Session& session) const {
  proto::HelloOk ok{};
  ok.session_id = session.id();
  ok.capacity_bytes = auth_required_ ? 0 : pool_.capacity_bytes();
  ok.chunk_bytes = options_.chunk_bytes;
  ok.server_nonce = session.server_nonce_;
  ok.flags = auth_required_ ? proto::kHelloAuthRequired : 0;
  if (!auth_required_) ok.resume_secret = session.resume_secret_;
  return ok;
}

std::vector<TenantUsage> Core::tenants() const {
  std::vector<TenantUsage> out;
  for (const auto& [name, t] : tenants_) {
    // The anonymous tenant of a Core with named tenants and no token cannot log in: skip it.
    if (name.empty() && auth_required_ && options_.token.empty()) continue;
    out.push_back(t->usage());
  }
  return out;
}

proto::Message Core::refuse(Session& s, StatusCode code, const std::string& why,
                            std::uint64_t req_id) {
  auth_failures_.fetch_add(1, std::memory_order_relaxed);
  log().warn("session {} ({}): {}", s.id(), s.peer(), why);
  close_session(s);
  return proto::Message::error(code, why, req_id);
}

proto::Message Core::authenticate(Session& s, const proto::Message& req) {
  {
    ReaderLock lock(s.mu_);
    if (s.closed_) return proto::Message::error(StatusCode::kUnavailable, "session closed", 0);
    if (s.tenant_ != nullptr) {
      return proto::Message::error(StatusCode::kProtocolError,
                                   auth_required_ ? "AUTH sent twice"
                                                  : "this memserver runs --insecure: no AUTH",
                                   0);
    }
  }
  auto proof = req.as<proto::AuthProof>();
  if (!proof.ok()) return refuse(s, StatusCode::kProtocolError, proof.status().message(), 0);
  auto it = tenants_.find(s.claimed_tenant_);
  // An unknown tenant, or the anonymous one when only named tenants are configured, is
  // judged against a random secret: the same work and the same answer as a wrong secret.
  const bool usable = it != tenants_.end() && !it->second->config().secret.empty();
  const std::string& secret = usable ? it->second->config().secret : decoy_secret_;
  auto expected = proto::auth_proof(secret, proto::AuthRole::kClient, s.claimed_tenant_,
                                    s.client_nonce_, s.server_nonce_, s.id());
  if (!expected.ok()) return refuse(s, expected.status().code(), expected.status().message(), 0);
  if (!proto::mac_equal(*expected, proof->mac) || !usable) {
    return refuse(s, StatusCode::kPermissionDenied,
                  "authentication failed for " + tenant_label(s.claimed_tenant_) +
                      ": unknown tenant or wrong secret",
                  0);
  }
  const std::shared_ptr<Tenant>& tenant = it->second;
  if (!tenant->take_connection()) {
    return refuse(s, StatusCode::kResourceExhausted,
                  tenant_label(s.claimed_tenant_) + " has " +
                      std::to_string(tenant->config().max_connections) +
                      " connection(s) open already, its cap",
                  0);
  }
  auto answer = proto::auth_proof(secret, proto::AuthRole::kServer, s.claimed_tenant_,
                                  s.client_nonce_, s.server_nonce_, s.id());
  if (!answer.ok()) {
    tenant->give_connection();
    return refuse(s, answer.status().code(), answer.status().message(), 0);
  }
  {
    WriterLock lock(s.mu_);
    if (s.closed_) {
      tenant->give_connection();
      return proto::Message::error(StatusCode::kUnavailable, "session closed", 0);
    }
    s.tenant_ = tenant;
  }
  {
    MutexLock lock(open_mu_);
    if (auto e = open_.find(s.id()); e != open_.end()) e->second.tenant = tenant.get();
  }
  log().info("session {} ({}) authenticated as {}", s.id(), s.peer(),
             tenant_label(s.claimed_tenant_));
  return proto::Message::of(proto::MsgType::kAuthOk, proto::AuthOk{*answer, s.resume_secret_});
}

proto::Message Core::handle(Session& session, const proto::Message& req) {
  requests_.fetch_add(1, std::memory_order_relaxed);
  proto::Message reply;
  if (req.type == proto::MsgType::kAuth) {
    reply = authenticate(session, req);
  } else if (!session.authenticated()) {
    reply = proto::Message::error(
        StatusCode::kPermissionDenied,
        req.type == proto::MsgType::kHello ? "HELLO sent twice"
                                           : "not authenticated: this memserver takes " +
                                                 std::string(proto::to_string(req.type)) +
                                                 " only after AUTH succeeded",
        req.req_id);
  } else switch (req.type) {
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
    case proto::MsgType::kPing:
      reply.type = proto::MsgType::kPong;
      break;
    case proto::MsgType::kResume:
      // The transport serves RESUME (it changes which session the connection serves).
      reply = proto::Message::error(StatusCode::kProtocolError,
                                    "RESUME is not served on this connection", req.req_id);
      break;
    case proto::MsgType::kListSessions:
      reply = list_sessions(session, req);
      break;
    case proto::MsgType::kListSlabs:
      reply = list_slabs(session, req);
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
  if (!s.tenant_->take_bytes(slab.memory.bytes())) {
    const auto usage = s.tenant_->usage();
    const auto asked = slab.memory.bytes();
    pool_.unmap(std::move(slab.memory));
    return proto::Message::error(
        StatusCode::kResourceExhausted,
        "quota of " + tenant_label(usage.name) + " reached: " + std::to_string(usage.used_bytes) +
            " of " + std::to_string(usage.quota_bytes) + " bytes leased, a slab of " +
            std::to_string(asked) + " more refused",
        0);
  }
  if (s.registrar_) {
    auto rkey = s.registrar_->register_slab(slab.memory.base(), slab.memory.bytes());
    if (!rkey.ok()) {
      s.tenant_->give_bytes(slab.memory.bytes());
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

proto::Message Core::list_sessions(const Session& s, const proto::Message& req) const {
  auto body = req.as<proto::ListSessions>();
  if (!body.ok()) return proto::Message::error(body.status().code(), body.status().message(), 0);
  bool more = false;
  const Tenant* tenant = nullptr;
  {
    ReaderLock lock(s.mu_);
    tenant = s.tenant_.get();  // the Core's tenants live as long as it does
  }
  // A client sees its own tenant's sessions only.
  const auto entries =
      sessions(body->after_session_id, proto::kMaxSessionsPerList, &more, tenant);
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

proto::Message Core::list_slabs(const Session& s, const proto::Message& req) const {
  auto body = req.as<proto::ListSlabs>();
  if (!body.ok()) return proto::Message::error(body.status().code(), body.status().message(), 0);
  std::vector<proto::SlabInfo> infos;
  bool more = false;
  {
    ReaderLock lock(s.mu_);
    for (const auto& [base, slab] : s.slabs_) {
      if (slab.id <= body->after_slab_id) continue;
      infos.push_back(proto::SlabInfo{slab.id, base, slab.memory.bytes(), slab.rkey, 0});
    }
  }
  // slabs_ is keyed by address: order by id, then keep one page.
  std::sort(infos.begin(), infos.end(),
            [](const auto& a, const auto& b) { return a.slab_id < b.slab_id; });
  if (infos.size() > proto::kMaxSlabsPerList) {
    infos.resize(proto::kMaxSlabsPerList);
    more = true;
  }
  const proto::SlabListHead head{static_cast<std::uint32_t>(infos.size()), more ? 1u : 0u};
  proto::Message m;
  m.type = proto::MsgType::kSlabList;
  m.payload.resize(sizeof head + infos.size() * sizeof(proto::SlabInfo));
  std::memcpy(m.payload.data(), &head, sizeof head);
  if (!infos.empty()) {
    std::memcpy(m.payload.data() + sizeof head, infos.data(),
                infos.size() * sizeof(proto::SlabInfo));
  }
  return m;
}

std::vector<proto::SessionEntry> Core::sessions(std::uint64_t after_id, std::size_t max,
                                                bool* more, const Tenant* tenant) const {
  // Collect first, then read each session under its own lock: open_mu_ is never held while
  // a session's lock is (close_session takes them one after the other).
  std::vector<std::shared_ptr<Session>> open;
  *more = false;
  {
    MutexLock lock(open_mu_);
    for (auto it = open_.upper_bound(after_id); it != open_.end(); ++it) {
      if (tenant != nullptr && it->second.tenant != tenant) continue;
      auto s = it->second.session.lock();
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
  if (s.tenant_) s.tenant_->give_bytes(slab.memory.bytes());
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
