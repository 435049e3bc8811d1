// libFuzzer target: the wire-format decoders of runtime/transport/proto/wire.h.
//
// Input: one frame as it arrives (header, payload), optionally followed by nothing; the
// whole input is what proto::decode sees, and its first 24 bytes what validate_header sees.
// Then the last 44 bytes (when there are that many) also describe a slab and an access for
// check_access, the rule every backend applies to one-sided operations.
//
// Checked: nothing crashes, aborts or throws; decode accepts exactly the frames whose header
// validates and whose size matches it, and what it accepts encodes back to the same bytes
// (but for the status field, see below); every payload decoder takes exactly its size, and a
// SLAB_LIST parses only whole with rising ids; an access check that passes lies wholly
// inside its slab with the slab's rkey.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "fuzz/fuzz_check.h"
#include "transport/proto/wire.h"

namespace farmem::proto {
namespace {

template <typename T>
void check_payload_decoder(const Message& m) {
  auto body = m.as<T>();
  FUZZ_CHECK(body.ok() == (m.payload.size() == sizeof(T)), "as<%zu bytes> of a %zu-byte payload",
             sizeof(T), m.payload.size());
}

void check_decoded(std::span<const std::byte> in, const FrameHeader& h, const Message& m) {
  FUZZ_CHECK(m.payload.size() == h.length, "payload %zu, header says %u", m.payload.size(),
             h.length);
  FUZZ_CHECK(m.req_id == h.req_id, "req_id changed");
  FUZZ_CHECK(static_cast<std::uint16_t>(m.type) == h.type, "type changed");
  FUZZ_CHECK(h.length == 0 || std::memcmp(m.payload.data(), in.data() + sizeof h, h.length) == 0,
             "payload bytes changed");
  // The status travels as a u32 but StatusCode is a u8: decode keeps the low byte (requests
  // carry 0; replies carry a StatusCode). Everything else encodes back byte for byte.
  std::vector<std::byte> expect(in.begin(), in.end());
  const std::uint32_t low = h.status & 0xFFu;
  std::memcpy(expect.data() + offsetof(FrameHeader, status), &low, sizeof low);
  FUZZ_CHECK(encode(m) == expect, "decode then encode changed the frame");

  check_payload_decoder<HelloOk>(m);
  check_payload_decoder<AllocSlab>(m);
  check_payload_decoder<SlabInfo>(m);
  check_payload_decoder<FreeSlab>(m);
  check_payload_decoder<ServerStats>(m);
  check_payload_decoder<ListSessions>(m);
  check_payload_decoder<DataOp>(m);
  check_payload_decoder<HelloRequest>(m);
  check_payload_decoder<AuthProof>(m);
  check_payload_decoder<AuthOk>(m);
  check_payload_decoder<ResumeRequest>(m);
  check_payload_decoder<ResumeOk>(m);
  check_payload_decoder<ListSlabs>(m);
  // A SLAB_LIST, as the resuming client reads one: accepted only whole, in rising id order.
  bool more = false;
  auto slabs = parse_slab_list(m.payload, h.req_id % 8, &more);
  if (slabs.ok()) {
    FUZZ_CHECK(m.payload.size() == sizeof(SlabListHead) + slabs->size() * sizeof(SlabInfo) &&
                   slabs->size() <= kMaxSlabsPerList,
               "SLAB_LIST of %zu bytes parsed as %zu entries", m.payload.size(), slabs->size());
    std::uint64_t after = h.req_id % 8;
    for (const auto& s : *slabs) {
      FUZZ_CHECK(s.slab_id > after, "SLAB_LIST ids not rising");
      after = s.slab_id;
    }
  } else {
    FUZZ_CHECK(slabs.status().code() == StatusCode::kProtocolError, "parse_slab_list: %s",
               slabs.status().to_string().c_str());
  }
  const Status st = m.error_status();
  FUZZ_CHECK(st.ok() == (m.type != MsgType::kError), "kError must give an error status");
  (void)is_request(m.type);
  (void)to_string(m.type);

  // Any text can become an error reply (a Status message, a peer's words): it must come
  // back through the wire with its code, cut at the control-payload bound.
  const std::string_view text(reinterpret_cast<const char*>(m.payload.data()), m.payload.size());
  const auto code =
      static_cast<StatusCode>(1 + h.status % static_cast<unsigned>(kLastStatusCode));
  auto back = decode(encode(Message::error(code, text, m.req_id)));
  FUZZ_CHECK(back.ok() && back->type == MsgType::kError && back->req_id == m.req_id &&
                 back->error_status().code() == code &&
                 back->payload.size() == std::min<std::size_t>(text.size(), kMaxControlPayload),
             "an error reply did not survive the wire");
}

void check_frame(std::span<const std::byte> in) {
  auto m = decode(in);
  if (in.size() < sizeof(FrameHeader)) {
    FUZZ_CHECK(!m.ok(), "decoded a %zu-byte frame", in.size());
    return;
  }
  FrameHeader h;
  std::memcpy(&h, in.data(), sizeof h);
  const Status valid = validate_header(h);
  const bool whole = in.size() - sizeof h == h.length;
  FUZZ_CHECK(m.ok() == (valid.ok() && whole), "decode %s a frame with header '%s', %s size",
             m.ok() ? "accepted" : "refused", valid.to_string().c_str(),
             whole ? "matching" : "wrong");
  if (!m.ok()) {
    FUZZ_CHECK(m.status().code() == StatusCode::kProtocolError, "decode failed with %s",
               m.status().to_string().c_str());
    return;
  }
  FUZZ_CHECK(h.length <= kMaxControlPayload ||
                 ((h.type == static_cast<std::uint16_t>(MsgType::kWrite) ||
                   h.type == static_cast<std::uint16_t>(MsgType::kReadData)) &&
                  h.length <= kMaxDataPayload + sizeof(DataOp)),
             "a %u-byte frame of type %u passed", h.length, h.type);
  check_decoded(in, h, *m);
}

// The access rule: whatever it passes lies inside the slab, with the slab's rkey; and it
// passes every such access. Its contract gives it the slab at or below `addr`.
void check_access_rule(fuzz::Reader r) {
  SlabBounds slab{};
  slab.slab_id = r.take<std::uint64_t>();
  slab.base = r.take<std::uint64_t>();
  slab.bytes = r.take<std::uint64_t>();
  slab.rkey = r.take<std::uint32_t>();
  const auto addr = r.take<std::uint64_t>();
  const auto len = r.take<std::uint32_t>();
  const auto rkey = r.take<std::uint32_t>();
  if (addr < slab.base || slab.bytes > UINT64_MAX - slab.base) return;  // not a slab there
  const Status st = check_access(&slab, addr, len, rkey);
  const unsigned __int128 end = static_cast<unsigned __int128>(addr) + len;
  const bool inside = end <= static_cast<unsigned __int128>(slab.base) + slab.bytes &&
                      addr < slab.base + slab.bytes;
  FUZZ_CHECK(st.ok() == (inside && rkey == slab.rkey), "check_access said '%s'",
             st.to_string().c_str());
  if (!st.ok()) {
    FUZZ_CHECK(st.code() == (inside ? StatusCode::kPermissionDenied : StatusCode::kOutOfRange),
               "check_access failed with %s", st.to_string().c_str());
  }
  FUZZ_CHECK(check_access(nullptr, addr, len, rkey).code() == StatusCode::kOutOfRange,
             "an access in no slab must be out of range");
}

}  // namespace
}  // namespace farmem::proto

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  farmem::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  farmem::proto::check_frame(in);
  constexpr std::size_t kAccessBytes = 44;
  if (size >= kAccessBytes) {
    farmem::proto::check_access_rule(farmem::fuzz::Reader(in.last(kAccessBytes)));
  }
  return 0;
}
