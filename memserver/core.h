// The memserver's transport-independent core: the growable slab pool, client sessions with
// their slab leases, tenants and their quotas, challenge-response authentication
// (transport/proto/auth.h), and control-message dispatch. The TCP and RDMA listeners and the
// in-process ("local") transport all drive one Core.
//
// A session opens unauthenticated (HELLO, or the RDMA connect request): it can only answer
// the memserver's challenge (AUTH). Until AUTH succeeds it leases nothing, reads and writes
// nothing and sees nothing; a failed AUTH closes it. A Core without any secret (no token, no
// tenants: the memserver's --insecure) authenticates every session at once as the anonymous
// tenant.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <thread>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/status.h"
#include "memserver/slab_pool.h"
#include "transport/proto/wire.h"

namespace farmem::memserver {

/// One tenant: who may lease memory here, how much and over how many connections.
struct TenantConfig {
  std::string name;                   ///< 1..kMaxTenantBytes; "" only for the --token tenant
  std::string secret;                 ///< shared with its runtimes; never sent on the wire
  std::uint64_t quota_bytes = 0;      ///< most bytes it may lease at once; 0 = capacity only
  std::uint32_t max_connections = 0;  ///< most sessions at once; 0 = no cap
};

struct CoreOptions {
  std::uint64_t capacity_bytes = 1ull << 30;  ///< most bytes leased at once, over all clients
  std::uint64_t chunk_bytes = 2ull << 20;     ///< slab granularity (2 MiB: one huge page)
  /// The secret of the anonymous tenant (name ""), for small setups; empty: none.
  std::string token;
  /// Named tenants (--tenants FILE). No token and no tenants: every client is served
  /// unauthenticated (the memserver refuses that unless --insecure).
  std::vector<TenantConfig> tenants;
  int numa_node = -1;                         ///< bind slab memory to this node; -1 = don't
  /// How long a session whose connection broke keeps its slabs for a RESUME before they are
  /// reclaimed (the memserver's --lease-grace). 0: at once.
  std::chrono::milliseconds lease_grace{0};
};

/// A tenant's use, as metrics and farmemctl show it.
struct TenantUsage {
  std::string name;
  std::uint64_t used_bytes = 0;
  std::uint64_t quota_bytes = 0;
  std::uint32_t connections = 0;
  std::uint32_t max_connections = 0;
  std::uint64_t refused = 0;  ///< slabs and connections refused by its quota or cap
};

/// Registers slab memory with hardware for one session (verbs: with the session's own
/// protection domain, so its rkeys are useless to any other client).
class SlabRegistrar {
 public:
  virtual ~SlabRegistrar() = default;
  /// Makes [base, base + bytes) remotely readable and writable; returns its rkey.
  virtual Result<std::uint32_t> register_slab(void* base, std::size_t bytes) = 0;
  /// Undoes register_slab; called before the memory is unmapped.
  virtual void deregister_slab(void* base) = 0;
};

/// One leased slab.
struct Slab {
  std::uint64_t id = 0;
  std::uint32_t rkey = 0;
  SlabMemory memory;
};

/// A tenant's live accounting (shared by its sessions).
class Tenant {
 public:
  explicit Tenant(TenantConfig config) : config_(std::move(config)) {}
  const TenantConfig& config() const { return config_; }
  /// Takes `n` bytes of the quota; false (nothing taken, refusal counted) if that passes it.
  bool take_bytes(std::uint64_t n);
  void give_bytes(std::uint64_t n) { used_.fetch_sub(n, std::memory_order_relaxed); }
  /// Takes a connection under the cap; false (refusal counted) when the cap is reached.
  bool take_connection();
  void give_connection() { connections_.fetch_sub(1, std::memory_order_relaxed); }
  TenantUsage usage() const;

 private:
  const TenantConfig config_;
  std::atomic<std::uint64_t> used_{0};
  std::atomic<std::uint32_t> connections_{0};
  std::atomic<std::uint64_t> refused_{0};
};

/// One client's session. Slabs are leased to it and reclaimed when it closes.
class Session {
 public:
  Session(std::uint64_t id, std::string peer, std::unique_ptr<SlabRegistrar> registrar)
      : id_(id), peer_(std::move(peer)), registrar_(std::move(registrar)) {}

  std::uint64_t id() const { return id_; }
  const std::string& peer() const { return peer_; }
  /// AUTH succeeded (or the Core needs none).
  bool authenticated() const {
    ReaderLock lock(mu_);
    return tenant_ != nullptr;
  }
  /// Slabs leased to it now.
  std::size_t slab_count() const {
    ReaderLock lock(mu_);
    return slabs_.size();
  }
  /// Which connection serves the session now: it changes when another one RESUMEs it, and
  /// the one before may then do nothing more (access() refuses it).
  std::uint64_t attachment() const {
    ReaderLock lock(mu_);
    return attachment_;
  }

  /// access() for the connection of `attachment` only: kUnavailable once another took over.
  template <typename Fn>
  Status access_as(std::uint64_t attachment, std::uint64_t addr, std::uint32_t rkey,
                   std::uint64_t len, Fn&& fn) const {
    ReaderLock lock(mu_);
    if (attachment != attachment_) return Unavailable("session taken over by another connection");
    auto p = resolve_locked(addr, rkey, len);
    if (!p.ok()) return p.status();
    fn(*p);
    return Status::Ok();
  }

  /// Runs fn(std::byte* p) with p the server address of [addr, addr + len), which must lie
  /// inside one of this session's slabs and be addressed with that slab's rkey. The slab
  /// cannot be freed while fn runs. Used by the TCP and local backends (RDMA hardware checks
  /// the same thing itself).
  template <typename Fn>
  Status access(std::uint64_t addr, std::uint32_t rkey, std::uint64_t len, Fn&& fn) const {
    ReaderLock lock(mu_);
    auto p = resolve_locked(addr, rkey, len);
    if (!p.ok()) return p.status();
    fn(*p);
    return Status::Ok();
  }

 private:
  friend class Core;
  Result<std::byte*> resolve_locked(std::uint64_t addr, std::uint32_t rkey,
                                    std::uint64_t len) const FARMEM_REQUIRES_SHARED(mu_);

  const std::uint64_t id_;
  const std::string peer_;
  // The handshake (set by open_session, before anyone else sees the session).
  std::string claimed_tenant_;
  proto::Nonce client_nonce_{};
  proto::Nonce server_nonce_{};
  proto::Nonce resume_secret_{};
  /// Guards slabs_, closed_, label_ and tenant_: shared for data access (and LIST_SESSIONS),
  /// exclusive for alloc/free/close/SET_LABEL/AUTH. Never held with Core::open_mu_.
  mutable SharedMutex mu_;
  /// Set once AUTH succeeded: the tenant this session leases for. Null: not authenticated.
  std::shared_ptr<Tenant> tenant_ FARMEM_GUARDED_BY(mu_);
  std::uint64_t attachment_ FARMEM_GUARDED_BY(mu_) = 0;
  /// Its connection broke; kept until `expires_` for a RESUME. A detached session holds no
  /// connection of its tenant's cap.
  bool detached_ FARMEM_GUARDED_BY(mu_) = false;
  std::chrono::steady_clock::time_point expires_ FARMEM_GUARDED_BY(mu_);
  /// Keyed by base address, for range lookup.
  std::map<std::uint64_t, Slab> slabs_ FARMEM_GUARDED_BY(mu_);
  /// Registers its slabs with the connection's hardware (RDMA: that connection's protection
  /// domain); null for tcp and local. A RESUME over RDMA replaces it with the new
  /// connection's (see Core::resume_session). Declared after slabs_: destroyed first, so
  /// registrations end before the memory is unmapped.
  std::unique_ptr<SlabRegistrar> registrar_ FARMEM_GUARDED_BY(mu_);
  bool closed_ FARMEM_GUARDED_BY(mu_) = false;
  /// What the client called itself (SET_LABEL); empty: nothing.
  std::string label_ FARMEM_GUARDED_BY(mu_);
};

class Core {
 public:
  explicit Core(CoreOptions options);
  ~Core();
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  const CoreOptions& options() const { return options_; }

  /// Checks the version and opens a session for `hello`'s tenant, unauthenticated unless the
  /// Core has no secrets (see the top of this file).
  Result<std::shared_ptr<Session>> open_session(const proto::Hello& hello, std::string peer,
                                                std::unique_ptr<SlabRegistrar> registrar = {});
  /// Whether sessions must AUTH (the Core has a token or tenants).
  bool auth_required() const { return auth_required_; }
  /// Ends a session: every slab still leased to it returns to the pool. Idempotent.
  void close_session(Session& session);
  /// The connection `attachment` of `session` ended without the session being closed: it is
  /// kept for lease_grace for a RESUME, then closed by the Core. Closed at once when the
  /// grace is 0 or when it never authenticated. Nothing when another connection took it
  /// over since. An RDMA session keeps its slabs registered in its old connection's
  /// protection domain meanwhile (the registrar owns it), which no queue pair uses any more.
  void detach_session(Session& session, std::uint64_t attachment);
  /// RESUME on `fresh` (authenticated, nothing leased yet): the earlier session named in
  /// `req`, of the same tenant and with its secret, is attached to the caller's connection
  /// (which then serves it; `fresh` is closed). It may be detached, or still attached to a
  /// connection that stalled: that one can do nothing more. kNotFound for any session that
  /// is not there to resume (expired, closed, another tenant's, a wrong secret): the same
  /// answer, so nothing is revealed.
  ///
  /// Over RDMA a session's rkeys belong to the protection domain of the connection that
  /// registered them, and a new connection's queue pair lives in its own (it is created at
  /// accept, before anyone knows which session it will resume). So the resume re-registers
  /// every slab with `fresh`'s registrar (new rkeys, same addresses, same memory), then
  /// deregisters the old registrations: the connection before can reach nothing more. The
  /// client learns the new keys with LIST_SLABS. If a registration fails, nothing changes
  /// (the old session stays as it was) and the error is returned. A session resumes over
  /// the kind of transport it was opened on (kInvalidArgument otherwise).
  Result<std::shared_ptr<Session>> resume_session(Session& fresh, const proto::ResumeRequest& req);
  /// Closes every detached session whose grace ran out by `now` (the reaper thread calls
  /// it; tests may). Returns how many.
  std::size_t reap_expired(std::chrono::steady_clock::time_point now);
  std::uint64_t sessions_detached() const { return detached_now_.load(std::memory_order_relaxed); }
  std::uint64_t sessions_resumed() const { return resumed_.load(std::memory_order_relaxed); }
  std::uint64_t sessions_expired() const { return expired_.load(std::memory_order_relaxed); }

  /// Handles one control request of an open session and returns the reply (kError on
  /// failure, never throws). Data requests (kRead/kWrite) are not control requests. Before
  /// AUTH succeeded, only AUTH is served; a failed AUTH closes the session.
  proto::Message handle(Session& session, const proto::Message& request);

  /// The HELLO_OK payload for a session just opened (its server nonce, whether AUTH must
  /// follow; the capacity only when it need not).
  proto::HelloOk hello_reply(const Session& session) const;
  /// Every tenant's use now, by name.
  std::vector<TenantUsage> tenants() const;
  /// Handshakes refused: a wrong secret or an unknown tenant (counter).
  std::uint64_t auth_failures() const { return auth_failures_.load(std::memory_order_relaxed); }

  proto::ServerStats stats() const;
  /// The slab pool's capacity now, and moving it (see SlabPool::set_capacity).
  std::uint64_t capacity_bytes() const { return pool_.capacity_bytes(); }
  void set_capacity(std::uint64_t bytes) { pool_.set_capacity(bytes); }
  std::uint64_t used_bytes() const { return pool_.used_bytes(); }

  /// Counts a request answered with an error outside handle() (bad frames seen by listeners).
  void count_error() { errors_.fetch_add(1, std::memory_order_relaxed); }
  /// Counts data bytes this process moved for a client (TCP READ/WRITE payloads). One-sided
  /// RDMA never reaches the memserver's CPU, so it is not counted anywhere.
  void count_bytes_served(std::uint64_t n) { bytes_served_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t bytes_served() const { return bytes_served_.load(std::memory_order_relaxed); }

  /// Open sessions with ids above `after_id`, in id order, at most `max` of them; `*more`
  /// says whether others follow. With `tenant`, only that tenant's authenticated sessions.
  std::vector<proto::SessionEntry> sessions(std::uint64_t after_id, std::size_t max,
                                            bool* more, const Tenant* tenant = nullptr) const;

 private:
  proto::Message authenticate(Session& s, const proto::Message& req);
  proto::Message alloc_slab(Session& s, const proto::Message& req);
  proto::Message free_slab(Session& s, const proto::Message& req);
  proto::Message set_label(Session& s, const proto::Message& req);
  proto::Message list_sessions(const Session& s, const proto::Message& req) const;
  proto::Message list_slabs(const Session& s, const proto::Message& req) const;
  /// Re-registers every slab of `old` with `fresh`'s registrar (see resume_session).
  Status move_registrations_locked(Session& old, Session& fresh)
      FARMEM_REQUIRES(old.mu_, fresh.mu_);
  /// Ends a session after a refused AUTH (the caller's reply says why).
  proto::Message refuse(Session& s, StatusCode code, const std::string& why,
                        std::uint64_t req_id);
  void release_slab_locked(Session& s, Slab& slab) FARMEM_REQUIRES(s.mu_);
  /// Closes `s` (its lock held): slabs back to the pool, its tenant's slot. Returns the
  /// slabs reclaimed.
  std::size_t close_locked(Session& s) FARMEM_REQUIRES(s.mu_);
  std::uint32_t next_key() FARMEM_EXCLUDES(key_mu_);

  const CoreOptions options_;
  const bool auth_required_;
  /// By name; fixed after construction. The anonymous tenant ("") is always there.
  std::map<std::string, std::shared_ptr<Tenant>, std::less<>> tenants_;
  /// Stands in for an unknown tenant's secret, so that a refusal costs the same HMAC.
  std::string decoy_secret_;
  std::atomic<std::uint64_t> auth_failures_{0};
  SlabPool pool_;
  std::atomic<std::uint64_t> next_session_id_{1};
  std::atomic<std::uint64_t> next_slab_id_{1};
  std::atomic<std::uint64_t> sessions_{0};
  std::atomic<std::uint64_t> slabs_{0};
  std::atomic<std::uint64_t> slabs_reclaimed_{0};
  std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::uint64_t> errors_{0};
  std::atomic<std::uint64_t> bytes_served_{0};
  /// Guards open_ (the open sessions by id, for LIST_SESSIONS; expired entries are skipped).
  /// Never held while a session's lock is (they are taken one after the other).
  mutable Mutex open_mu_;
  struct OpenEntry {
    std::weak_ptr<Session> session;
    const Tenant* tenant = nullptr;  ///< set once it authenticated (the Core owns tenants)
    /// While detached, the Core owns the session (no connection does).
    std::shared_ptr<Session> kept;
  };
  std::map<std::uint64_t, OpenEntry> open_ FARMEM_GUARDED_BY(open_mu_);
  /// Guards key_state_ (the rkey generator of non-RDMA sessions); taken under a session's
  /// lock (alloc_slab).
  Mutex key_mu_;
  std::uint64_t key_state_ FARMEM_GUARDED_BY(key_mu_);

  // ---- Connections refused or closed by the listeners (tcp_listener.cc, rdma_listener.cc count them,
  // ---- metrics.cc reads them). Apart from the rest: nothing above depends on it.
 public:
  enum class Refusal : std::uint8_t {
    kGlobalLimit,   ///< refused: --max-connections reached
    kPerHostLimit,  ///< refused: --max-connections-per-host reached by its source address
    kIdleTimeout,   ///< closed: no frame for --idle-timeout
    kFrameTimeout,  ///< closed: a frame started and not finished within --frame-timeout
    kRdmaIdleTimeout,  ///< RDMA: disconnected, no control request for --idle-timeout
  };
  static constexpr std::size_t kRefusalKinds = 5;
  void count_refusal(Refusal why) {
    refusals_[static_cast<std::size_t>(why)].fetch_add(1, std::memory_order_relaxed);
  }
  std::uint64_t refusals(Refusal why) const {
    return refusals_[static_cast<std::size_t>(why)].load(std::memory_order_relaxed);
  }

 private:
  std::array<std::atomic<std::uint64_t>, kRefusalKinds> refusals_{};
  std::atomic<std::uint64_t> detached_now_{0};
  std::atomic<std::uint64_t> resumed_{0};
  std::atomic<std::uint64_t> expired_{0};
  /// The reaper of detached sessions (only with a lease grace).
  void reaper_loop();
  Mutex reaper_mu_;
  std::condition_variable reaper_cv_;
  bool reaper_stop_ FARMEM_GUARDED_BY(reaper_mu_) = false;
  std::thread reaper_;  // last: starts once everything above exists
};

}  // namespace farmem::memserver
