// libFuzzer target: how the memserver opens and authenticates a session, from its first
// bytes on either listener, through the parsers the listeners use
// (runtime/transport/proto/wire.h) into the Core that judges version, tenant and proof.
//
// Input: a selector byte, then the handshake bytes. Selector bit 0 clear: a TCP client's
// first frame, as memserver/tcp_session.cc reads it (check_hello_header on the first 24
// bytes, then parse_hello on the header's `length` payload bytes). Set: the private data of an
// RDMA connect request, as memserver/rdma_listener.cc hands it over (parse_connect_data).
// The next 32 input bytes after the handshake bytes are the client's AUTH proof; selector
// bit 1 set replaces them with the right proof for the anonymous tenant's secret.
//
// Checked: nothing crashes, aborts or throws; a session opens exactly when the version is
// ours; it is authenticated exactly when the proof is right for the tenant it claimed (the
// anonymous one, the only one this Core has); a refusal closes it; a parser that accepts
// returns a tenant inside the input and within kMaxTenantBytes.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "fuzz/fuzz_check.h"
#include "memserver/core.h"
#include "transport/proto/auth.h"
#include "transport/proto/wire.h"

namespace farmem {
namespace {

// The token of the Core under test; the seed corpus presents its proofs (make_corpus.cc).
constexpr std::string_view kToken = "fuzz-token-0123456789";

bool inside(std::string_view text, std::span<const std::byte> in) {
  const auto* lo = reinterpret_cast<const char*>(in.data());
  return text.empty() || (text.data() >= lo && text.data() + text.size() <= lo + in.size());
}

struct Parsed {
  proto::Hello hello;
  std::size_t used = 0;  ///< input bytes the handshake took
};

// What tcp_session.cc's handshake does with the bytes before it calls the Core.
std::optional<Parsed> tcp_hello(std::span<const std::byte> in) {
  if (in.size() < sizeof(proto::FrameHeader)) return std::nullopt;  // it waits for more
  proto::FrameHeader h;
  std::memcpy(&h, in.data(), sizeof h);
  const Status st = proto::check_hello_header(h);
  if (!st.ok()) {
    FUZZ_CHECK(st.code() == StatusCode::kProtocolError || st.code() == StatusCode::kInvalidArgument,
               "check_hello_header failed with %s", st.to_string().c_str());
    return std::nullopt;
  }
  FUZZ_CHECK(h.type == static_cast<std::uint16_t>(proto::MsgType::kHello) &&
                 h.length <= sizeof(proto::HelloRequest) + proto::kMaxTenantBytes &&
                 h.magic == proto::kMagic,
             "check_hello_header passed type %u, length %u", h.type, h.length);
  if (in.size() - sizeof h < h.length) return std::nullopt;  // it waits for the payload
  auto hello = proto::parse_hello(h.version, in.subspan(sizeof h, h.length));
  if (!hello.ok()) {
    FUZZ_CHECK(hello.status().code() == StatusCode::kProtocolError, "parse_hello: %s",
               hello.status().to_string().c_str());
    return std::nullopt;
  }
  return Parsed{*hello, sizeof h + h.length};
}

std::optional<Parsed> rdma_hello(std::span<const std::byte> in) {
  // rdma_cm hands over at most 56 bytes (zero-padded on IB/RoCE).
  in = in.first(std::min<std::size_t>(in.size(), 56));
  auto hello = proto::parse_connect_data(in);
  if (!hello.ok()) {
    FUZZ_CHECK(hello.status().code() == StatusCode::kProtocolError, "parse_connect_data: %s",
               hello.status().to_string().c_str());
    return std::nullopt;
  }
  proto::ConnectData cd;
  FUZZ_CHECK(in.size() >= sizeof cd, "accepted %zu bytes of connect data", in.size());
  std::memcpy(&cd, in.data(), sizeof cd);
  FUZZ_CHECK(cd.magic == proto::kMagic && hello->version == cd.version &&
                 hello->tenant.size() == cd.tenant_len &&
                 hello->tenant.data() ==
                     reinterpret_cast<const char*>(in.data()) + sizeof cd + proto::kNonceBytes &&
                 std::memcmp(hello->client_nonce.data(), in.data() + sizeof cd,
                             proto::kNonceBytes) == 0,
             "parse_connect_data returned something else than the data says");
  return Parsed{*hello, in.size()};
}

}  // namespace
}  // namespace farmem

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  farmem::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace farmem;
  if (size == 0) return 0;
  const bool rdma = (data[0] & 1) != 0;
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data) + 1, size - 1);
  const bool right_proof = (data[0] & 2) != 0;
  const auto parsed = rdma ? rdma_hello(in) : tcp_hello(in);
  if (!parsed) return 0;
  const proto::Hello& hello = parsed->hello;
  FUZZ_CHECK(hello.tenant.size() <= proto::kMaxTenantBytes && inside(hello.tenant, in),
             "a tenant name of %zu bytes outside the input", hello.tenant.size());

  // A small pool: the handshake leases nothing, and a Core per input keeps inputs apart.
  memserver::Core core({.capacity_bytes = 1 << 20,
                        .chunk_bytes = 4096,
                        .token = std::string(kToken),
                        .tenants = {},
                        .numa_node = -1});
  auto session = core.open_session(hello, rdma ? "fuzz-rdma" : "fuzz-tcp");
  FUZZ_CHECK(session.ok() == (hello.version == proto::kVersion), "open_session: %s (version %u)",
             session.status().to_string().c_str(), hello.version);
  if (!session.ok()) {
    FUZZ_CHECK(session.status().code() == StatusCode::kProtocolError,
               "open_session failed with %s", session.status().to_string().c_str());
    FUZZ_CHECK(core.stats().sessions == 0 && core.stats().errors == 1, "a refusal counts");
    return 0;
  }
  FUZZ_CHECK(core.stats().sessions == 1 && !(*session)->authenticated(),
             "one session open, not authenticated yet");
  const proto::HelloOk ok = core.hello_reply(**session);
  const proto::Mac expected = *proto::auth_proof(kToken, proto::AuthRole::kClient, hello.tenant,
                                                 hello.client_nonce, ok.server_nonce, ok.session_id);
  proto::Message auth;
  auth.type = proto::MsgType::kAuth;
  const auto rest = in.subspan(std::min(parsed->used, in.size()));
  if (right_proof) {
    auth = proto::Message::of(proto::MsgType::kAuth, proto::AuthProof{expected});
  } else {
    auth.payload.assign(rest.begin(), rest.begin() + std::min<std::size_t>(rest.size(), 40));
  }
  const proto::Message reply = core.handle(**session, auth);
  const bool good = auth.payload.size() == sizeof(proto::AuthProof) &&
                    std::memcmp(auth.payload.data(), expected.data(), expected.size()) == 0 &&
                    hello.tenant.empty();
  FUZZ_CHECK((reply.type == proto::MsgType::kAuthOk) == good &&
                 (*session)->authenticated() == good,
             "AUTH answered %s for a %s proof", std::string(proto::to_string(reply.type)).c_str(),
             good ? "right" : "wrong");
  FUZZ_CHECK(core.stats().sessions == (good ? 1u : 0u), "a refused AUTH closes the session");
  FUZZ_CHECK(core.auth_failures() == (good ? 0u : 1u), "a refused AUTH counts");
  core.close_session(**session);
  FUZZ_CHECK(core.stats().sessions == 0, "the session closed");
  return 0;
}
