#include "test/support/test_certs.h"

#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

namespace farmem::test {

namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(std::FILE* p) const { std::fclose(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Free>;
using Cert = std::unique_ptr<X509, Free>;

/// An hour back: a host whose clock runs a little behind still accepts a fresh certificate.
constexpr long kBackdateSeconds = 3600;
/// Serial numbers are random (a CA must not reuse one); 64 bits fit a positive ASN.1 integer.
constexpr int kSerialBits = 63;

/// kInternal naming `step` and OpenSSL's last error (its queue is cleared).
Status ssl_error(const std::string& step) {
  char buf[256] = "no OpenSSL error queued";
  if (const unsigned long e = ERR_get_error(); e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return Internal("test certificates: " + step + ": " + buf);
}

Result<Key> new_key() {
  Key k(EVP_EC_gen("P-256"));
  if (!k) return ssl_error("EC P-256 key generation");
  return k;
}

/// One X.509v3 extension written as in openssl.cnf, with `issuer` as the signer (itself for a
/// self-signed CA: then `issuer` is `cert`).
Status add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, Free> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return ssl_error(std::string("extension ") + OBJ_nid2sn(nid) + " = " + value);
  }
  return Status::Ok();
}

/// What one certificate says beyond its key.
struct Spec {
  const char* common_name;
  bool ca = false;
  const char* ext_key_usage = nullptr;  ///< "serverAuth,clientAuth"; nullptr: none (a CA)
  const char* alt_names = nullptr;      ///< subjectAltName; nullptr: none
};

/// A certificate for `key` per `spec`, signed by `issuer_key` as `issuer` (both null: itself).
Result<Cert> make_cert(EVP_PKEY* key, const Spec& spec, X509* issuer, EVP_PKEY* issuer_key) {
  Cert c(X509_new());
  if (!c) return ssl_error("X509_new");
  std::unique_ptr<BIGNUM, Free> serial(BN_new());
  if (!serial || BN_rand(serial.get(), kSerialBits, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(c.get())) == nullptr) {
    return ssl_error("serial number");
  }
  X509_NAME* name = X509_get_subject_name(c.get());
  if (X509_set_version(c.get(), 2) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(c.get()), -kBackdateSeconds) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(c.get()), kTestCertDays * 86400L) == nullptr ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(spec.common_name), -1,
                                 -1, 0) != 1 ||
      X509_set_issuer_name(c.get(),
                           issuer != nullptr ? X509_get_subject_name(issuer) : name) != 1 ||
      X509_set_pubkey(c.get(), key) != 1) {
    return ssl_error(std::string("fields of ") + spec.common_name);
  }
  X509* signer = issuer != nullptr ? issuer : c.get();
  FARMEM_RETURN_IF_ERROR(add_ext(c.get(), signer, NID_subject_key_identifier, "hash"));
  if (spec.ca) {
    FARMEM_RETURN_IF_ERROR(add_ext(c.get(), signer, NID_basic_constraints, "critical,CA:TRUE"));
    FARMEM_RETURN_IF_ERROR(add_ext(c.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign"));
  } else {
    FARMEM_RETURN_IF_ERROR(add_ext(c.get(), signer, NID_basic_constraints, "critical,CA:FALSE"));
    FARMEM_RETURN_IF_ERROR(add_ext(c.get(), signer, NID_authority_key_identifier, "keyid:always"));
    FARMEM_RETURN_IF_ERROR(add_ext(c.get(), signer, NID_key_usage, "critical,digitalSignature"));
  }
  if (spec.ext_key_usage != nullptr) {
    FARMEM_RETURN_IF_ERROR(add_ext(c.get(), signer, NID_ext_key_usage, spec.ext_key_usage));
  }
  if (spec.alt_names != nullptr) {
    FARMEM_RETURN_IF_ERROR(add_ext(c.get(), signer, NID_subject_alt_name, spec.alt_names));
  }
  if (X509_sign(c.get(), issuer_key != nullptr ? issuer_key : key, EVP_sha256()) == 0) {
    return ssl_error(std::string("signing ") + spec.common_name);
  }
  return c;
}

/// Opens `path` for writing with `mode` (created or truncated; the mode is set either way).
Result<std::unique_ptr<std::FILE, Free>> open_for_write(const std::string& path, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0 || ::fchmod(fd, mode) != 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    return IoError("test certificates: cannot write " + path + ": " + std::strerror(err));
  }
  std::unique_ptr<std::FILE, Free> f(::fdopen(fd, "w"));
  if (!f) {
    ::close(fd);
    return IoError("test certificates: fdopen " + path + " failed");
  }
  return f;
}

Status write_cert(const std::string& path, X509* cert) {
  FARMEM_ASSIGN_OR_RETURN(auto f, open_for_write(path, 0644));
  if (PEM_write_X509(f.get(), cert) != 1) return ssl_error("writing " + path);
  if (std::fclose(f.release()) != 0) return IoError("test certificates: closing " + path);
  return Status::Ok();
}

Status write_key(const std::string& path, EVP_PKEY* key) {
  FARMEM_ASSIGN_OR_RETURN(auto f, open_for_write(path, 0600));
  if (PEM_write_PrivateKey(f.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return ssl_error("writing " + path);
  }
  if (std::fclose(f.release()) != 0) return IoError("test certificates: closing " + path);
  return Status::Ok();
}

}  // namespace

Result<TestCerts> make_test_certs(const std::string& dir, const std::string& server_names) {
  const auto at = [&](const char* name) { return (std::filesystem::path(dir) / name).string(); };
  TestCerts t{dir,          at("ca.pem"),         at("server.pem"), at("server-key.pem"),
              at("client.pem"), at("client-key.pem"), at("other-ca.pem")};

  FARMEM_ASSIGN_OR_RETURN(Key ca_key, new_key());
  FARMEM_ASSIGN_OR_RETURN(Cert ca, make_cert(ca_key.get(), {"farmem test CA", true}, nullptr,
                                             nullptr));
  FARMEM_RETURN_IF_ERROR(write_cert(t.ca, ca.get()));

  // clientAuth too: etcd's JSON gateway dials etcd's own gRPC port presenting this
  // certificate, which --client-cert-auth checks like any client's.
  FARMEM_ASSIGN_OR_RETURN(Key server_key, new_key());
  FARMEM_ASSIGN_OR_RETURN(
      Cert server, make_cert(server_key.get(),
                             {"farmem test server", false, "serverAuth,clientAuth",
                              server_names.c_str()},
                             ca.get(), ca_key.get()));
  FARMEM_RETURN_IF_ERROR(write_cert(t.server_cert, server.get()));
  FARMEM_RETURN_IF_ERROR(write_key(t.server_key, server_key.get()));

  FARMEM_ASSIGN_OR_RETURN(Key client_key, new_key());
  FARMEM_ASSIGN_OR_RETURN(Cert client,
                          make_cert(client_key.get(),
                                    {"farmem-test-client", false, "clientAuth", nullptr},
                                    ca.get(), ca_key.get()));
  FARMEM_RETURN_IF_ERROR(write_cert(t.client_cert, client.get()));
  FARMEM_RETURN_IF_ERROR(write_key(t.client_key, client_key.get()));

  FARMEM_ASSIGN_OR_RETURN(Key other_key, new_key());
  FARMEM_ASSIGN_OR_RETURN(Cert other, make_cert(other_key.get(), {"farmem unrelated test CA", true},
                                                nullptr, nullptr));
  FARMEM_RETURN_IF_ERROR(write_cert(t.other_ca, other.get()));
  return t;
}

}  // namespace farmem::test
