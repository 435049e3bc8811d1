// TLS contexts: one side's certificates and verification policy (see tls.h).
#include "transport/tcp/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <memory>
#include <string>

namespace farmem::net {

namespace {
// With read-ahead, one recv() takes up to this much (about four full records).
constexpr int kReadBufferBytes = 64 * 1024;
}  // namespace

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

namespace {

struct CtxDeleter {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using CtxPtr = std::unique_ptr<SSL_CTX, CtxDeleter>;

Result<CtxPtr> new_context(bool server) {
  ERR_clear_error();
  CtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
  if (!ctx) return Internal("TLS: SSL_CTX_new failed: " + openssl_errors());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  // A peer that closes without close_notify is a closed connection (the framing above
  // detects a cut frame), not an error with its own code.
  SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
  // An idle connection gives its record buffers back (a memserver may hold thousands).
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
  // Several records per recv(); TlsSession::input_buffered() accounts for what it keeps.
  SSL_CTX_set_read_ahead(ctx.get(), 1);
  SSL_CTX_set_default_read_buffer_len(ctx.get(), kReadBufferBytes);
  // AES-128-GCM first: as safe for this use and cheaper per byte than AES-256.
  if (SSL_CTX_set_ciphersuites(ctx.get(), "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                          "TLS_CHACHA20_POLY1305_SHA256") != 1) {
    return Internal("TLS: SSL_CTX_set_ciphersuites failed: " + openssl_errors());
  }
  return ctx;
}

Status load_identity(SSL_CTX* ctx, const std::string& cert, const std::string& key,
                     std::string_view who) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    return InvalidArgument("TLS: cannot use " + std::string(who) + " certificate '" + cert +
                           "': " + openssl_errors());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return InvalidArgument("TLS: cannot use " + std::string(who) + " key '" + key +
                           "': " + openssl_errors());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return InvalidArgument("TLS: the key '" + key + "' does not match the certificate '" + cert +
                           "': " + openssl_errors());
  }
  return Status::Ok();
}

Status load_ca(SSL_CTX* ctx, const std::string& ca) {
  if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
    return InvalidArgument("TLS: cannot load the CA file '" + ca + "': " + openssl_errors());
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<const TlsContext>> TlsContext::for_server(const TlsServerConfig& config) {
  if (config.cert_file.empty() || config.key_file.empty()) {
    return InvalidArgument("TLS: a server needs both a certificate and a key file");
  }
  FARMEM_ASSIGN_OR_RETURN(CtxPtr ctx, new_context(/*server=*/true));
  FARMEM_RETURN_IF_ERROR(load_identity(ctx.get(), config.cert_file, config.key_file, "the server"));
  SSL_CTX_set_num_tickets(ctx.get(), 0);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  const bool mutual = !config.ca_file.empty();
  if (mutual) {
    FARMEM_RETURN_IF_ERROR(load_ca(ctx.get(), config.ca_file));
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(config.ca_file.c_str());
    if (names == nullptr) {
      return InvalidArgument("TLS: no CA certificate in '" + config.ca_file + "': " +
                             openssl_errors());
    }
    SSL_CTX_set_client_CA_list(ctx.get(), names);  // takes ownership
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return std::shared_ptr<const TlsContext>(new TlsContext(ctx.release(), true, mutual));
}

Result<std::shared_ptr<const TlsContext>> TlsContext::for_client(const TlsClientConfig& config) {
  if (config.cert_file.empty() != config.key_file.empty()) {
    return InvalidArgument("TLS: a client certificate needs its key, and a key its certificate");
  }
  FARMEM_ASSIGN_OR_RETURN(CtxPtr ctx, new_context(/*server=*/false));
  if (config.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
      return InvalidArgument("TLS: cannot load the system's trust store: " + openssl_errors());
    }
  } else {
    FARMEM_RETURN_IF_ERROR(load_ca(ctx.get(), config.ca_file));
  }
  if (!config.cert_file.empty()) {
    FARMEM_RETURN_IF_ERROR(
        load_identity(ctx.get(), config.cert_file, config.key_file, "the client"));
  }
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  return std::shared_ptr<const TlsContext>(new TlsContext(ctx.release(), false, false));
}

}  // namespace farmem::net
