// The memserver's transport-independent core: the growable slab pool, client sessions with
// their slab leases, authentication, and control-message dispatch. The TCP and RDMA listeners
// and the in-process ("local") transport all drive one Core.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
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

struct CoreOptions {
  std::uint64_t capacity_bytes = 1ull << 30;  ///< most bytes leased at once, over all clients
  std::uint64_t chunk_bytes = 2ull << 20;     ///< slab granularity (2 MiB: one huge page)
  std::string token;                          ///< clients must present it; empty = no auth
  int numa_node = -1;                         ///< bind slab memory to this node; -1 = don't
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

/// One client's session. Slabs are leased to it and reclaimed when it closes.
class Session {
 public:
  Session(std::uint64_t id, std::string peer, std::unique_ptr<SlabRegistrar> registrar)
      : id_(id), peer_(std::move(peer)), registrar_(std::move(registrar)) {}

  std::uint64_t id() const { return id_; }
  const std::string& peer() const { return peer_; }

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
  const std::unique_ptr<SlabRegistrar> registrar_;
  /// Guards slabs_, closed_ and label_: shared for data access (and LIST_SESSIONS),
  /// exclusive for alloc/free/close/SET_LABEL. Never held with Core::open_mu_.
  mutable SharedMutex mu_;
  /// Keyed by base address, for range lookup.
  std::map<std::uint64_t, Slab> slabs_ FARMEM_GUARDED_BY(mu_);
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

  /// Checks version and token (constant-time compare) and opens a session.
  Result<std::shared_ptr<Session>> open_session(std::uint16_t version, std::string_view token,
                                                std::string peer,
                                                std::unique_ptr<SlabRegistrar> registrar = {});
  /// Ends a session: every slab still leased to it returns to the pool. Idempotent.
  void close_session(Session& session);

  /// Handles one control request of an open session and returns the reply (kError on
  /// failure, never throws). Data requests (kRead/kWrite) are not control requests.
  proto::Message handle(Session& session, const proto::Message& request);

  /// The HELLO_OK payload for a session just opened.
  proto::HelloOk hello_reply(const Session& session) const;

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
  /// says whether others follow.
  std::vector<proto::SessionEntry> sessions(std::uint64_t after_id, std::size_t max,
                                            bool* more) const;

 private:
  proto::Message alloc_slab(Session& s, const proto::Message& req);
  proto::Message free_slab(Session& s, const proto::Message& req);
  proto::Message set_label(Session& s, const proto::Message& req);
  proto::Message list_sessions(const proto::Message& req) const;
  void release_slab_locked(Session& s, Slab& slab) FARMEM_REQUIRES(s.mu_);
  std::uint32_t next_key() FARMEM_EXCLUDES(key_mu_);

  const CoreOptions options_;
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
  std::map<std::uint64_t, std::weak_ptr<Session>> open_ FARMEM_GUARDED_BY(open_mu_);
  /// Guards key_state_ (the rkey generator of non-RDMA sessions); taken under a session's
  /// lock (alloc_slab).
  Mutex key_mu_;
  std::uint64_t key_state_ FARMEM_GUARDED_BY(key_mu_);

  // ---- TCP connections refused or closed by the listener (tcp_listener.cc counts them,
  // ---- metrics.cc reads them). Apart from the rest: nothing above depends on it.
 public:
  enum class Refusal : std::uint8_t {
    kGlobalLimit,   ///< refused: --max-connections reached
    kPerHostLimit,  ///< refused: --max-connections-per-host reached by its source address
    kIdleTimeout,   ///< closed: no frame for --idle-timeout
    kFrameTimeout,  ///< closed: a frame started and not finished within --frame-timeout
  };
  static constexpr std::size_t kRefusalKinds = 4;
  void count_refusal(Refusal why) {
    refusals_[static_cast<std::size_t>(why)].fetch_add(1, std::memory_order_relaxed);
  }
  std::uint64_t refusals(Refusal why) const {
    return refusals_[static_cast<std::size_t>(why)].load(std::memory_order_relaxed);
  }

 private:
  std::array<std::atomic<std::uint64_t>, kRefusalKinds> refusals_{};
};

}  // namespace farmem::memserver
