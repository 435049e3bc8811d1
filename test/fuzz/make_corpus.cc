// The seed corpus of the fuzz targets, written from real messages by the encoders the
// runtime and the memserver use, so that it stays valid when the wire format moves:
//
//   build-fuzz/test/fuzz/fuzz_make_corpus test/fuzz/corpus
//
// writes test/fuzz/corpus/<target>/<name> for each target (replacing files of the same name,
// leaving others). The files are committed; ci/fuzz starts each run from a copy of them.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "transport/proto/wire.h"

namespace farmem::proto {
namespace {

using Bytes = std::vector<std::byte>;

// core_fuzz.cc's names for known slabs and their rkeys (see its header comment).
constexpr std::uint64_t slab_ref(unsigned slab, std::int32_t offset) {
  return (std::uint64_t{0xA0} << 56) | (std::uint64_t{slab & 0xFF} << 48) |
         static_cast<std::uint32_t>(offset);
}
constexpr std::uint32_t rkey_ref(unsigned slab) { return 0xFFFFFF00u | (slab & 0xFF); }

Bytes frame(const Message& m) { return encode(m); }
template <typename T>
Bytes frame(MsgType type, const T& body, std::uint64_t req_id) {
  auto m = Message::of(type, body);
  m.req_id = req_id;
  return encode(m);
}
// Named apart: as frame(type, "text", id) the template above would win and send the
// literal's array, NUL included.
Bytes text_frame(MsgType type, std::string_view payload, std::uint64_t req_id) {
  Message m;
  m.type = type;
  m.req_id = req_id;
  m.payload.assign(reinterpret_cast<const std::byte*>(payload.data()),
                   reinterpret_cast<const std::byte*>(payload.data()) + payload.size());
  return encode(m);
}
Bytes read_op(DataOp op, std::uint64_t req_id) { return frame(MsgType::kRead, op, req_id); }
Bytes write_op(DataOp op, std::uint64_t req_id) {
  Message m = Message::of(MsgType::kWrite, op);
  m.req_id = req_id;
  for (std::uint32_t i = 0; i < op.length; ++i) m.payload.push_back(std::byte(i * 7 + 1));
  return encode(m);
}
Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

void put(const std::filesystem::path& dir, const std::string& name, const Bytes& b) {
  std::filesystem::create_directories(dir);
  std::ofstream f(dir / name, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!f) {
    std::fprintf(stderr, "make_corpus: cannot write %s\n", (dir / name).c_str());
    std::exit(1);
  }
}

void wire(const std::filesystem::path& dir) {
  put(dir, "hello", encode(make_hello("kv", Nonce{1, 2, 3}, 1)));
  put(dir, "hello_ok", frame(MsgType::kHelloOk, HelloOk{1, 1 << 30, 2 << 20, Nonce{4, 5}, 1, 0}, 1));
  put(dir, "auth", frame(MsgType::kAuth, AuthProof{Mac{7, 7}}, 2));
  put(dir, "auth_ok", frame(MsgType::kAuthOk, AuthOk{Mac{8, 8}, Nonce{9}}, 2));
  put(dir, "resume", frame(MsgType::kResume, ResumeRequest{3, Nonce{1}}, 3));
  put(dir, "resume_ok", frame(MsgType::kResumeOk, ResumeOk{3, 2, 0}, 3));
  put(dir, "alloc_slab", frame(MsgType::kAllocSlab, AllocSlab{4096}, 2));
  put(dir, "slab_info", frame(MsgType::kSlabInfo, SlabInfo{1, 0x7f0000000000, 2 << 20, 42, 0}, 2));
  put(dir, "free_slab", frame(MsgType::kFreeSlab, FreeSlab{1}, 3));
  put(dir, "stats_reply",
      frame(MsgType::kStatsReply, ServerStats{1 << 30, 4096, 4096, 1, 1, 0, 9, 0}, 4));
  put(dir, "error", frame(Message::error(StatusCode::kOutOfRange, "access outside slab 1", 5)));
  put(dir, "list_sessions", frame(MsgType::kListSessions, ListSessions{0}, 6));
  put(dir, "list_slabs", frame(MsgType::kListSlabs, ListSlabs{0}, 6));
  Message slabs;
  slabs.type = MsgType::kSlabList;
  slabs.req_id = 6;
  const SlabListHead slab_head{2, 1};
  const SlabInfo infos[2] = {{3, 0x7f0000000000, 4096, 42, 0}, {5, 0x7f0000100000, 8192, 43, 0}};
  slabs.payload.resize(sizeof slab_head + sizeof infos);
  std::memcpy(slabs.payload.data(), &slab_head, sizeof slab_head);
  std::memcpy(slabs.payload.data() + sizeof slab_head, infos, sizeof infos);
  put(dir, "slab_list", frame(slabs));
  SessionEntry e{};
  e.session_id = 3;
  e.leased_bytes = 4096;
  e.slabs = 1;
  e.label_len = 9;
  std::memcpy(e.label, "pid@host1", 9);
  Message list;
  list.type = MsgType::kSessionList;
  list.req_id = 6;
  list.payload.resize(sizeof(SessionListHead) + sizeof e);
  const SessionListHead head{1, 0};
  std::memcpy(list.payload.data(), &head, sizeof head);
  std::memcpy(list.payload.data() + sizeof head, &e, sizeof e);
  put(dir, "session_list", frame(list));
  put(dir, "read", read_op(DataOp{0x7f0000000000, 42, 64}, 7));
  put(dir, "write", write_op(DataOp{0x7f0000000000, 42, 16}, 8));
  put(dir, "set_label", text_frame(MsgType::kSetLabel, "pid@host1", 9));
}

void handshake(const std::filesystem::path& dir) {
  auto tagged = [](std::uint8_t tag, const Bytes& b) {
    Bytes out{std::byte{tag}};
    out.insert(out.end(), b.begin(), b.end());
    return out;
  };
  // Tag bit 0: rdma; bit 1: the harness presents the right proof (else the bytes after the
  // handshake are the proof).
  const Bytes hello = encode(make_hello("", Nonce{1, 2, 3}, 1));
  put(dir, "tcp_hello_right_proof", tagged(2, hello));
  put(dir, "tcp_hello_wrong_proof", tagged(0, cat({hello, Bytes(sizeof(AuthProof), std::byte{9})})));
  put(dir, "tcp_hello_tenant", tagged(2, encode(make_hello("kv", Nonce{4}, 1))));
  // The RDMA private data as verbs_connection.cc builds it, zero-padded to the 56 bytes an
  // RC connect request carries.
  Bytes priv = make_connect_data("", Nonce{5, 6});
  put(dir, "rdma_connect_exact", tagged(3, priv));
  priv.resize(56);
  put(dir, "rdma_connect", tagged(3, priv));
  put(dir, "rdma_connect_tenant", tagged(1, make_connect_data("graph", Nonce{7})));
}

void core(const std::filesystem::path& dir) {
  // Slab 0 is the victim's; the fuzzed session's first ALLOC_SLAB makes slab 1 (20480 bytes:
  // 20000 rounded up to core_fuzz.cc's 4 KiB chunks).
  const Bytes alloc = frame(MsgType::kAllocSlab, AllocSlab{20000}, 1);
  put(dir, "alloc_write_read_free",
      cat({alloc, write_op(DataOp{slab_ref(1, 100), rkey_ref(1), 32}, 2),
           read_op(DataOp{slab_ref(1, 96), rkey_ref(1), 64}, 3),
           frame(MsgType::kFreeSlab, FreeSlab{2}, 4), text_frame(MsgType::kStats, "", 5)}));
  put(dir, "touch_victim",
      cat({alloc, read_op(DataOp{slab_ref(0, 0), rkey_ref(0), 64}, 2),
           write_op(DataOp{slab_ref(0, 8), rkey_ref(0), 16}, 3),
           frame(MsgType::kFreeSlab, FreeSlab{1}, 4)}));
  put(dir, "edges",
      cat({alloc, read_op(DataOp{slab_ref(1, 20480 - 8), rkey_ref(1), 16}, 2),
           read_op(DataOp{slab_ref(1, -1), rkey_ref(1), 1}, 3),
           write_op(DataOp{slab_ref(1, 0), rkey_ref(0), 8}, 4),
           frame(MsgType::kAllocSlab, AllocSlab{0}, 5),
           frame(MsgType::kAllocSlab, AllocSlab{1 << 20}, 6)}));  // beyond the capacity
  put(dir, "labels_and_lists",
      cat({text_frame(MsgType::kSetLabel, "pid@host1", 1),
           frame(MsgType::kListSessions, ListSessions{0}, 2),
           frame(MsgType::kListSessions, ListSessions{1}, 3), encode(make_hello("", Nonce{}, 4)),
           frame(MsgType::kAuth, AuthProof{}, 7), text_frame(MsgType::kPing, "", 8),
           frame(MsgType::kResume, ResumeRequest{1, Nonce{}}, 9),
           frame(MsgType::kSlabInfo, SlabInfo{}, 5), text_frame(MsgType::kStats, "", 6)}));
  put(dir, "list_slabs",
      cat({alloc, frame(MsgType::kAllocSlab, AllocSlab{4096}, 2),
           frame(MsgType::kListSlabs, ListSlabs{0}, 3), frame(MsgType::kFreeSlab, FreeSlab{2}, 4),
           frame(MsgType::kListSlabs, ListSlabs{2}, 5), text_frame(MsgType::kListSlabs, "", 6)}));
}

}  // namespace
}  // namespace farmem::proto

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_corpus CORPUS_DIR (test/fuzz/corpus)\n");
    return 2;
  }
  const std::filesystem::path root = argv[1];
  farmem::proto::wire(root / "wire");
  farmem::proto::handshake(root / "handshake");
  farmem::proto::core(root / "core");
  return 0;
}
