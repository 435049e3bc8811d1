// TLS for the tcp transport and the memserver's TCP listener (OpenSSL libssl).
//
// A TlsContext holds one side's certificates and verification policy; it is immutable once
// made and shared by every connection of that side. A TlsSession is TLS on one connected
// socket: made by a handshake bounded by a deadline, then used through net::Channel
// (socket.h), so the code that frames requests and replies is the same with and without TLS.
//
// Policy, with no switch to weaken it:
// - TLS 1.2 or newer.
// - A client always verifies the server: its chain against the CA file (or the system's trust
//   store when none is given) and its name against the host of the URL (a DNS name, or an IP
//   address that must be in the certificate's subjectAltName).
// - A server given a CA file requires every client to present a certificate signed by it
//   (mutual TLS); without one, clients are not asked for certificates.
// - No session tickets: a farmem connection lives long, and resuming a TLS session would save
//   one round trip per reconnect at the cost of keys kept in memory.
//
// I/O: the session's socket BIO sends with MSG_NOSIGNAL (a vanished peer is an error, never
// SIGPIPE) and never blocks: `block` in recv_some/send_some waits in poll() for at most the
// socket's SO_RCVTIMEO/SO_SNDTIMEO (none set: as long as it takes), as the plain calls do.
// The socket's O_NONBLOCK flag is left as it was.
//
// Sending encrypts up to 256 KiB of the caller's bytes into records (small pieces gathered
// into 16 KiB ones) and sends them with one send(); the bytes are reported sent only once
// all of those records are in the kernel. Records the socket could not take stay queued,
// and the next send_some (which, as every caller does, passes the same bytes again) sends
// them first. So "bytes returned" means what it means for a plain socket: the caller may
// reuse them, and every byte it was told about has left.
//
// Receiving reads ahead (up to 64 KiB a recv()): decrypted or undecrypted bytes may wait in
// the session when the socket shows nothing, which input_buffered() (and so wait_ready)
// reports.
//
// Thread safety: one thread may receive while another sends (the tcp client's leader and a
// poster do); the SSL object is used under a mutex, and no call waits while holding it.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/status.h"
#include "transport/tcp/socket.h"

struct ssl_st;
struct ssl_ctx_st;

namespace farmem::net {

struct TlsServerConfig {
  std::string cert_file;  ///< PEM: the server's certificate, then any intermediates
  std::string key_file;   ///< PEM: its private key
  /// PEM: when set, every client must present a certificate signed by one of these CAs.
  std::string ca_file;
};

struct TlsClientConfig {
  /// PEM: the CAs a server's certificate must chain to (empty: the system's trust store).
  std::string ca_file;
  /// PEM: presented when the server asks for one (mutual TLS); both or neither.
  std::string cert_file;
  std::string key_file;
};

/// Every error OpenSSL queued on this thread, oldest first, as one line (reasons only); the
/// queue is emptied.
std::string openssl_errors();

class TlsContext {
 public:
  /// kInvalidArgument naming the file and OpenSSL's reason when a file is missing, unreadable
  /// or does not match its key.
  static Result<std::shared_ptr<const TlsContext>> for_server(const TlsServerConfig& config);
  static Result<std::shared_ptr<const TlsContext>> for_client(const TlsClientConfig& config);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  bool is_server() const { return server_; }
  bool requires_client_cert() const { return require_client_cert_; }
  ssl_ctx_st* native() const { return ctx_; }

 private:
  TlsContext(ssl_ctx_st* ctx, bool server, bool require_client_cert)
      : ctx_(ctx), server_(server), require_client_cert_(require_client_cert) {}
  ssl_ctx_st* ctx_;
  bool server_;
  bool require_client_cert_;
};

class TlsSession {
 public:
  /// The server's half of the handshake on `fd` (a connected socket the caller keeps open
  /// while the session lives), finished by `deadline`. kPermissionDenied when the client's
  /// certificate is missing or refused; kProtocolError when the peer does not speak TLS;
  /// kTimedOut; kUnavailable when the connection ends.
  static Result<std::unique_ptr<TlsSession>> accept(const TlsContext& ctx, int fd,
                                                    Deadline deadline, std::string_view peer);
  /// The client's half: `host` (from the URL) is the name the server's certificate must
  /// carry, and the SNI sent when it is a DNS name. kPermissionDenied when the server's
  /// certificate is refused (the reason says why) or it refuses ours. kProtocolError when
  /// the server answers with something that is not TLS; its first bytes (at most
  /// kHeadBytes, the rest is still in the socket) then go to `not_tls` when given.
  static Result<std::unique_ptr<TlsSession>> connect(const TlsContext& ctx, int fd,
                                                     const std::string& host, Deadline deadline,
                                                     std::string_view peer,
                                                     std::vector<std::byte>* not_tls = nullptr);
  static constexpr std::size_t kHeadBytes = 4096;
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  /// As net::recv_some: decrypted bytes into `iov`, as many as are here without waiting once
  /// some arrived.
  Result<IoResult> recv_some(std::span<const iovec> iov, bool block, std::string_view peer)
      FARMEM_EXCLUDES(mu_);
  /// As net::send_some (see the header comment on staged records).
  Result<IoResult> send_some(std::span<const iovec> iov, bool block, std::string_view peer)
      FARMEM_EXCLUDES(mu_);
  /// Decrypted bytes are waiting here that the socket's readiness does not show.
  bool input_buffered() FARMEM_EXCLUDES(mu_);
  /// Frees the send staging buffer while nothing is staged (an idle connection).
  void trim() FARMEM_EXCLUDES(mu_);
  /// Sends close_notify if the socket takes it now (best effort, never waits).
  void notify_close() FARMEM_EXCLUDES(mu_);
  /// "TLSv1.3 TLS_AES_256_GCM_SHA384", for logs.
  std::string description() FARMEM_EXCLUDES(mu_);

 public:
  struct Io;  // the BIO's state (tls.cc)

 private:
  TlsSession(int fd, ssl_st* ssl, std::unique_ptr<Io> io);
  static Result<std::unique_ptr<TlsSession>> handshake(const TlsContext& ctx, int fd,
                                                       const std::string* host,
                                                       Deadline deadline, std::string_view peer,
                                                       std::vector<std::byte>* not_tls);
  /// One pass of SSL_read over `iov` without waiting.
  Result<IoResult> read_now(std::span<const iovec> iov, std::string_view peer)
      FARMEM_EXCLUDES(mu_);
  Status error_locked(int rc, std::string_view what, std::string_view peer)
      FARMEM_REQUIRES(mu_);
  /// Sends the records queued in io_->out without waiting; true when none is left.
  Result<bool> send_out_locked(std::string_view peer) FARMEM_REQUIRES(mu_);

  const int fd_;
  Mutex mu_;
  ssl_st* const ssl_ FARMEM_PT_GUARDED_BY(mu_);
  const std::unique_ptr<Io> io_;
  std::unique_ptr<std::byte[]> staged_ FARMEM_GUARDED_BY(mu_);  ///< gathers small pieces
  /// Plaintext bytes (the leading bytes of the caller's iov) whose records wait in io_->out.
  std::size_t out_plain_ FARMEM_GUARDED_BY(mu_) = 0;
  /// The last read found the socket empty (see input_buffered()).
  bool drained_ FARMEM_GUARDED_BY(mu_) = false;
};

}  // namespace farmem::net
