// The transport layer: one Connection to one memserver.
//
// A Connection moves bytes between registered local memory and remote (addr, rkey) ranges with
// one-sided READ/WRITE, posted in batches and completed asynchronously, plus a small
// request/reply control call. Backends: verbs (rdma-core), tcp, local (in-process memserver),
// and fault (a wrapper that injects failures). Each backend has its own factory function.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/dcheck.h"
#include "farmem/status.h"
#include "transport/proto/wire.h"
#include "transport/tcp/tls.h"

namespace farmem::transport {

enum class OpKind : std::uint8_t { kRead, kWrite };

/// One one-sided operation. `local` must lie in memory registered with this connection
/// (`lkey` from that registration); [remote_addr, remote_addr + length) must lie in one slab
/// leased to this session, addressed with that slab's `rkey`.
struct Op {
  OpKind kind;
  std::uint32_t length;
  void* local;
  std::uint32_t lkey;
  std::uint32_t rkey;
  std::uint64_t remote_addr;
};

/// What a backend can do; callers size batches and choose paths from it.
struct Capabilities {
  std::string name;                 ///< "verbs", "tcp", "local", "fault(<inner>)"
  bool one_sided = false;           ///< true when ops bypass the server CPU (RDMA)
  std::uint32_t max_op_bytes = 0;   ///< largest single Op::length
  std::uint32_t max_batch_ops = 0;  ///< largest span a single post() accepts
  /// Registering memory pins its pages (verbs: the NIC keeps the physical pages it was given).
  /// Such memory must not be given back with MADV_DONTNEED while registered: the CPU would
  /// fault in fresh pages while the NIC still reads and writes the old ones.
  bool pins_registered_memory = false;
};

/// Completion of one posted batch. Caller-owned; must outlive the wait() on it.
/// A batch completes once: when every op in it has finished, or the first error is known
/// and nothing of the batch is still in flight.
class Completion {
 public:
  Completion() = default;
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;

  /// True when the batch has finished (acquire: results are visible to the caller).
  bool done() const { return pending_.load(std::memory_order_acquire) == 0; }
  /// The batch's outcome; meaningful once done().
  const Status& status() const { return error_; }

  // ---- backend side ----
  /// Prepares for a new batch that will report `parts` completions.
  void arm(std::uint32_t parts) {
    // Armed only once the last batch completed (each posted batch is waited for, see wait()).
    FARMEM_DCHECK_EQ(pending_.load(std::memory_order_acquire), 0u);
    error_ = Status::Ok();
    failed_.store(false, std::memory_order_relaxed);
    pending_.store(parts, std::memory_order_release);
  }
  /// Reports one part finished. The first non-ok status is the batch's.
  void finish_part(const Status& s) {
    if (!s.ok() && !failed_.exchange(true, std::memory_order_acq_rel)) error_ = s;
    [[maybe_unused]] const std::uint32_t was = pending_.fetch_sub(1, std::memory_order_acq_rel);
    FARMEM_DCHECK_GT(was, 0u);  // no part finishes twice (`this` may be gone: `was` only)
  }
  /// Reports one part finished successfully (hot path: no Status constructed).
  void finish_part_ok() {
    [[maybe_unused]] const std::uint32_t was = pending_.fetch_sub(1, std::memory_order_acq_rel);
    FARMEM_DCHECK_GT(was, 0u);
  }

 private:
  std::atomic<std::uint32_t> pending_{0};
  std::atomic<bool> failed_{false};
  Status error_;
};

/// Local memory registered with one connection; deregistered when destroyed.
/// Must not outlive the Connection that made it.
class MemoryRegistration {
 public:
  virtual ~MemoryRegistration() = default;
  virtual std::uint32_t lkey() const = 0;
  virtual void* addr() const = 0;
  virtual std::size_t length() const = 0;
};

/// A connection to one memserver session. Thread-safe: many threads may post and wait at once.
///
/// Failure contract (every backend agrees; test/transport/conformance_test.cc checks it):
///
///   failure                               code                 where        connection
///   ------------------------------------  -------------------  -----------  ----------
///   empty batch, op of 0 or > max bytes,  kInvalidArgument     post()       usable
///     null local buffer, > max ops
///   op outside every slab leased on this  kOutOfRange          wait()       usable
///     session (or running past its end)
///   op with the wrong rkey for its slab   kPermissionDenied    wait()       usable
///   no completion within the timeout      kTimedOut            wait()       broken
///   peer dead, disconnected or stopped    kUnavailable         post/wait/   broken
///     answering; any op on a broken                            call()
///     connection
///   the transport failed an op otherwise  kIoError             wait()       broken
///     (e.g. a NIC error)
///   control request refused by the        its reply's code     call()       usable
///     memserver (full pool, foreign slab)
///
/// A batch whose status is an error may have performed some of its other ops. Once broken, a
/// connection stays broken: every later post() and call() fails with kUnavailable.
///
/// Lifetimes: a Completion and the local buffers of its ops belong to the connection from
/// post() until the wait() on it returns, whatever it returns. wait() never returns while the
/// connection may still touch either: on a timeout it breaks the connection and first makes
/// every op of the batch finish (tcp: the receiving thread fails them once shutdown() wakes
/// it; verbs: the QP goes to error and the batch's flush completions are polled).
/// What names a memserver session to take it over later (RESUME): its id and the secret
/// the memserver gave only to the session's own client.
struct SessionTicket {
  std::uint64_t session_id = 0;
  proto::Nonce resume_secret{};
};

class Connection {
 public:
  virtual ~Connection() = default;
  /// The memserver session this connection serves (set by the factory's handshake).
  const SessionTicket& ticket() const { return ticket_; }
  void set_ticket(const SessionTicket& t) { ticket_ = t; }

  virtual const Capabilities& capabilities() const = 0;
  /// "tcp://127.0.0.1:7472" etc.; used in error messages.
  virtual const std::string& peer() const = 0;

  virtual Result<std::unique_ptr<MemoryRegistration>> register_memory(void* addr,
                                                                      std::size_t length) = 0;

  /// Starts every op in `ops` (at most capabilities().max_batch_ops) and returns at once.
  /// On an error return nothing was started and `done` is untouched; otherwise `done`
  /// completes later, reported through wait().
  virtual Status post(std::span<const Op> ops, Completion& done) = 0;

  /// Drives progress until `done` completes or `timeout` passes; returns done.status(), or
  /// kTimedOut, after which the connection is broken (later ops fail with kUnavailable).
  /// Either way, once it returns nothing in the connection touches `done` or the batch's
  /// buffers again: the caller may free them. Each posted batch is waited for exactly once.
  virtual Status wait(Completion& done, std::chrono::nanoseconds timeout) = 0;

  /// A control request/reply (hello is done by the factory). A kError reply comes back as
  /// its Status.
  virtual Result<proto::Message> call(proto::Message request,
                                      std::chrono::nanoseconds timeout) = 0;

  /// Convenience: post + wait for a batch of one.
  Status execute(const Op& op, std::chrono::nanoseconds timeout) {
    Completion done;
    FARMEM_RETURN_IF_ERROR(post(std::span<const Op>(&op, 1), done));
    return wait(done, timeout);
  }

 private:
  SessionTicket ticket_;
};

/// What every factory needs besides the address.
struct ConnectOptions {
  /// The tenant's secret (or the memserver's --token for the anonymous tenant); it never
  /// crosses the wire (challenge-response, transport/proto/auth.h). Empty: the memserver
  /// must run --insecure, and a memserver that asks for a secret is refused.
  std::string token;
  /// The tenant to authenticate as (<= kMaxTenantBytes); empty: the anonymous tenant.
  std::string tenant;
  /// For tls:// URLs: the CAs the memserver's certificate must chain to (empty: the
  /// system's trust store), and this client's certificate and key when the memserver asks
  /// for one (mutual TLS). The memserver's certificate must also name the URL's host.
  net::TlsClientConfig tls;
  /// Take this earlier session over instead of starting anew (RESUME after the handshake;
  /// tcp and verbs). The connection fails with the memserver's kNotFound when it is gone.
  std::optional<SessionTicket> resume;
  /// tcp, verbs: reconnect and resume the session when the connection breaks, and PING every
  /// `heartbeat` (see transport/resume/resuming_connection.h). Off: a broken connection
  /// stays broken (the contract above).
  bool resume_on_break = false;
  std::chrono::milliseconds heartbeat{0};
  /// With resume_on_break: how long one broken connection is tried again before the access
  /// that found it broken fails (0: until that access's own deadline). A replicated pool
  /// sets its replica grace: past it another copy serves, sooner than a resume would.
  std::chrono::milliseconds resume_window{0};
  std::chrono::milliseconds connect_timeout{5000};     ///< for address resolution + handshake
  std::chrono::milliseconds control_timeout{5000};     ///< for control calls made by the factory
  /// One-sided backends check every op against the slabs leased on the connection before
  /// posting (see lease_table.h). Off only to test the memserver's own protection, as a
  /// client that is not farmem would reach it.
  bool check_leases = true;
};

/// Parsed "scheme://host:port" (or "local").
struct Endpoint {
  std::string scheme;  ///< "rdma", "tcp", "tls" (tcp with TLS) or "local"
  std::string host;
  std::uint16_t port = 0;
  std::string to_string() const;
};
Result<Endpoint> parse_endpoint(std::string_view url);

/// Control helpers shared by every backend (typed wrappers over Connection::call).
Result<proto::SlabInfo> alloc_slab(Connection& c, std::uint64_t bytes,
                                   std::chrono::nanoseconds timeout);
Status free_slab(Connection& c, std::uint64_t slab_id, std::chrono::nanoseconds timeout);
Result<proto::ServerStats> server_stats(Connection& c, std::chrono::nanoseconds timeout);
/// Names this session to the memserver's operators (SET_LABEL, at most kMaxLabelBytes).
/// A memserver older than the message answers kProtocolError.
Status set_label(Connection& c, std::string_view label, std::chrono::nanoseconds timeout);
/// This session's slabs (LIST_SLABS, page by page), in id order, with their keys now.
Result<std::vector<proto::SlabInfo>> list_slabs(Connection& c, std::chrono::nanoseconds timeout);
/// Every session open on the memserver (LIST_SESSIONS, page by page), in id order.
Result<std::vector<proto::SessionEntry>> list_sessions(Connection& c,
                                                       std::chrono::nanoseconds timeout);

/// The client's half of the handshake once the connection exists and HELLO_OK (`ok`) came
/// back for `client_nonce`: AUTH with this tenant's proof when the memserver asks for one,
/// and the check of the memserver's own proof; then RESUME when options.resume says so.
/// Sets c's ticket. kPermissionDenied when either side cannot prove the secret, or when
/// the two disagree on whether there is one (a client with a secret does not trust an
/// --insecure memserver: it might be anyone).
Status finish_handshake(Connection& c, const ConnectOptions& options, const proto::HelloOk& ok,
                        const proto::Nonce& client_nonce);
/// Checks the token and tenant sizes every factory accepts.
Status validate_credentials(const ConnectOptions& options);

/// The registration of backends that move bytes with the CPU (tcp, local, the swap file):
/// nothing to pin and no key (lkey 0). kInvalidArgument for a null or empty range.
Result<std::unique_ptr<MemoryRegistration>> plain_registration(void* addr, std::size_t length);

/// Checks an op batch against the limits every backend shares.
Status validate_ops(std::span<const Op> ops, const Capabilities& caps);

}  // namespace farmem::transport
