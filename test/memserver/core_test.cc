// The memserver core without any listener: sessions, auth, leases, capacity, reclaim.
#include <gtest/gtest.h>

#include "memserver/core.h"
#include "memserver/server.h"

namespace farmem::memserver {
namespace {

CoreOptions small() {
  CoreOptions o;
  o.capacity_bytes = 8u << 20;
  o.chunk_bytes = 2u << 20;
  o.token = "secret";
  return o;
}

proto::Message alloc(std::uint64_t bytes) {
  return proto::Message::of(proto::MsgType::kAllocSlab, proto::AllocSlab{bytes});
}

TEST(Core, AuthenticatesWithVersionAndToken) {
  Core core(small());
  EXPECT_EQ(core.open_session(proto::kVersion, "wrong", "t").status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(core.open_session(proto::kVersion, "secre", "t").status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(core.open_session(proto::kVersion + 1, "secret", "t").status().code(),
            StatusCode::kProtocolError);
  EXPECT_TRUE(core.open_session(proto::kVersion, "secret", "t").ok());
  EXPECT_EQ(core.stats().errors, 3u);
}

TEST(Core, GrowsOnDemandUpToCapacityAndReclaimsOnClose) {
  Core core(small());
  EXPECT_EQ(core.stats().used_bytes, 0u);  // an idle server holds nothing
  auto s = *core.open_session(proto::kVersion, "secret", "a");
  auto r1 = core.handle(*s, alloc(1));
  ASSERT_EQ(r1.type, proto::MsgType::kSlabInfo);
  EXPECT_EQ(r1.as<proto::SlabInfo>()->bytes, 2u << 20);
  EXPECT_EQ(core.stats().used_bytes, 2u << 20);
  ASSERT_EQ(core.handle(*s, alloc(6u << 20)).type, proto::MsgType::kSlabInfo);
  auto full = core.handle(*s, alloc(1));
  ASSERT_EQ(full.type, proto::MsgType::kError);
  EXPECT_EQ(full.error_status().code(), StatusCode::kResourceExhausted);
  core.close_session(*s);
  const auto st = core.stats();
  EXPECT_EQ(st.used_bytes, 0u);
  EXPECT_EQ(st.slabs, 0u);
  EXPECT_EQ(st.slabs_reclaimed, 2u);
  EXPECT_EQ(st.sessions, 0u);
}

TEST(Core, SessionsCannotTouchOrFreeEachOthersSlabs) {
  Core core(small());
  auto a = *core.open_session(proto::kVersion, "secret", "a");
  auto b = *core.open_session(proto::kVersion, "secret", "b");
  auto info = *core.handle(*a, alloc(4096)).as<proto::SlabInfo>();
  bool touched = false;
  auto st = b->access(info.addr, info.rkey, 8, [&](std::byte*) { touched = true; });
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_FALSE(touched);
  auto free_b = core.handle(*b, proto::Message::of(proto::MsgType::kFreeSlab,
                                                   proto::FreeSlab{info.slab_id}));
  EXPECT_EQ(free_b.error_status().code(), StatusCode::kNotFound);
  // A's own access works, with the right key only, inside the slab only.
  EXPECT_TRUE(a->access(info.addr, info.rkey, 8, [](std::byte*) {}).ok());
  EXPECT_EQ(a->access(info.addr, info.rkey ^ 1, 8, [](std::byte*) {}).code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(a->access(info.addr + info.bytes - 4, info.rkey, 8, [](std::byte*) {}).code(),
            StatusCode::kOutOfRange);
  auto f1 = core.handle(*a, proto::Message::of(proto::MsgType::kFreeSlab,
                                               proto::FreeSlab{info.slab_id}));
  EXPECT_EQ(f1.type, proto::MsgType::kFreeOk);
  auto f2 = core.handle(*a, proto::Message::of(proto::MsgType::kFreeSlab,
                                               proto::FreeSlab{info.slab_id}));
  EXPECT_EQ(f2.error_status().code(), StatusCode::kNotFound);
}

TEST(Core, AnswersUnknownAndMalformedRequestsWithErrors) {
  Core core(small());
  auto s = *core.open_session(proto::kVersion, "secret", "a");
  proto::Message unknown;
  unknown.type = static_cast<proto::MsgType>(999);
  EXPECT_EQ(core.handle(*s, unknown).error_status().code(), StatusCode::kProtocolError);
  proto::Message short_alloc;
  short_alloc.type = proto::MsgType::kAllocSlab;
  short_alloc.payload.resize(3);
  EXPECT_EQ(core.handle(*s, short_alloc).error_status().code(), StatusCode::kProtocolError);
  EXPECT_EQ(core.handle(*s, alloc(0)).error_status().code(), StatusCode::kInvalidArgument);
}

TEST(ServerFlags, ParsesSizesAndAddresses) {
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("64M"), 64u << 20);
  EXPECT_EQ(*parse_size("2GiB"), 2ull << 30);
  EXPECT_FALSE(parse_size("12Q").ok());
  EXPECT_FALSE(parse_size("").ok());
  EXPECT_FALSE(parse_size("99999999999T").ok());
  auto a = parse_listen_address("127.0.0.1:7472");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->port, 7472);
  EXPECT_FALSE(parse_listen_address("127.0.0.1").ok());
  EXPECT_FALSE(parse_listen_address("h:99999").ok());
}

TEST(ServerStart, RefusesConfigurationsThatCannotWork) {
  ServerOptions none;
  EXPECT_EQ(Server::start(none).status().code(), StatusCode::kInvalidArgument);
  ServerOptions tiny;
  tiny.tcp = ListenAddress{"127.0.0.1", 0};
  tiny.core.capacity_bytes = 4096;
  EXPECT_EQ(Server::start(tiny).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace farmem::memserver
