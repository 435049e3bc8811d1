#include "transport/proto/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>
#include <vector>

namespace farmem::proto {

namespace {
constexpr std::string_view kAuthLabel = "farmem-auth-v2";
}  // namespace

Result<Nonce> random_nonce() {
  Nonce n{};
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1) {
    return Internal("RAND_bytes failed: the OS random source is unavailable");
  }
  return n;
}

Result<Mac> auth_proof(std::string_view secret, AuthRole role, std::string_view tenant,
                       const Nonce& client, const Nonce& server, std::uint64_t session_id) {
  std::vector<std::uint8_t> msg;
  msg.reserve(kAuthLabel.size() + 1 + 2 + tenant.size() + 2 * kNonceBytes + 8);
  msg.insert(msg.end(), kAuthLabel.begin(), kAuthLabel.end());
  msg.push_back(static_cast<std::uint8_t>(role));
  const auto tlen = static_cast<std::uint16_t>(tenant.size());
  msg.push_back(static_cast<std::uint8_t>(tlen & 0xff));
  msg.push_back(static_cast<std::uint8_t>(tlen >> 8));
  msg.insert(msg.end(), tenant.begin(), tenant.end());
  msg.insert(msg.end(), client.begin(), client.end());
  msg.insert(msg.end(), server.begin(), server.end());
  for (int i = 0; i < 8; ++i) msg.push_back(static_cast<std::uint8_t>(session_id >> (8 * i)));
  Mac mac{};
  unsigned int len = 0;
  // An empty secret still needs a valid key pointer.
  static const std::uint8_t kEmpty = 0;
  const void* key = secret.empty() ? static_cast<const void*>(&kEmpty) : secret.data();
  if (HMAC(EVP_sha256(), key, static_cast<int>(secret.size()), msg.data(), msg.size(),
           mac.data(), &len) == nullptr ||
      len != mac.size()) {
    return Internal("HMAC-SHA256 failed (OpenSSL)");
  }
  return mac;
}

bool mac_equal(const Mac& a, const Mac& b) { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

}  // namespace farmem::proto
