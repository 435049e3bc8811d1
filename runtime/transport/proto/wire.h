// Wire formats shared by the client transports and farmem-memserver.
//
// Every message, on TCP and in RDMA SEND/RECV control messages alike, is one frame:
//
//   0        4        6        8                16       20       24
//   +--------+--------+--------+----------------+--------+--------+
//   | magic  |version |  type  |     req_id     | length | status |  ... length payload bytes
//   +--------+--------+--------+----------------+--------+--------+
//     u32      u16      u16          u64          u32      u32
//
// All integers are little-endian (the only byte order farmem builds for, asserted below).
// `req_id` is chosen by the client and echoed in the reply, so requests can be pipelined.
// `status` is 0 in requests; in replies it is a StatusCode (non-zero only in kError replies).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "farmem/status.h"
#include "transport/proto/auth.h"

namespace farmem::proto {

static_assert(std::endian::native == std::endian::little, "farmem's wire format is little-endian");

/// "FMEM" read as a little-endian u32.
inline constexpr std::uint32_t kMagic = 0x4D454D46;
/// Bumped on any incompatible change of a frame or payload layout. 2: challenge-response
/// authentication with tenants (HELLO and the RDMA connect data carry a tenant name and a
/// nonce, never a secret; AUTH/AUTH_OK follow HELLO_OK).
inline constexpr std::uint16_t kVersion = 2;
/// Control payloads are tiny; 4 KiB leaves room for stats and error text, and bounds what a
/// malicious client can make the server buffer before it is judged.
inline constexpr std::uint32_t kMaxControlPayload = 4096;
/// Largest single data operation (READ/WRITE) on the TCP transport: 64 MiB keeps one frame's
/// buffer bounded while making the per-frame header cost negligible.
inline constexpr std::uint32_t kMaxDataPayload = 64u << 20;
/// Secrets (a tenant's, or the single --token) never cross the wire; the bound only keeps
/// configuration sane.
inline constexpr std::size_t kMaxSecretBytes = 1024;
/// A tenant's name must fit, with the 8-byte ConnectData and the 16-byte nonce, in the 56
/// bytes of private data an RC connect request carries (see rdma_connect(3)). The empty name
/// is the anonymous tenant of a memserver started with --token.
inline constexpr std::size_t kMaxTenantBytes = 32;
/// A client's label ("pid@host" or a name its runtime was given) names it to operators
/// (farmemctl); 48 bytes hold a hostname-qualified name and keep SessionEntry at 72 bytes.
inline constexpr std::size_t kMaxLabelBytes = 48;

enum class MsgType : std::uint16_t {
  kHello = 1,      ///< payload: HelloRequest, then HelloRequest::tenant_len name bytes
  kHelloOk = 2,    ///< payload: HelloOk
  kAllocSlab = 3,  ///< payload: AllocSlab
  kSlabInfo = 4,   ///< payload: SlabInfo
  kFreeSlab = 5,   ///< payload: FreeSlab
  kFreeOk = 6,     ///< payload: none
  kStats = 7,      ///< payload: none
  kStatsReply = 8, ///< payload: ServerStats
  kError = 9,      ///< payload: UTF-8 message; frame status holds the StatusCode
  kRead = 16,      ///< TCP only. payload: DataOp; reply kReadData
  kReadData = 17,  ///< TCP only. payload: the bytes read
  kWrite = 18,     ///< TCP only. payload: DataOp followed by DataOp::length bytes
  kWriteOk = 19,   ///< TCP only. payload: none
  // Added within version 1 (a memserver that predates them answers kError kProtocolError,
  // "unknown control message type"; clients that never send them are unaffected):
  kSetLabel = 10,      ///< payload: the client's label, 1..kMaxLabelBytes of UTF-8
  kLabelOk = 11,       ///< payload: none
  kListSessions = 12,  ///< payload: ListSessions
  kSessionList = 13,   ///< payload: SessionListHead, then SessionListHead::count SessionEntry
  kAuth = 14,          ///< payload: AuthProof (the client's); see transport/proto/auth.h
  kAuthOk = 15,        ///< payload: AuthOk (the memserver's proof and the resume secret)
  kResume = 20,        ///< payload: ResumeRequest; the connection takes over a session
  kResumeOk = 21,      ///< payload: ResumeOk
  kPing = 22,          ///< payload: none; a heartbeat (reply kPong)
  kPong = 23,          ///< payload: none
  kBye = 24,           ///< payload: none, no reply: the client ends its session on purpose
  kListSlabs = 25,     ///< payload: ListSlabs; the session's own slabs (after a RESUME over
                       ///< RDMA their keys changed: see memserver/core.h)
  kSlabList = 26,      ///< payload: SlabListHead, then SlabListHead::count SlabInfo
};

/// True for the request types a client may send.
bool is_request(MsgType t);
std::string_view to_string(MsgType t);

struct FrameHeader {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t type;
  std::uint64_t req_id;
  std::uint32_t length;
  std::uint32_t status;
};
static_assert(sizeof(FrameHeader) == 24);

/// HELLO's fixed part (TCP). The RDMA connect data carries the same fields (ConnectData).
struct HelloRequest {
  Nonce client_nonce;      ///< fresh random bytes of the client's
  std::uint16_t tenant_len;  ///< name bytes that follow, at most kMaxTenantBytes
  std::uint16_t reserved;
  std::uint32_t reserved2;
};
static_assert(sizeof(HelloRequest) == 24);

/// HelloOk::flags: the client must AUTH before anything else (the memserver has secrets).
/// Without it the memserver runs --insecure and serves anyone.
inline constexpr std::uint32_t kHelloAuthRequired = 1;

struct HelloOk {
  std::uint64_t session_id;
  std::uint64_t capacity_bytes;  ///< the server's --capacity (0 until authenticated)
  std::uint64_t chunk_bytes;     ///< slabs are multiples of this
  Nonce server_nonce;            ///< fresh random bytes of the memserver's
  std::uint32_t flags;           ///< kHelloAuthRequired
  std::uint32_t reserved;
  /// What a later connection presents to take this session over (RESUME); all zero when
  /// AUTH is required (then AUTH_OK carries it, to whom authenticated only).
  Nonce resume_secret;
};
static_assert(sizeof(HelloOk) == 64);

/// AUTH payload.
struct AuthProof {
  Mac mac;
};
static_assert(sizeof(AuthProof) == 32);

/// AUTH_OK payload.
struct AuthOk {
  Mac mac;              ///< the memserver's proof
  Nonce resume_secret;  ///< see HelloOk::resume_secret
};
static_assert(sizeof(AuthOk) == 48);

/// RESUME: after the handshake (and AUTH, as the same tenant), the connection takes over an
/// earlier session of this memserver whose connection broke: its slabs, keys and label.
/// The session this connection opened is closed (it leased nothing yet).
struct ResumeRequest {
  std::uint64_t session_id;
  Nonce resume_secret;
};
static_assert(sizeof(ResumeRequest) == 24);

struct ResumeOk {
  std::uint64_t session_id;  ///< the session resumed
  std::uint32_t slabs;       ///< slabs it holds
  std::uint32_t reserved;
};
static_assert(sizeof(ResumeOk) == 16);

struct AllocSlab {
  std::uint64_t bytes;  ///< rounded up to a multiple of chunk_bytes by the server
};
static_assert(sizeof(AllocSlab) == 8);

/// A slab leased to the session: remote (addr, rkey, bytes) is what one-sided ops target.
struct SlabInfo {
  std::uint64_t slab_id;
  std::uint64_t addr;
  std::uint64_t bytes;
  std::uint32_t rkey;
  std::uint32_t reserved;
};
static_assert(sizeof(SlabInfo) == 32);

struct FreeSlab {
  std::uint64_t slab_id;
};
static_assert(sizeof(FreeSlab) == 8);

struct ServerStats {
  std::uint64_t capacity_bytes;
  std::uint64_t used_bytes;      ///< bytes in slabs currently leased
  std::uint64_t mapped_bytes;    ///< bytes currently mmapped (== used_bytes: no caching)
  std::uint64_t slabs;           ///< slabs currently leased
  std::uint64_t sessions;        ///< connected client sessions
  std::uint64_t slabs_reclaimed; ///< slabs freed because their session ended
  std::uint64_t requests;        ///< control requests handled
  std::uint64_t errors;          ///< requests answered with kError
};
static_assert(sizeof(ServerStats) == 64);

/// Asks for the sessions with ids above `after_session_id` (0: from the first), in id order.
struct ListSessions {
  std::uint64_t after_session_id;
};
static_assert(sizeof(ListSessions) == 8);

/// SESSION_LIST payload:
///
///   0       4       8                                       8 + 72 * count
///   +-------+-------+----------------+-----+----------------+
///   | count | more  | SessionEntry 0 | ... | SessionEntry n |
///   +-------+-------+----------------+-----+----------------+
///
/// `more` is 1 when sessions beyond the last entry exist: ask again after its id.
struct SessionListHead {
  std::uint32_t count;
  std::uint32_t more;
};
static_assert(sizeof(SessionListHead) == 8);

/// One open session as the memserver sees it.
struct SessionEntry {
  std::uint64_t session_id;
  std::uint64_t leased_bytes;  ///< bytes in slabs leased to it now
  std::uint32_t slabs;         ///< slabs leased to it now
  std::uint16_t label_len;     ///< bytes of `label` used; 0: the client sent none
  std::uint16_t reserved;
  char label[kMaxLabelBytes];  ///< not NUL-terminated
};
static_assert(sizeof(SessionEntry) == 72);
/// Entries in one SESSION_LIST reply: as many as fit in a control payload.
inline constexpr std::size_t kMaxSessionsPerList =
    (kMaxControlPayload - sizeof(SessionListHead)) / sizeof(SessionEntry);

/// Asks for the session's slabs with ids above `after_slab_id` (0: from the first), in id
/// order.
struct ListSlabs {
  std::uint64_t after_slab_id;
};
static_assert(sizeof(ListSlabs) == 8);

/// SLAB_LIST payload:
///
///   0       4       8                                   8 + 32 * count
///   +-------+-------+------------+-----+------------+
///   | count | more  | SlabInfo 0 | ... | SlabInfo n |
///   +-------+-------+------------+-----+------------+
///
/// `more` is 1 when slabs beyond the last entry exist: ask again after its id.
struct SlabListHead {
  std::uint32_t count;
  std::uint32_t more;
};
static_assert(sizeof(SlabListHead) == 8);
/// Entries in one SLAB_LIST reply: as many as fit in a control payload.
inline constexpr std::size_t kMaxSlabsPerList =
    (kMaxControlPayload - sizeof(SlabListHead)) / sizeof(SlabInfo);
/// One SLAB_LIST payload's entries, checked: count within bounds and matching the size, ids
/// rising above `after`. `*more` as in the head. kProtocolError otherwise.
Result<std::vector<SlabInfo>> parse_slab_list(std::span<const std::byte> payload,
                                              std::uint64_t after, bool* more);

struct DataOp {
  std::uint64_t addr;
  std::uint32_t rkey;
  std::uint32_t length;
};
static_assert(sizeof(DataOp) == 16);

/// Private data of an RDMA connect request: ConnectData, the client's nonce (kNonceBytes),
/// then tenant_len name bytes: at most 8 + 16 + 32 = 56 bytes, all an RC REQ carries.
struct ConnectData {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t tenant_len;
};
static_assert(sizeof(ConnectData) == 8);
inline constexpr std::size_t kMaxConnectDataBytes = sizeof(ConnectData) + kNonceBytes + kMaxTenantBytes;
static_assert(kMaxConnectDataBytes <= 56, "an RC connect request carries 56 bytes of private data");

/// What a client presents to open a session (TCP: HELLO; RDMA: the connect private data).
struct Hello {
  std::uint16_t version = 0;
  std::string_view tenant;  ///< views the bytes it was parsed from
  Nonce client_nonce{};
};

/// Parses the private data of an RDMA connect request: a ConnectData with our magic, the
/// nonce, then tenant_len <= kMaxTenantBytes name bytes, then anything (rdma_cm zero-pads it
/// to 56 bytes on IB/RoCE). The version is returned, not checked: the Core judges it.
/// kProtocolError when the data is short, not ours or announces more name than it holds.
Result<Hello> parse_connect_data(std::span<const std::byte> private_data);
/// The private data a client sends (the inverse of parse_connect_data).
std::vector<std::byte> make_connect_data(std::string_view tenant, const Nonce& client_nonce);

/// Private data of an RDMA connect reject: why.
struct RejectData {
  std::uint32_t magic;
  std::uint32_t status;  ///< a StatusCode
};
static_assert(sizeof(RejectData) == 8);

/// A whole control message in memory: header fields plus payload.
struct Message {
  MsgType type{};
  std::uint64_t req_id = 0;
  StatusCode status = StatusCode::kOk;
  std::vector<std::byte> payload;

  template <typename T>
  static Message of(MsgType type, const T& body) {
    Message m;
    m.type = type;
    m.payload.resize(sizeof(T));
    std::memcpy(m.payload.data(), &body, sizeof(T));
    return m;
  }
  static Message error(StatusCode code, std::string_view text, std::uint64_t req_id);

  /// Decodes the payload as T; fails unless it is exactly sizeof(T) bytes.
  template <typename T>
  Result<T> as() const {
    if (payload.size() != sizeof(T)) {
      return ProtocolError("payload of " + std::string(to_string(type)) + " is " +
                           std::to_string(payload.size()) + " bytes, expected " +
                           std::to_string(sizeof(T)));
    }
    T out;
    std::memcpy(&out, payload.data(), sizeof(T));
    return out;
  }
  /// kError replies as a Status; Ok for anything else.
  Status error_status() const;
};

/// The slab a one-sided access falls in, as whoever checks the access knows it.
struct SlabBounds {
  std::uint64_t slab_id;
  std::uint64_t base;   ///< remote address of the slab's first byte
  std::uint64_t bytes;
  std::uint32_t rkey;
};
/// The one rule for a one-sided access of `len` bytes at `addr` with `rkey`, checked by the
/// memserver (tcp, local) and by the verbs client before posting, so that every backend gives
/// the same codes and words: kOutOfRange when `slab` (the session's slab at or below `addr`,
/// null when there is none) does not hold the whole range, kPermissionDenied for a wrong
/// rkey.
Status check_access(const SlabBounds* slab, std::uint64_t addr, std::uint64_t len,
                    std::uint32_t rkey);

FrameHeader make_header(MsgType type, std::uint64_t req_id, std::uint32_t length,
                        StatusCode status = StatusCode::kOk);
/// Checks magic, version and, for control types, the length bound.
Status validate_header(const FrameHeader& h);
/// Header + payload in one contiguous buffer.
std::vector<std::byte> encode(const Message& m);
/// Parses one whole frame (header + exactly `length` payload bytes).
Result<Message> decode(std::span<const std::byte> frame);
/// Checks the header of a TCP client's first frame before its payload is read: a valid header
/// (validate_header's errors), of a HELLO (else kProtocolError) whose payload is a
/// HelloRequest plus at most kMaxTenantBytes of name (else kInvalidArgument).
Status check_hello_header(const FrameHeader& h);
/// A TCP HELLO for `tenant` with `client_nonce`.
Message make_hello(std::string_view tenant, const Nonce& client_nonce, std::uint64_t req_id);
/// Parses a HELLO's payload (after check_hello_header accepted its header): kProtocolError
/// when the name length disagrees with the payload.
Result<Hello> parse_hello(std::uint16_t version, std::span<const std::byte> payload);

}  // namespace farmem::proto
