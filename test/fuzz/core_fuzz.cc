// libFuzzer target: the memserver core's request handling (memserver/core.h), driven the way
// a client drives it, next to a well-behaved client whose data must survive.
//
// Input: a stream of request frames as a client sends them on TCP (header, then `length`
// payload bytes); the stream ends with the input or at a header that does not validate (the
// TCP session ends there too). Each input gets a fresh Core and two sessions opened with the
// right token: the fuzzed one, and a victim that leased one slab and filled it with a pattern
// before the stream starts. Control frames go through proto::decode into Core::handle (every
// type, as the RDMA session does); READ and WRITE go through Session::access with the TCP
// session's framing rules (memserver/tcp_session.cc), copying like the local backend.
//
// Slab addresses and rkeys are process facts (mmap, a random generator), so an input names
// them indirectly: a DataOp addr whose top 16 bits are 0xA0NN means slab NN (modulo the
// slabs the harness knows: 0 is the victim's, then the fuzzed session's in allocation
// order) plus its low 32 bits as a signed offset; an rkey 0xFFFFFFNN means slab NN's rkey.
// Any other value is used as it is.
//
// Checked against a model of both sessions, after every frame: replies echo req_id, have the
// expected type or kError with a code the request can earn, and fit one control frame (the
// RDMA session drops a client whose reply does not); a READ or WRITE succeeds exactly when
// it lies inside one of the fuzzed session's own live slabs with that slab's rkey, and a READ
// returns what the model holds; a new slab is chunk-rounded and overlaps no other; FREE_SLAB
// frees only the session's own slabs; STATS and LIST_SESSIONS agree with the model, and the
// victim's listing never changes; LIST_SLABS lists exactly the session's own slabs above
// the id asked for. At the end: the victim's bytes are intact, and closing the sessions
// gives every byte back to the pool.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "support/core_session.h"
#include "memserver/core.h"
#include "transport/proto/wire.h"

namespace farmem {
namespace {

using proto::FrameHeader;
using proto::Message;
using proto::MsgType;

constexpr std::string_view kToken = "fuzz-token-0123456789";
// Small enough that an input can fill the pool in a few ALLOC_SLABs (and reads of a whole
// slab stay cheap), with a chunk (one page) that leaves room for dozens of slabs.
constexpr std::uint64_t kCapacity = 256 << 10;
constexpr std::uint64_t kChunk = 4 << 10;
constexpr std::uint64_t kVictimBytes = 2 * kChunk;
constexpr std::string_view kVictimLabel = "victim";
constexpr std::uint16_t kSlabRef = 0xA0;         // top byte of an addr naming a known slab
constexpr std::uint32_t kRkeyRef = 0xFFFFFF00u;  // an rkey at or above names a known slab

// Made once: the harness's own loops are instrumented too, and would cost more per input
// than the requests.
const std::vector<std::byte>& victim_pattern() {
  static const std::vector<std::byte> pattern = [] {
    std::vector<std::byte> p(kVictimBytes);
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::byte>(i * 131 + 7);
    return p;
  }();
  return pattern;
}

struct KnownSlab {
  std::uint64_t id;
  std::uint64_t addr;
  std::uint32_t rkey;
  std::vector<std::byte> model;  ///< what the slab must hold (its size is the slab's)
};

class Harness {
 public:
  Harness()
      : core_({.capacity_bytes = kCapacity,
               .chunk_bytes = kChunk,
               .token = std::string(kToken),
               .numa_node = -1}) {
    victim_ = open("victim");
    fuzzed_ = open("fuzzed");
    set_victim_up();
  }

  // Serves one frame from r; false when the stream ends.
  bool serve_one(fuzz::Reader& r);
  void finish();

 private:
  std::shared_ptr<memserver::Session> open(const char* peer) {
    auto s = test::open_session(core_, kToken, "", peer);
    FUZZ_CHECK(s.ok(), "open_session with the right secret: %s", s.status().to_string().c_str());
    return std::move(s).value();
  }
  void set_victim_up();
  void serve_read(const FrameHeader& h, fuzz::Reader& r);
  void serve_write(const FrameHeader& h, fuzz::Reader& r);
  void serve_control(const FrameHeader& h, std::span<const std::byte> frame);
  void check_reply(const Message& req, const Message& reply);
  void check_alloc(const Message& req, const Message& reply);
  void check_free(const Message& req, const Message& reply);
  void check_stats(const Message& reply);
  void check_list(const Message& req, const Message& reply);
  void check_slab_list(const Message& req, const Message& reply);
  void check_pool();
  proto::DataOp resolve(proto::DataOp op) const;
  KnownSlab* own_slab_holding(std::uint64_t addr, std::uint64_t len, std::uint32_t rkey);

  memserver::Core core_;
  std::shared_ptr<memserver::Session> victim_;
  std::shared_ptr<memserver::Session> fuzzed_;
  KnownSlab victim_slab_{};
  std::vector<KnownSlab> own_;  ///< the fuzzed session's live slabs, in allocation order
  std::string own_label_;
  std::vector<std::byte> buf_;
};

void Harness::set_victim_up() {
  auto reply =
      core_.handle(*victim_, Message::of(MsgType::kAllocSlab, proto::AllocSlab{kVictimBytes}));
  auto info = reply.as<proto::SlabInfo>();
  FUZZ_CHECK(reply.type == MsgType::kSlabInfo && info.ok(), "victim's ALLOC_SLAB failed");
  FUZZ_CHECK(info->bytes == kVictimBytes, "victim's slab of %llu bytes",
             static_cast<unsigned long long>(info->bytes));
  victim_slab_ = {info->slab_id, info->addr, info->rkey, victim_pattern()};
  const Status st = victim_->access(info->addr, info->rkey, info->bytes, [&](std::byte* p) {
    std::memcpy(p, victim_slab_.model.data(), victim_slab_.model.size());
  });
  FUZZ_CHECK(st.ok(), "victim's write: %s", st.to_string().c_str());
  Message label;
  label.type = MsgType::kSetLabel;
  label.payload.assign(
      reinterpret_cast<const std::byte*>(kVictimLabel.data()),
      reinterpret_cast<const std::byte*>(kVictimLabel.data()) + kVictimLabel.size());
  FUZZ_CHECK(core_.handle(*victim_, label).type == MsgType::kLabelOk, "victim's SET_LABEL");
}

proto::DataOp Harness::resolve(proto::DataOp op) const {
  const std::size_t known = 1 + own_.size();
  auto slab = [&](std::size_t i) -> const KnownSlab& {
    i %= known;
    return i == 0 ? victim_slab_ : own_[i - 1];
  };
  if ((op.addr >> 56) == kSlabRef) {
    const auto offset = static_cast<std::int32_t>(op.addr & 0xFFFFFFFFu);
    op.addr = slab((op.addr >> 48) & 0xFF).addr + static_cast<std::int64_t>(offset);
  }
  if (op.rkey >= kRkeyRef) op.rkey = slab(op.rkey & 0xFF).rkey;
  return op;
}

KnownSlab* Harness::own_slab_holding(std::uint64_t addr, std::uint64_t len, std::uint32_t rkey) {
  for (auto& s : own_) {
    if (addr >= s.addr && addr - s.addr < s.model.size() &&
        len <= s.model.size() - (addr - s.addr) && rkey == s.rkey) {
      return &s;
    }
  }
  return nullptr;
}

bool Harness::serve_one(fuzz::Reader& r) {
  if (r.left() < sizeof(FrameHeader)) return false;
  const auto h = r.take<FrameHeader>();
  if (!proto::validate_header(h).ok()) return false;  // the TCP session ends here
  const auto type = static_cast<MsgType>(h.type);
  if (type == MsgType::kRead) {
    serve_read(h, r);
  } else if (type == MsgType::kWrite) {
    serve_write(h, r);
  } else {
    std::vector<std::byte> frame(sizeof h);
    std::memcpy(frame.data(), &h, sizeof h);
    const auto body = r.bytes(h.length);
    frame.insert(frame.end(), body.begin(), body.end());
    serve_control(h, frame);
  }
  check_pool();
  return true;
}

void Harness::serve_read(const FrameHeader& h, fuzz::Reader& r) {
  if (h.length != sizeof(proto::DataOp)) {
    r.bytes(h.length);
    return;  // answered with kError by the TCP session, never reaches the Core
  }
  if (r.left() < sizeof(proto::DataOp)) return;  // a truncated frame ends the session
  const auto op = resolve(r.take<proto::DataOp>());
  if (op.length == 0 || op.length > proto::kMaxDataPayload) return;
  KnownSlab* expect = own_slab_holding(op.addr, op.length, op.rkey);
  // Sized inside: a refused READ may announce up to 64 MiB.
  const Status st = fuzzed_->access(op.addr, op.rkey, op.length, [&](std::byte* p) {
    buf_.resize(op.length);
    std::memcpy(buf_.data(), p, op.length);
  });
  FUZZ_CHECK(st.ok() == (expect != nullptr), "READ of %u bytes at 0x%llx: %s", op.length,
             static_cast<unsigned long long>(op.addr), st.to_string().c_str());
  if (!st.ok()) {
    FUZZ_CHECK(st.code() == StatusCode::kOutOfRange || st.code() == StatusCode::kPermissionDenied,
               "READ failed with %s", st.to_string().c_str());
    return;
  }
  FUZZ_CHECK(
      std::memcmp(buf_.data(), expect->model.data() + (op.addr - expect->addr), op.length) == 0,
      "READ of slab %llu returned other bytes than were written",
      static_cast<unsigned long long>(expect->id));
}

void Harness::serve_write(const FrameHeader& h, fuzz::Reader& r) {
  if (h.length < sizeof(proto::DataOp)) {
    r.bytes(h.length);
    return;
  }
  const auto op = resolve(r.take<proto::DataOp>());
  const std::size_t payload = h.length - sizeof(proto::DataOp);
  const auto bytes = r.bytes(payload);
  // The TCP session refuses these before touching a slab; a payload cut short by the end of
  // the input is a truncated frame (the session ends there).
  if (op.length != payload || payload == 0 || bytes.size() < payload) return;
  KnownSlab* expect = own_slab_holding(op.addr, payload, op.rkey);
  const Status st = fuzzed_->access(op.addr, op.rkey, payload,
                                    [&](std::byte* p) { std::memcpy(p, bytes.data(), payload); });
  FUZZ_CHECK(st.ok() == (expect != nullptr), "WRITE of %zu bytes at 0x%llx: %s", payload,
             static_cast<unsigned long long>(op.addr), st.to_string().c_str());
  if (st.ok()) std::memcpy(expect->model.data() + (op.addr - expect->addr), bytes.data(), payload);
}

void Harness::serve_control(const FrameHeader& h, std::span<const std::byte> frame) {
  auto req = proto::decode(frame);
  if (!req.ok()) {
    // Only a frame cut short by the end of the input fails here: the header validated.
    FUZZ_CHECK(frame.size() < sizeof h + h.length, "decode refused a whole frame: %s",
               req.status().to_string().c_str());
    return;
  }
  const Message reply = core_.handle(*fuzzed_, *req);
  check_reply(*req, reply);
}

void Harness::check_reply(const Message& req, const Message& reply) {
  FUZZ_CHECK(reply.req_id == req.req_id, "reply to %llu carries req_id %llu",
             static_cast<unsigned long long>(req.req_id),
             static_cast<unsigned long long>(reply.req_id));
  FUZZ_CHECK(proto::encode(reply).size() <= sizeof(FrameHeader) + proto::kMaxControlPayload,
             "a %zu-byte reply does not fit a control frame", reply.payload.size());
  if (reply.type == MsgType::kError) {
    FUZZ_CHECK(reply.status != StatusCode::kOk && !reply.error_status().ok(),
               "kError without a code");
  }
  switch (req.type) {
    case MsgType::kAllocSlab:
      return check_alloc(req, reply);
    case MsgType::kFreeSlab:
      return check_free(req, reply);
    case MsgType::kStats:
      return check_stats(reply);
    case MsgType::kListSessions:
      return check_list(req, reply);
    case MsgType::kListSlabs:
      return check_slab_list(req, reply);
    case MsgType::kSetLabel: {
      const bool fits = !req.payload.empty() && req.payload.size() <= proto::kMaxLabelBytes;
      FUZZ_CHECK(reply.type == (fits ? MsgType::kLabelOk : MsgType::kError),
                 "SET_LABEL of %zu bytes", req.payload.size());
      if (fits)
        own_label_.assign(reinterpret_cast<const char*>(req.payload.data()), req.payload.size());
      return;
    }
    case MsgType::kPing:
      FUZZ_CHECK(reply.type == MsgType::kPong, "PING answered %s",
                 std::string(proto::to_string(reply.type)).c_str());
      return;
    default:
      FUZZ_CHECK(reply.type == MsgType::kError && reply.status == StatusCode::kProtocolError,
                 "a %s request was not refused as a protocol error",
                 std::string(proto::to_string(req.type)).c_str());
  }
}

void Harness::check_alloc(const Message& req, const Message& reply) {
  auto body = req.as<proto::AllocSlab>();
  if (!body.ok()) {
    FUZZ_CHECK(reply.type == MsgType::kError && reply.status == StatusCode::kProtocolError,
               "ALLOC_SLAB with a %zu-byte payload", req.payload.size());
    return;
  }
  std::uint64_t used = victim_slab_.model.size();
  for (const auto& s : own_) used += s.model.size();
  const std::uint64_t rounded = (body->bytes + kChunk - 1) / kChunk * kChunk;
  const bool fits = body->bytes != 0 && body->bytes <= kCapacity && used + rounded <= kCapacity;
  FUZZ_CHECK((reply.type == MsgType::kSlabInfo) == fits, "ALLOC_SLAB of %llu bytes (%llu used)",
             static_cast<unsigned long long>(body->bytes), static_cast<unsigned long long>(used));
  if (!fits) {
    FUZZ_CHECK(reply.status == (body->bytes == 0 ? StatusCode::kInvalidArgument
                                                 : StatusCode::kResourceExhausted),
               "ALLOC_SLAB refused with code %u", static_cast<unsigned>(reply.status));
    return;
  }
  auto info = reply.as<proto::SlabInfo>();
  FUZZ_CHECK(info.ok() && info->bytes == rounded, "SLAB_INFO of the wrong size");
  auto overlaps = [&](const KnownSlab& s) {
    return info->addr < s.addr + s.model.size() && s.addr < info->addr + info->bytes;
  };
  FUZZ_CHECK(!overlaps(victim_slab_) && std::none_of(own_.begin(), own_.end(), overlaps),
             "a new slab overlaps a leased one");
  FUZZ_CHECK(info->slab_id != victim_slab_.id &&
                 std::none_of(own_.begin(), own_.end(),
                              [&](const KnownSlab& s) { return s.id == info->slab_id; }),
             "slab id %llu handed out twice", static_cast<unsigned long long>(info->slab_id));
  own_.push_back({info->slab_id, info->addr, info->rkey, std::vector<std::byte>(info->bytes)});
}

void Harness::check_free(const Message& req, const Message& reply) {
  auto body = req.as<proto::FreeSlab>();
  if (!body.ok()) {
    FUZZ_CHECK(reply.type == MsgType::kError && reply.status == StatusCode::kProtocolError,
               "FREE_SLAB with a %zu-byte payload", req.payload.size());
    return;
  }
  auto it = std::find_if(own_.begin(), own_.end(),
                         [&](const KnownSlab& s) { return s.id == body->slab_id; });
  if (it == own_.end()) {
    FUZZ_CHECK(reply.type == MsgType::kError && reply.status == StatusCode::kNotFound,
               "FREE_SLAB of slab %llu, not this session's",
               static_cast<unsigned long long>(body->slab_id));
    return;
  }
  FUZZ_CHECK(reply.type == MsgType::kFreeOk, "FREE_SLAB of an own slab refused");
  own_.erase(it);
}

void Harness::check_stats(const Message& reply) {
  auto st = reply.as<proto::ServerStats>();
  FUZZ_CHECK(reply.type == MsgType::kStatsReply && st.ok(), "STATS refused");
  std::uint64_t used = victim_slab_.model.size();
  for (const auto& s : own_) used += s.model.size();
  FUZZ_CHECK(st->used_bytes == used && st->slabs == 1 + own_.size() && st->sessions == 2 &&
                 st->capacity_bytes == kCapacity,
             "STATS: %llu bytes in %llu slabs, %llu sessions",
             static_cast<unsigned long long>(st->used_bytes),
             static_cast<unsigned long long>(st->slabs),
             static_cast<unsigned long long>(st->sessions));
}

void Harness::check_list(const Message& req, const Message& reply) {
  auto body = req.as<proto::ListSessions>();
  if (!body.ok()) {
    FUZZ_CHECK(reply.type == MsgType::kError && reply.status == StatusCode::kProtocolError,
               "LIST_SESSIONS with a %zu-byte payload", req.payload.size());
    return;
  }
  FUZZ_CHECK(reply.type == MsgType::kSessionList, "LIST_SESSIONS refused");
  proto::SessionListHead head;
  FUZZ_CHECK(reply.payload.size() >= sizeof head, "SESSION_LIST without its head");
  std::memcpy(&head, reply.payload.data(), sizeof head);
  FUZZ_CHECK(head.more == 0 &&
                 reply.payload.size() == sizeof head + head.count * sizeof(proto::SessionEntry),
             "SESSION_LIST of %zu bytes for %u entries", reply.payload.size(), head.count);
  const std::size_t expect = (victim_->id() > body->after_session_id ? 1 : 0) +
                             (fuzzed_->id() > body->after_session_id ? 1 : 0);
  FUZZ_CHECK(head.count == expect, "SESSION_LIST after %llu holds %u sessions, not %zu",
             static_cast<unsigned long long>(body->after_session_id), head.count, expect);
  for (std::uint32_t i = 0; i < head.count; ++i) {
    proto::SessionEntry e;
    std::memcpy(&e, reply.payload.data() + sizeof head + i * sizeof e, sizeof e);
    const bool victim = e.session_id == victim_->id();
    FUZZ_CHECK(victim || e.session_id == fuzzed_->id(), "an unknown session listed");
    const std::string_view label(e.label, e.label_len);
    std::uint64_t leased = 0;
    for (const auto& s : own_) leased += s.model.size();
    FUZZ_CHECK(victim ? (label == kVictimLabel && e.slabs == 1 &&
                         e.leased_bytes == victim_slab_.model.size())
                      : (label == own_label_ && e.slabs == own_.size() && e.leased_bytes == leased),
               "the %s session is listed wrong", victim ? "victim" : "fuzzed");
  }
}

void Harness::check_slab_list(const Message& req, const Message& reply) {
  auto body = req.as<proto::ListSlabs>();
  if (!body.ok()) {
    FUZZ_CHECK(reply.type == MsgType::kError && reply.status == StatusCode::kProtocolError,
               "LIST_SLABS with a %zu-byte payload", req.payload.size());
    return;
  }
  FUZZ_CHECK(reply.type == MsgType::kSlabList, "LIST_SLABS refused");
  bool more = true;
  auto listed = proto::parse_slab_list(reply.payload, body->after_slab_id, &more);
  FUZZ_CHECK(listed.ok(), "SLAB_LIST does not parse: %s", listed.status().to_string().c_str());
  // The session's own slabs above the id, in id order (allocation order is id order), and
  // never the victim's.
  std::vector<const KnownSlab*> expect;
  for (const auto& s : own_) {
    if (s.id > body->after_slab_id) expect.push_back(&s);
  }
  FUZZ_CHECK(!more && listed->size() == expect.size(),
             "SLAB_LIST after %llu holds %zu slabs (more %d), not %zu",
             static_cast<unsigned long long>(body->after_slab_id), listed->size(), more ? 1 : 0,
             expect.size());
  for (std::size_t i = 0; i < expect.size(); ++i) {
    const auto& e = (*listed)[i];
    FUZZ_CHECK(e.slab_id == expect[i]->id && e.addr == expect[i]->addr &&
                   e.bytes == expect[i]->model.size() && e.rkey == expect[i]->rkey,
               "SLAB_LIST entry %zu is slab %llu, not %llu", i,
               static_cast<unsigned long long>(e.slab_id),
               static_cast<unsigned long long>(expect[i]->id));
  }
}

void Harness::check_pool() {
  std::uint64_t used = victim_slab_.model.size();
  for (const auto& s : own_) used += s.model.size();
  FUZZ_CHECK(core_.used_bytes() == used, "the pool counts %llu bytes leased, the model %llu",
             static_cast<unsigned long long>(core_.used_bytes()),
             static_cast<unsigned long long>(used));
}

void Harness::finish() {
  buf_.resize(victim_slab_.model.size());
  const Status st =
      victim_->access(victim_slab_.addr, victim_slab_.rkey, buf_.size(),
                      [&](std::byte* p) { std::memcpy(buf_.data(), p, buf_.size()); });
  FUZZ_CHECK(st.ok() && std::memcmp(buf_.data(), victim_slab_.model.data(), buf_.size()) == 0,
             "the victim's slab changed: %s", st.to_string().c_str());
  core_.close_session(*fuzzed_);
  FUZZ_CHECK(core_.used_bytes() == victim_slab_.model.size() && core_.stats().slabs == 1 &&
                 core_.stats().sessions == 1,
             "closing the fuzzed session left %llu bytes leased",
             static_cast<unsigned long long>(core_.used_bytes()));
  core_.close_session(*victim_);
  FUZZ_CHECK(core_.used_bytes() == 0 && core_.stats().slabs == 0, "bytes left in the pool");
}

}  // namespace
}  // namespace farmem

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  farmem::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  farmem::fuzz::Reader r({reinterpret_cast<const std::byte*>(data), size});
  farmem::Harness h;
  while (h.serve_one(r)) {
  }
  h.finish();
  return 0;
}
