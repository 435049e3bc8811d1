#include "transport/proto/wire.h"

#include <algorithm>

namespace farmem::proto {

bool is_request(MsgType t) {
  switch (t) {
    case MsgType::kHello:
    case MsgType::kAllocSlab:
    case MsgType::kFreeSlab:
    case MsgType::kStats:
    case MsgType::kSetLabel:
    case MsgType::kListSessions:
    case MsgType::kAuth:
    case MsgType::kResume:
    case MsgType::kPing:
    case MsgType::kBye:
    case MsgType::kListSlabs:
    case MsgType::kRead:
    case MsgType::kWrite:
      return true;
    default:
      return false;
  }
}

std::string_view to_string(MsgType t) {
  switch (t) {
    case MsgType::kHello: return "HELLO";
    case MsgType::kHelloOk: return "HELLO_OK";
    case MsgType::kAllocSlab: return "ALLOC_SLAB";
    case MsgType::kSlabInfo: return "SLAB_INFO";
    case MsgType::kFreeSlab: return "FREE_SLAB";
    case MsgType::kFreeOk: return "FREE_OK";
    case MsgType::kStats: return "STATS";
    case MsgType::kStatsReply: return "STATS_REPLY";
    case MsgType::kError: return "ERROR";
    case MsgType::kRead: return "READ";
    case MsgType::kReadData: return "READ_DATA";
    case MsgType::kWrite: return "WRITE";
    case MsgType::kWriteOk: return "WRITE_OK";
    case MsgType::kSetLabel: return "SET_LABEL";
    case MsgType::kLabelOk: return "LABEL_OK";
    case MsgType::kListSessions: return "LIST_SESSIONS";
    case MsgType::kSessionList: return "SESSION_LIST";
    case MsgType::kAuth: return "AUTH";
    case MsgType::kAuthOk: return "AUTH_OK";
    case MsgType::kResume: return "RESUME";
    case MsgType::kResumeOk: return "RESUME_OK";
    case MsgType::kPing: return "PING";
    case MsgType::kPong: return "PONG";
    case MsgType::kBye: return "BYE";
    case MsgType::kListSlabs: return "LIST_SLABS";
    case MsgType::kSlabList: return "SLAB_LIST";
  }
  return "UNKNOWN";
}

Message Message::error(StatusCode code, std::string_view text, std::uint64_t req_id) {
  Message m;
  m.type = MsgType::kError;
  m.req_id = req_id;
  m.status = code;
  // assign, not resize + memcpy: an empty text leaves payload.data() null, and memcpy from
  // or to null is undefined even for 0 bytes (UBSan stops there; fuzz_wire found it).
  const auto* bytes = reinterpret_cast<const std::byte*>(text.data());
  m.payload.assign(bytes, bytes + std::min<std::size_t>(text.size(), kMaxControlPayload));
  return m;
}

Status Message::error_status() const {
  if (type != MsgType::kError) return Status::Ok();
  std::string text(reinterpret_cast<const char*>(payload.data()), payload.size());
  auto code = status == StatusCode::kOk ? StatusCode::kInternal : status;
  return Status(code, "memserver: " + text);
}

FrameHeader make_header(MsgType type, std::uint64_t req_id, std::uint32_t length,
                        StatusCode status) {
  return FrameHeader{kMagic, kVersion, static_cast<std::uint16_t>(type), req_id, length,
                     static_cast<std::uint32_t>(status)};
}

Status validate_header(const FrameHeader& h) {
  if (h.magic != kMagic) {
    return ProtocolError("bad frame magic 0x" + [&] {
      char buf[16];
      std::snprintf(buf, sizeof buf, "%08x", h.magic);
      return std::string(buf);
    }() + " (not a farmem peer?)");
  }
  if (h.version != kVersion) {
    return ProtocolError("protocol version " + std::to_string(h.version) +
                         " not supported (this side speaks " + std::to_string(kVersion) + ")");
  }
  const auto type = static_cast<MsgType>(h.type);
  const std::uint64_t limit = (type == MsgType::kWrite || type == MsgType::kReadData)
                                  ? kMaxDataPayload + sizeof(DataOp)
                                  : kMaxControlPayload;
  if (h.length > limit) {
    return ProtocolError(std::string(to_string(type)) + " frame of " + std::to_string(h.length) +
                         " bytes exceeds the limit of " + std::to_string(limit));
  }
  return Status::Ok();
}

std::vector<std::byte> encode(const Message& m) {
  std::vector<std::byte> out(sizeof(FrameHeader) + m.payload.size());
  const auto h = make_header(m.type, m.req_id, static_cast<std::uint32_t>(m.payload.size()),
                             m.status);
  std::memcpy(out.data(), &h, sizeof h);
  if (!m.payload.empty()) {
    std::memcpy(out.data() + sizeof h, m.payload.data(), m.payload.size());
  }
  return out;
}

Result<Message> decode(std::span<const std::byte> frame) {
  if (frame.size() < sizeof(FrameHeader)) {
    return ProtocolError("truncated frame: " + std::to_string(frame.size()) +
                         " bytes, a header needs " + std::to_string(sizeof(FrameHeader)));
  }
  FrameHeader h;
  std::memcpy(&h, frame.data(), sizeof h);
  FARMEM_RETURN_IF_ERROR(validate_header(h));
  if (frame.size() - sizeof h != h.length) {
    return ProtocolError("truncated frame: header announces " + std::to_string(h.length) +
                         " payload bytes, " + std::to_string(frame.size() - sizeof h) +
                         " present");
  }
  Message m;
  m.type = static_cast<MsgType>(h.type);
  m.req_id = h.req_id;
  m.status = static_cast<StatusCode>(h.status);
  m.payload.assign(frame.begin() + sizeof h, frame.end());
  return m;
}

Status check_hello_header(const FrameHeader& h) {
  FARMEM_RETURN_IF_ERROR(validate_header(h));
  if (static_cast<MsgType>(h.type) != MsgType::kHello) {
    return ProtocolError("expected HELLO as the first frame, got " +
                         std::string(to_string(MsgType(h.type))));
  }
  if (h.length < sizeof(HelloRequest) || h.length > sizeof(HelloRequest) + kMaxTenantBytes) {
    return InvalidArgument("HELLO of " + std::to_string(h.length) + " bytes; it carries " +
                           std::to_string(sizeof(HelloRequest)) + " bytes and a tenant name of at most " +
                           std::to_string(kMaxTenantBytes));
  }
  return Status::Ok();
}

Result<Hello> parse_hello(std::uint16_t version, std::span<const std::byte> payload) {
  HelloRequest req{};
  if (payload.size() < sizeof req) {
    return ProtocolError("HELLO of " + std::to_string(payload.size()) + " bytes is too short");
  }
  std::memcpy(&req, payload.data(), sizeof req);
  if (req.tenant_len > kMaxTenantBytes || sizeof req + req.tenant_len != payload.size()) {
    return ProtocolError("HELLO announces a tenant name of " + std::to_string(req.tenant_len) +
                         " bytes but carries " + std::to_string(payload.size() - sizeof req));
  }
  Hello hello;
  hello.version = version;
  hello.tenant = std::string_view(reinterpret_cast<const char*>(payload.data()) + sizeof req,
                                  req.tenant_len);
  hello.client_nonce = req.client_nonce;
  return hello;
}

Message make_hello(std::string_view tenant, const Nonce& client_nonce, std::uint64_t req_id) {
  HelloRequest req{};
  req.client_nonce = client_nonce;
  req.tenant_len = static_cast<std::uint16_t>(std::min(tenant.size(), kMaxTenantBytes));
  Message m = Message::of(MsgType::kHello, req);
  m.req_id = req_id;
  // resize + memcpy, not insert: GCC 12 misreads the insert's reallocation as a copy past the
  // 24-byte head (-Warray-bounds).
  const std::size_t head = m.payload.size();
  m.payload.resize(head + req.tenant_len);
  if (req.tenant_len != 0) std::memcpy(m.payload.data() + head, tenant.data(), req.tenant_len);
  return m;
}

Result<Hello> parse_connect_data(std::span<const std::byte> private_data) {
  ConnectData cd{};
  if (private_data.size() >= sizeof cd) std::memcpy(&cd, private_data.data(), sizeof cd);
  if (cd.magic != kMagic || cd.tenant_len > kMaxTenantBytes ||
      sizeof cd + kNonceBytes + cd.tenant_len > private_data.size()) {
    return ProtocolError("malformed connect data (not a farmem client?)");
  }
  Hello hello;
  hello.version = cd.version;
  std::memcpy(hello.client_nonce.data(), private_data.data() + sizeof cd, kNonceBytes);
  hello.tenant = std::string_view(
      reinterpret_cast<const char*>(private_data.data()) + sizeof cd + kNonceBytes, cd.tenant_len);
  return hello;
}

std::vector<std::byte> make_connect_data(std::string_view tenant, const Nonce& client_nonce) {
  const auto len = std::min(tenant.size(), kMaxTenantBytes);
  std::vector<std::byte> out(sizeof(ConnectData) + kNonceBytes + len);
  const ConnectData cd{kMagic, kVersion, static_cast<std::uint16_t>(len)};
  std::memcpy(out.data(), &cd, sizeof cd);
  std::memcpy(out.data() + sizeof cd, client_nonce.data(), kNonceBytes);
  if (len != 0) std::memcpy(out.data() + sizeof cd + kNonceBytes, tenant.data(), len);
  return out;
}

Status check_access(const SlabBounds* slab, std::uint64_t addr, std::uint64_t len,
                    std::uint32_t rkey) {
  if (slab == nullptr) {
    char hex[24];
    std::snprintf(hex, sizeof hex, "0x%llx", static_cast<unsigned long long>(addr));
    return OutOfRange(std::string("address ") + hex + " is in no slab of this session");
  }
  const std::uint64_t off = addr - slab->base;
  if (off >= slab->bytes || len > slab->bytes - off) {
    return OutOfRange("access of " + std::to_string(len) + " bytes at offset " +
                      std::to_string(off) + " runs outside slab " +
                      std::to_string(slab->slab_id) + " of " + std::to_string(slab->bytes) +
                      " bytes");
  }
  if (slab->rkey != rkey) {
    return PermissionDenied("wrong rkey for slab " + std::to_string(slab->slab_id));
  }
  return Status::Ok();
}

Result<std::vector<SlabInfo>> parse_slab_list(std::span<const std::byte> payload,
                                              std::uint64_t after, bool* more) {
  SlabListHead head;
  if (payload.size() < sizeof head) return ProtocolError("SLAB_LIST shorter than its head");
  std::memcpy(&head, payload.data(), sizeof head);
  if (head.count > kMaxSlabsPerList || payload.size() != sizeof head + head.count * sizeof(SlabInfo)) {
    return ProtocolError("SLAB_LIST of " + std::to_string(payload.size()) +
                         " bytes does not hold " + std::to_string(head.count) + " entries");
  }
  std::vector<SlabInfo> out(head.count);
  for (std::uint32_t i = 0; i < head.count; ++i) {
    std::memcpy(&out[i], payload.data() + sizeof head + i * sizeof(SlabInfo), sizeof(SlabInfo));
    if (out[i].slab_id <= after) return ProtocolError("SLAB_LIST entries out of order");
    after = out[i].slab_id;
  }
  *more = head.more != 0;
  return out;
}

}  // namespace farmem::proto
