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

TEST(Wire, HelloHeaderMustBeAHelloWithABoundedTenant) {
  const auto fixed = static_cast<std::uint32_t>(sizeof(HelloRequest));
  EXPECT_TRUE(check_hello_header(make_header(MsgType::kHello, 1, fixed)).ok());
  EXPECT_TRUE(check_hello_header(make_header(MsgType::kHello, 1, fixed + kMaxTenantBytes)).ok());
  EXPECT_EQ(check_hello_header(make_header(MsgType::kHello, 1, fixed + kMaxTenantBytes + 1)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(check_hello_header(make_header(MsgType::kHello, 1, fixed - 1)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(check_hello_header(make_header(MsgType::kStats, 1, 0)).code(),
            StatusCode::kProtocolError);
  FrameHeader h = make_header(MsgType::kHello, 1, fixed);
  h.magic = 0;
  EXPECT_EQ(check_hello_header(h).code(), StatusCode::kProtocolError);
}

TEST(Wire, HelloCarriesTenantAndNonceButNoSecret) {
  const Nonce nonce{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  const Message m = make_hello("kv", nonce, 5);
  EXPECT_EQ(m.payload.size(), sizeof(HelloRequest) + 2);
  auto hello = parse_hello(kVersion, m.payload);
  ASSERT_TRUE(hello.ok()) << hello.status().to_string();
  EXPECT_EQ(hello->tenant, "kv");
  EXPECT_EQ(hello->client_nonce, nonce);
  auto cut = m.payload;
  cut.pop_back();
  EXPECT_EQ(parse_hello(kVersion, cut).status().code(), StatusCode::kProtocolError);
}

TEST(Wire, ConnectDataCarriesVersionTenantAndNonceAndToleratesPadding) {
  const Nonce nonce{7, 7, 7};
  std::vector<std::byte> pd = make_connect_data("graph", nonce);
  ASSERT_LE(pd.size(), 56u);
  pd.resize(56);  // zero-padded as rdma_cm delivers it on IB/RoCE
  auto hello = parse_connect_data(pd);
  ASSERT_TRUE(hello.ok()) << hello.status().to_string();
  EXPECT_EQ(hello->version, kVersion);
  EXPECT_EQ(hello->tenant, "graph");
  EXPECT_EQ(hello->client_nonce, nonce);
  const std::size_t used = sizeof(ConnectData) + kNonceBytes + 5;
  EXPECT_FALSE(parse_connect_data(std::span(pd).first(used - 1)).ok());
  EXPECT_FALSE(parse_connect_data(std::span(pd).first(4)).ok());
  auto bad = pd;
  bad[0] = std::byte{0};
  EXPECT_EQ(parse_connect_data(bad).status().code(), StatusCode::kProtocolError);
  const ConnectData too_long{kMagic, kVersion, static_cast<std::uint16_t>(kMaxTenantBytes + 1)};
  std::vector<std::byte> big(sizeof too_long + kNonceBytes + kMaxTenantBytes + 1);
  std::memcpy(big.data(), &too_long, sizeof too_long);
  EXPECT_EQ(parse_connect_data(big).status().code(), StatusCode::kProtocolError);
  // The longest name fits an RC connect request.
  EXPECT_EQ(make_connect_data(std::string(kMaxTenantBytes, 'n'), nonce).size(), 56u);
}

TEST(Auth, ProofsBindSecretRoleTenantNoncesAndSession) {
  const Nonce c{1}, sv{2};
  const Mac base = *auth_proof("s", AuthRole::kClient, "t", c, sv, 7);
  EXPECT_TRUE(mac_equal(base, *auth_proof("s", AuthRole::kClient, "t", c, sv, 7)));
  EXPECT_FALSE(mac_equal(base, *auth_proof("S", AuthRole::kClient, "t", c, sv, 7)));
  EXPECT_FALSE(mac_equal(base, *auth_proof("s", AuthRole::kServer, "t", c, sv, 7)));
  EXPECT_FALSE(mac_equal(base, *auth_proof("s", AuthRole::kClient, "u", c, sv, 7)));
  EXPECT_FALSE(mac_equal(base, *auth_proof("s", AuthRole::kClient, "t", sv, c, 7)));
  EXPECT_FALSE(mac_equal(base, *auth_proof("s", AuthRole::kClient, "t", c, sv, 8)));
  EXPECT_FALSE(*random_nonce() == *random_nonce());
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
