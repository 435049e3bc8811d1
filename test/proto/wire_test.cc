// Frame encoding, decoding and validation, without any transport.
#include <gtest/gtest.h>

#include "transport/proto/wire.h"
#include "transport/transport.h"

namespace farmem::proto {
namespace {

TEST(Wire, RoundTripsAMessage) {
  auto m = Message::of(MsgType::kAllocSlab, AllocSlab{12345});
  m.req_id = 77;
  auto bytes = encode(m);
  ASSERT_EQ(bytes.size(), sizeof(FrameHeader) + sizeof(AllocSlab));
  auto back = decode(bytes);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->type, MsgType::kAllocSlab);
  EXPECT_EQ(back->req_id, 77u);
  auto body = back->as<AllocSlab>();
  ASSERT_TRUE(body.ok());
  EXPECT_EQ(body->bytes, 12345u);
}

TEST(Wire, RejectsBadMagicVersionAndLength) {
  auto bytes = encode(Message::of(MsgType::kFreeSlab, FreeSlab{1}));
  auto bad = bytes;
  bad[0] = std::byte{0};
  EXPECT_EQ(decode(bad).status().code(), StatusCode::kProtocolError);

  FrameHeader h = make_header(MsgType::kStats, 1, 0);
  h.version = kVersion + 1;
  EXPECT_EQ(validate_header(h).code(), StatusCode::kProtocolError);
  EXPECT_NE(validate_header(h).message().find("version"), std::string::npos);

  h = make_header(MsgType::kStats, 1, kMaxControlPayload + 1);
  EXPECT_EQ(validate_header(h).code(), StatusCode::kProtocolError);
  h = make_header(MsgType::kWrite, 1, kMaxControlPayload + 1);  // data frames may be large
  EXPECT_TRUE(validate_header(h).ok());
}

TEST(Wire, RejectsTruncatedFramesAndWrongPayloadSizes) {
  auto bytes = encode(Message::of(MsgType::kAllocSlab, AllocSlab{1}));
  bytes.pop_back();
  auto r = decode(bytes);
  EXPECT_EQ(r.status().code(), StatusCode::kProtocolError);
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos);
  EXPECT_EQ(decode(std::span(bytes).first(10)).status().code(), StatusCode::kProtocolError);

  auto m = Message::of(MsgType::kAllocSlab, AllocSlab{1});
  EXPECT_EQ(m.as<SlabInfo>().status().code(), StatusCode::kProtocolError);
}

TEST(Wire, ErrorMessagesCarryTheirCode) {
  auto e = Message::error(StatusCode::kResourceExhausted, "full", 9);
  auto back = decode(encode(e));
  ASSERT_TRUE(back.ok());
  auto st = back->error_status();
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("full"), std::string::npos);
}

TEST(Wire, LabelAndSessionListMessagesAreRequestsOrRepliesByName) {
  using proto::MsgType;
  EXPECT_TRUE(proto::is_request(MsgType::kSetLabel));
  EXPECT_TRUE(proto::is_request(MsgType::kListSessions));
  EXPECT_FALSE(proto::is_request(MsgType::kLabelOk));
  EXPECT_FALSE(proto::is_request(MsgType::kSessionList));
  EXPECT_EQ(proto::to_string(MsgType::kSetLabel), "SET_LABEL");
  EXPECT_EQ(proto::to_string(MsgType::kSessionList), "SESSION_LIST");
  // A full page of sessions fits in one control payload, so in RDMA's control slots too.
  EXPECT_LE(sizeof(proto::SessionListHead) +
                proto::kMaxSessionsPerList * sizeof(proto::SessionEntry),
            proto::kMaxControlPayload);
  EXPECT_GE(proto::kMaxSessionsPerList, 50u);
}

TEST(Wire, ErrorRepliesMayHaveNoText) {
  // Found by fuzz_wire: the empty text was memcpy'd from a null payload (UB, UBSan aborts).
  auto back = decode(encode(Message::error(StatusCode::kNotFound, "", 3)));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->payload.empty());
  EXPECT_EQ(back->error_status().code(), StatusCode::kNotFound);
}

TEST(Wire, HelloHeaderMustBeAHelloWithABoundedToken) {
  EXPECT_TRUE(check_hello_header(make_header(MsgType::kHello, 1, kMaxTokenBytes)).ok());
  EXPECT_EQ(check_hello_header(make_header(MsgType::kHello, 1, kMaxTokenBytes + 1)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(check_hello_header(make_header(MsgType::kStats, 1, 0)).code(),
            StatusCode::kProtocolError);
  FrameHeader h = make_header(MsgType::kHello, 1, 4);
  h.magic = 0;
  EXPECT_EQ(check_hello_header(h).code(), StatusCode::kProtocolError);
}

TEST(Wire, ConnectDataCarriesVersionAndTokenAndToleratesPadding) {
  const std::string token = "s3cret";
  std::vector<std::byte> pd(56);  // zero-padded as rdma_cm delivers it on IB/RoCE
  const ConnectData cd{kMagic, 7, static_cast<std::uint16_t>(token.size())};
  std::memcpy(pd.data(), &cd, sizeof cd);
  std::memcpy(pd.data() + sizeof cd, token.data(), token.size());
  auto hello = parse_connect_data(pd);
  ASSERT_TRUE(hello.ok()) << hello.status().to_string();
  EXPECT_EQ(hello->version, 7);  // judged by the Core, not here
  EXPECT_EQ(hello->token, token);

  EXPECT_FALSE(parse_connect_data(std::span(pd).first(sizeof cd + token.size() - 1)).ok());
  EXPECT_FALSE(parse_connect_data(std::span(pd).first(4)).ok());
  auto bad = pd;
  bad[0] = std::byte{0};
  EXPECT_EQ(parse_connect_data(bad).status().code(), StatusCode::kProtocolError);
  const ConnectData too_long{kMagic, kVersion, static_cast<std::uint16_t>(kMaxTokenBytes + 1)};
  std::vector<std::byte> big(sizeof too_long + kMaxTokenBytes + 1);
  std::memcpy(big.data(), &too_long, sizeof too_long);
  EXPECT_EQ(parse_connect_data(big).status().code(), StatusCode::kProtocolError);
}

TEST(Wire, AnAddressInNoSlabIsNamedInHex) {
  const Status st = check_access(nullptr, 0xdeadbeef000, 8, 1);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("address 0xdeadbeef000 "), std::string::npos) << st.message();
}

TEST(Endpoint, ParsesUrlsAndRejectsBadOnes) {
  auto e = transport::parse_endpoint("rdma://10.0.0.1:7471");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->scheme, "rdma");
  EXPECT_EQ(e->host, "10.0.0.1");
  EXPECT_EQ(e->port, 7471);
  EXPECT_TRUE(transport::parse_endpoint("local").ok());
  EXPECT_EQ(transport::parse_endpoint("tcp://[::1]:80")->host, "::1");
  for (const char* bad : {"10.0.0.1:1", "udp://h:1", "tcp://h", "tcp://h:0", "tcp://h:70000",
                          "tcp://:5", "tcp://h:5x"}) {
    EXPECT_EQ(transport::parse_endpoint(bad).status().code(), StatusCode::kInvalidArgument)
        << bad;
  }
}

}  // namespace
}  // namespace farmem::proto
