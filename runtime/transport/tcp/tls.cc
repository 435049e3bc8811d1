#include "transport/tcp/tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

namespace farmem::net {

namespace {

// The largest TLS record's plaintext: small pieces of a send are gathered up to this.
constexpr std::size_t kRecordBytes = 16 * 1024;
// Plaintext encrypted ahead of one send(): records leave in batches, one syscall for up to
// 16 of them, as a plain writev would move them.
constexpr std::size_t kBatchBytes = 256 * 1024;

bool is_ip_literal(const std::string& host) {
  in6_addr a6{};
  in_addr a4{};
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

// How long a blocking call may wait: the socket's SO_RCVTIMEO or SO_SNDTIMEO.
Deadline socket_deadline(int fd, int opt) {
  timeval tv{};
  socklen_t len = sizeof tv;
  if (getsockopt(fd, SOL_SOCKET, opt, &tv, &len) != 0 || (tv.tv_sec == 0 && tv.tv_usec == 0)) {
    return kNoDeadline;
  }
  return deadline_after(std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec));
}

}  // namespace

std::string openssl_errors() {
  std::string text;
  // Bounded: OpenSSL's per-thread error queue holds at most 16 entries.
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    const char* reason = ERR_reason_error_string(e);
    if (!text.empty()) text += "; ";
    text += reason != nullptr ? reason : buf;
  }
  return text.empty() ? std::string("no detail from OpenSSL") : text;
}

// ---------------------------------------------------------------------------------------
// The socket BIO: recv/send that never block and never raise SIGPIPE.

struct TlsSession::Io {
  int fd = -1;
  int last_errno = 0;
  // The first bytes received, kept during the handshake: when they are not TLS, the caller
  // may make sense of them (a plain farmem error frame).
  bool capture = true;
  std::vector<std::byte> head;
  // After the handshake the BIO does not send: records collect in `out` (from out_sent on)
  // and TlsSession sends them, many at once.
  bool buffer_writes = false;
  std::vector<std::byte> out;
  std::size_t out_sent = 0;
};

namespace {

int bio_write(BIO* b, const char* data, int len) {
  auto* io = static_cast<TlsSession::Io*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  if (io->buffer_writes) {
    const auto* p = reinterpret_cast<const std::byte*>(data);
    io->out.insert(io->out.end(), p, p + len);
    return len;
  }
  for (;;) {
    const ssize_t n = ::send(io->fd, data, static_cast<std::size_t>(len),
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<int>(n);
    if (errno == EINTR) continue;
    io->last_errno = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(b);
    return -1;
  }
}

int bio_read(BIO* b, char* data, int len) {
  auto* io = static_cast<TlsSession::Io*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  for (;;) {
    const ssize_t n = ::recv(io->fd, data, static_cast<std::size_t>(len), MSG_DONTWAIT);
    if (n > 0 && io->capture && io->head.size() < TlsSession::kHeadBytes) {
      const auto* p = reinterpret_cast<const std::byte*>(data);
      io->head.insert(io->head.end(), p,
                      p + std::min<std::size_t>(static_cast<std::size_t>(n),
                                                TlsSession::kHeadBytes - io->head.size()));
    }
    if (n >= 0) return static_cast<int>(n);
    if (errno == EINTR) continue;
    io->last_errno = errno;
    if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(b);
    return -1;
  }
}

long bio_ctrl(BIO* /*b*/, int cmd, long /*num*/, void* /*ptr*/) {
  // Only a flush means anything to an unbuffered socket; it has nothing to do.
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

const BIO_METHOD* socket_method() {
  // Made once (thread-safe static initialisation) and kept for the process.
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "farmem socket");
    if (m != nullptr) {
      BIO_meth_set_write(m, bio_write);
      BIO_meth_set_read(m, bio_read);
      BIO_meth_set_ctrl(m, bio_ctrl);
      BIO_meth_set_create(m, bio_create);
    }
    return m;
  }();
  return method;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Sessions

TlsSession::TlsSession(int fd, SSL* ssl, std::unique_ptr<Io> io)
    : fd_(fd), ssl_(ssl), io_(std::move(io)) {}

TlsSession::~TlsSession() { SSL_free(ssl_); }

Result<std::unique_ptr<TlsSession>> TlsSession::accept(const TlsContext& ctx, int fd,
                                                       Deadline deadline,
                                                       std::string_view peer) {
  if (!ctx.is_server()) return InvalidArgument("TLS: accept() needs a server context");
  return handshake(ctx, fd, nullptr, deadline, peer, nullptr);
}

Result<std::unique_ptr<TlsSession>> TlsSession::connect(const TlsContext& ctx, int fd,
                                                        const std::string& host,
                                                        Deadline deadline, std::string_view peer,
                                                        std::vector<std::byte>* not_tls) {
  if (ctx.is_server()) return InvalidArgument("TLS: connect() needs a client context");
  return handshake(ctx, fd, &host, deadline, peer, not_tls);
}

Result<std::unique_ptr<TlsSession>> TlsSession::handshake(const TlsContext& ctx, int fd,
                                                          const std::string* host,
                                                          Deadline deadline,
                                                          std::string_view peer,
                                                          std::vector<std::byte>* not_tls) {
  const BIO_METHOD* method = socket_method();
  if (method == nullptr) return Internal("TLS: BIO_meth_new failed");
  ERR_clear_error();
  SSL* raw = SSL_new(ctx.native());
  if (raw == nullptr) return Internal("TLS: SSL_new failed: " + openssl_errors());
  auto io = std::make_unique<Io>();
  io->fd = fd;
  BIO* bio = BIO_new(method);
  if (bio == nullptr) {
    SSL_free(raw);
    return Internal("TLS: BIO_new failed: " + openssl_errors());
  }
  BIO_set_data(bio, io.get());
  SSL_set_bio(raw, bio, bio);  // the SSL owns the BIO (once, for both directions)
  std::unique_ptr<TlsSession> s(new TlsSession(fd, raw, std::move(io)));

  MutexLock lock(s->mu_);
  if (host != nullptr) {
    // The server's certificate must name the host of the URL.
    X509_VERIFY_PARAM* param = SSL_get0_param(s->ssl_);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const bool ok = is_ip_literal(*host)
                        ? X509_VERIFY_PARAM_set1_ip_asc(param, host->c_str()) == 1
                        : (X509_VERIFY_PARAM_set1_host(param, host->c_str(), 0) == 1 &&
                           SSL_set_tlsext_host_name(s->ssl_, host->c_str()) == 1);
    if (!ok) return InvalidArgument(with_peer(peer, "TLS: bad host name '" + *host + "'"));
    SSL_set_connect_state(s->ssl_);
  } else {
    SSL_set_accept_state(s->ssl_);
  }
  // Bounded by the deadline: every round either finishes, fails, or waits until then.
  for (;;) {
    ERR_clear_error();
    s->io_->last_errno = 0;
    const int rc = SSL_do_handshake(s->ssl_);
    if (rc == 1) {
      s->io_->capture = false;
      std::vector<std::byte>().swap(s->io_->head);
      s->io_->buffer_writes = true;
      return s;
    }
    const int err = SSL_get_error(s->ssl_, rc);
    short events = 0;
    if (err == SSL_ERROR_WANT_READ) events = POLLIN;
    if (err == SSL_ERROR_WANT_WRITE) events = POLLOUT;
    if (events == 0) {
      Status st = s->error_locked(rc, "TLS handshake", peer);
      if (not_tls != nullptr && st.code() == StatusCode::kProtocolError) {
        *not_tls = std::move(s->io_->head);
      }
      return st;
    }
    auto ready = wait_ready(fd, events, deadline, peer);
    if (!ready.ok()) {
      if (ready.status().code() == StatusCode::kTimedOut) {
        return TimedOut(with_peer(peer, "TLS handshake not finished before the deadline"));
      }
      return ready.status();
    }
  }
}

Status TlsSession::error_locked(int rc, std::string_view what, std::string_view peer) {
  const int err = SSL_get_error(ssl_, rc);
  const bool server = SSL_is_server(ssl_) == 1;
  if (err == SSL_ERROR_SYSCALL) {
    const int e = io_->last_errno;
    const std::string detail = ERR_peek_error() != 0 ? ": " + openssl_errors() : "";
    if (e == 0) return Unavailable(with_peer(peer, std::string(what) + ": connection closed" + detail));
    return errno_status(e, std::string(what) + detail, peer);
  }
  if (err == SSL_ERROR_ZERO_RETURN) {
    return Unavailable(with_peer(peer, std::string(what) + ": connection closed by the peer"));
  }
  // SSL_ERROR_SSL: a protocol or certificate failure.
  const unsigned long first = ERR_peek_error();
  const int reason = ERR_GET_REASON(first);
  const long verify = SSL_get_verify_result(ssl_);
  std::string text = openssl_errors();
  if (!server && verify != X509_V_OK) {
    return PermissionDenied(with_peer(
        peer, std::string(what) + ": the server's certificate was refused: " +
                  X509_verify_cert_error_string(verify)));
  }
  if (server && verify != X509_V_OK) {
    return PermissionDenied(with_peer(
        peer, std::string(what) + ": the client's certificate was refused: " +
                  X509_verify_cert_error_string(verify)));
  }
  if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
      reason == SSL_R_RECORD_LENGTH_MISMATCH || reason == SSL_R_HTTP_REQUEST ||
      reason == SSL_R_UNKNOWN_PROTOCOL) {
    return ProtocolError(with_peer(
        peer, std::string(what) + ": the peer does not speak TLS (" + text + ")" +
                  (server ? "" : "; is it a plain tcp:// memserver?")));
  }
  if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    return PermissionDenied(
        with_peer(peer, std::string(what) + ": the client presented no certificate (" + text +
                            "); this server requires one"));
  }
  if (ERR_GET_LIB(first) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET) {
    // An alert from the peer: it refused us (our certificate, or none).
    return PermissionDenied(with_peer(peer, std::string(what) + ": refused by the peer (" +
                                                text + ")"));
  }
  return ProtocolError(with_peer(peer, std::string(what) + " failed: " + text));
}

Result<IoResult> TlsSession::recv_some(std::span<const iovec> iov, bool block,
                                       std::string_view peer) {
  const Deadline deadline = block ? socket_deadline(fd_, SO_RCVTIMEO) : Deadline{};
  // Bounded: a blocking call waits once (until the socket's timeout) and then returns.
  for (bool waited = false;; waited = true) {
    FARMEM_ASSIGN_OR_RETURN(IoResult r, read_now(iov, peer));
    if (!r.would_block || !block || waited) return r;
    auto ready = wait_ready(fd_, POLLIN, deadline, peer);
    if (!ready.ok() && ready.status().code() != StatusCode::kTimedOut) return ready.status();
    if (!ready.ok()) return r;
  }
}

Result<IoResult> TlsSession::read_now(std::span<const iovec> iov, std::string_view peer) {
  MutexLock lock(mu_);
  drained_ = false;  // until SSL_read asks for more: the iov may fill first
  std::size_t total = 0;
  for (const iovec& seg : iov) {
    std::size_t off = 0;
    // Bounded by the segment's length: every round moves bytes or returns.
    while (off < seg.iov_len) {
      ERR_clear_error();
      io_->last_errno = 0;
      std::size_t got = 0;
      const int rc = SSL_read_ex(ssl_, static_cast<std::byte*>(seg.iov_base) + off,
                                 seg.iov_len - off, &got);
      if (rc == 1) {
        off += got;
        total += got;
        continue;
      }
      const int err = SSL_get_error(ssl_, rc);
      const bool want = err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE;
      // The socket is empty and whatever OpenSSL holds is less than a record: from now on,
      // the socket's readiness tells when there is more.
      if (want) drained_ = true;
      if (out_plain_ == 0) (void)send_out_locked(peer);  // protocol replies (e.g. alerts)
      // Bytes already received go to the caller first; an EOF or error comes with the next
      // call (OpenSSL reports it again).
      if (total > 0) return IoResult{total, false, false};
      if (want) return IoResult{0, true, false};
      if (err == SSL_ERROR_ZERO_RETURN) return IoResult{0, false, true};
      return error_locked(rc, "recv (TLS)", peer);
    }
  }
  return IoResult{total, false, false};
}

Result<bool> TlsSession::send_out_locked(std::string_view peer) {
  Io& io = *io_;
  // Bounded: every round sends bytes or returns.
  while (io.out_sent < io.out.size()) {
    const ssize_t n = ::send(fd_, io.out.data() + io.out_sent, io.out.size() - io.out_sent,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      io.out_sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    return errno_status(n < 0 ? errno : EPIPE, "send (TLS)", peer);
  }
  io.out.clear();
  io.out_sent = 0;
  return true;
}

Result<IoResult> TlsSession::send_some(std::span<const iovec> iov, bool block,
                                       std::string_view peer) {
  const Deadline deadline = block ? socket_deadline(fd_, SO_SNDTIMEO) : Deadline{};
  std::size_t sent = 0;  // bytes of iov reported sent
  std::size_t i = 0;     // the next byte to encrypt: iov[i], at offset off
  std::size_t off = 0;
  const auto advance = [&](std::size_t n) {
    // Bounded by the iov's length.
    while (n > 0 && i < iov.size()) {
      const std::size_t k = std::min(iov[i].iov_len - off, n);
      n -= k;
      off += k;
      if (off == iov[i].iov_len) {
        ++i;
        off = 0;
      }
    }
  };
  {
    // Records the last call encrypted but could not send hold the first bytes of `iov`,
    // which the caller passed again.
    MutexLock lock(mu_);
    advance(out_plain_);
  }
  // Bounded: every round encrypts and sends up to kBatchBytes of the caller's bytes, or
  // returns, or (blocking, once) waits for the socket.
  for (bool waited = false;;) {
    {
      MutexLock lock(mu_);
      if (io_->out.empty()) {
        if (!staged_) staged_ = std::make_unique_for_overwrite<std::byte[]>(kRecordBytes);
        // Gather up to a record's worth of the caller's pieces, encrypt it into `out`.
        while (out_plain_ < kBatchBytes && i < iov.size()) {
          std::size_t n = 0;
          while (i < iov.size() && n < kRecordBytes) {
            const std::size_t k = std::min(iov[i].iov_len - off, kRecordBytes - n);
            std::memcpy(staged_.get() + n, static_cast<const std::byte*>(iov[i].iov_base) + off, k);
            n += k;
            advance(k);
          }
          if (n == 0) break;
          ERR_clear_error();
          std::size_t written = 0;
          const int rc = SSL_write_ex(ssl_, staged_.get(), n, &written);
          if (rc != 1) {
            // Writing into memory cannot block: the session is broken.
            if (sent > 0) return IoResult{sent, false, false};  // the error comes next time
            return error_locked(rc, "send (TLS)", peer);
          }
          out_plain_ += n;
        }
        if (io_->out.empty()) return IoResult{sent, false, false};  // nothing left to send
      }
      FARMEM_ASSIGN_OR_RETURN(const bool all_out, send_out_locked(peer));
      if (all_out) {
        sent += out_plain_;
        out_plain_ = 0;
        continue;
      }
      if (sent > 0) return IoResult{sent, false, false};
      if (!block || waited) return IoResult{0, true, false};
    }
    waited = true;
    auto ready = wait_ready(fd_, POLLOUT, deadline, peer);
    if (!ready.ok() && ready.status().code() != StatusCode::kTimedOut) return ready.status();
    if (!ready.ok()) return IoResult{0, true, false};
  }
}

bool TlsSession::input_buffered() {
  MutexLock lock(mu_);
  // Bytes OpenSSL read ahead count only until a read found the socket empty: after that,
  // what it holds is part of a record whose rest the socket will announce.
  return !drained_ && (SSL_pending(ssl_) > 0 || SSL_has_pending(ssl_) == 1);
}

void TlsSession::trim() {
  MutexLock lock(mu_);
  staged_.reset();
  if (io_->out.empty()) std::vector<std::byte>().swap(io_->out);
}

void TlsSession::notify_close() {
  MutexLock lock(mu_);
  ERR_clear_error();
  (void)SSL_shutdown(ssl_);  // the alert follows any records still queued in `out`
  ERR_clear_error();
  (void)send_out_locked("");
}

std::string TlsSession::description() {
  MutexLock lock(mu_);
  return std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_);
}

}  // namespace farmem::net
