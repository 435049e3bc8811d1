// libFuzzer target: how the memserver opens a session, from its first bytes on either
// listener, through the parsers the listeners use (runtime/transport/proto/wire.h) into the
// Core that judges version and token.
//
// Input: a selector byte, then the handshake bytes. Selector even: a TCP client's first
// frame, as memserver/tcp_session.cc reads it (check_hello_header on the first 24 bytes, then
// the token is the header's `length` payload bytes). Selector odd: the private data of an
// RDMA connect request, as memserver/rdma_listener.cc hands it over (parse_connect_data).
//
// Checked: nothing crashes, aborts or throws; a session opens exactly when the version is
// ours and the token equals the Core's, byte for byte and length for length; a parser that
// accepts returns a token inside the input and within kMaxTokenBytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "fuzz/fuzz_check.h"
#include "memserver/core.h"
#include "transport/proto/wire.h"

namespace farmem {
namespace {

// The token of the Core under test; the seed corpus presents it (test/fuzz/make_corpus.cc).
constexpr std::string_view kToken = "fuzz-token-0123456789";

bool inside(std::string_view token, std::span<const std::byte> in) {
  const auto* lo = reinterpret_cast<const char*>(in.data());
  return token.empty() || (token.data() >= lo && token.data() + token.size() <= lo + in.size());
}

// What tcp_session.cc's handshake does with the bytes before it calls the Core.
std::optional<proto::Hello> tcp_hello(std::span<const std::byte> in) {
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
                 h.length <= proto::kMaxTokenBytes && h.magic == proto::kMagic,
             "check_hello_header passed type %u, length %u", h.type, h.length);
  if (in.size() - sizeof h < h.length) return std::nullopt;  // it waits for the token
  return proto::Hello{
      h.version, std::string_view(reinterpret_cast<const char*>(in.data()) + sizeof h, h.length)};
}

std::optional<proto::Hello> rdma_hello(std::span<const std::byte> in) {
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
                 hello->token.size() == cd.token_len &&
                 hello->token.data() == reinterpret_cast<const char*>(in.data()) + sizeof cd,
             "parse_connect_data returned something else than the data says");
  return *hello;
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
  const auto hello = rdma ? rdma_hello(in) : tcp_hello(in);
  if (!hello) return 0;
  FUZZ_CHECK(hello->token.size() <= proto::kMaxTokenBytes && inside(hello->token, in),
             "a token of %zu bytes outside the input", hello->token.size());

  // A small pool: the handshake leases nothing, and a Core per input keeps inputs apart.
  memserver::Core core({.capacity_bytes = 1 << 20,
                        .chunk_bytes = 4096,
                        .token = std::string(kToken),
                        .numa_node = -1});
  auto session = core.open_session(hello->version, hello->token, rdma ? "fuzz-rdma" : "fuzz-tcp");
  const bool should = hello->version == proto::kVersion && hello->token == kToken;
  FUZZ_CHECK(session.ok() == should, "open_session: %s (version %u, %zu-byte token)",
             session.status().to_string().c_str(), hello->version, hello->token.size());
  if (!session.ok()) {
    const auto code = session.status().code();
    FUZZ_CHECK(code == (hello->version != proto::kVersion ? StatusCode::kProtocolError
                                                          : StatusCode::kPermissionDenied),
               "open_session failed with %s", session.status().to_string().c_str());
    FUZZ_CHECK(core.stats().sessions == 0 && core.stats().errors == 1, "a refusal counts");
    return 0;
  }
  FUZZ_CHECK(core.stats().sessions == 1, "one session open");
  core.close_session(**session);
  FUZZ_CHECK(core.stats().sessions == 0, "the session closed");
  return 0;
}
