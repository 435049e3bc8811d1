// Challenge-response authentication of a client session (both ends prove they hold the
// tenant's secret; the secret itself never crosses the wire).
//
//   client                                         memserver
//   HELLO / rdma connect: version, tenant, Nc  -->
//                                              <-- HELLO_OK / rdma accept: session id, Ns,
//                                                  flags (kHelloAuthRequired)
//   AUTH: HMAC(secret, "C" | ...)              -->  checked in constant time
//                                              <-- AUTH_OK: HMAC(secret, "S" | ...)
//                                                  (the client checks it: a memserver that
//                                                  does not know the secret is refused too)
//
// Both MACs are HMAC-SHA256 over kAuthLabel, the role byte, the tenant name (length-prefixed),
// both 16-byte nonces and the session id: a captured AUTH is useless on another connection
// (another Ns), and one side's proof cannot be reflected as the other's (the role byte).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "farmem/status.h"

namespace farmem::proto {

inline constexpr std::size_t kNonceBytes = 16;
inline constexpr std::size_t kMacBytes = 32;
using Nonce = std::array<std::uint8_t, kNonceBytes>;
using Mac = std::array<std::uint8_t, kMacBytes>;

enum class AuthRole : std::uint8_t { kClient = 'C', kServer = 'S' };

/// A fresh nonce from the OS's CSPRNG (OpenSSL RAND_bytes); kInternal if it has none.
Result<Nonce> random_nonce();

/// HMAC-SHA256(secret, kAuthLabel | role | u16 len(tenant) | tenant | client | server |
/// session_id as 8 little-endian bytes). kInternal only if OpenSSL fails.
Result<Mac> auth_proof(std::string_view secret, AuthRole role, std::string_view tenant,
                       const Nonce& client, const Nonce& server, std::uint64_t session_id);

/// Compares in constant time (CRYPTO_memcmp).
bool mac_equal(const Mac& a, const Mac& b);

}  // namespace farmem::proto
