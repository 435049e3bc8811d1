// Certificates for TLS tests, made with libcrypto at test time (nothing checked in expires):
// a CA, a server certificate and a client certificate it signed, and an unrelated CA that
// signed neither. Keys are EC P-256; certificates are valid from an hour ago (a skewed clock
// still accepts them) for kTestCertDays days. Every file is PEM; keys are unencrypted, mode
// 0600.
#pragma once

#include <string>

#include "farmem/status.h"

namespace farmem::test {

/// Days a test certificate stays valid: long enough for any test run, short enough that a
/// leaked one is worthless soon.
inline constexpr int kTestCertDays = 3;

/// The names the server certificate carries by default (subjectAltName, as in openssl.cnf).
inline constexpr const char* kTestServerNames = "IP:127.0.0.1,DNS:localhost";

/// Paths of the files make_test_certs wrote.
struct TestCerts {
  std::string dir;          ///< where they are
  std::string ca;           ///< ca.pem: the CA that signed the two certificates below
  std::string server_cert;  ///< server.pem: SAN kTestServerNames (or as asked); usable both
                            ///< to serve and as a client (etcd's gateway dials itself with it)
  std::string server_key;   ///< server-key.pem
  std::string client_cert;  ///< client.pem: CN farmem-test-client, for client authentication
  std::string client_key;   ///< client-key.pem
  std::string other_ca;     ///< other-ca.pem: an unrelated CA, which signed nothing here
};

/// Writes the files above into `dir` (which must exist; files already there are replaced);
/// the server certificate names `server_names` (a test of host verification leaves one out).
/// kInternal naming the OpenSSL step that failed, kIoError when a file cannot be written.
Result<TestCerts> make_test_certs(const std::string& dir,
                                  const std::string& server_names = kTestServerNames);

}  // namespace farmem::test
