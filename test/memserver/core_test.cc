// The memserver core without any listener: sessions, auth, tenants, leases, capacity,
// reclaim.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "memserver/core.h"
#include "memserver/server.h"
#include "memserver/tenants.h"
#include "test/support/core_session.h"

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

proto::Hello hello_of(std::string_view tenant, const proto::Nonce& nonce,
                      std::uint16_t version = proto::kVersion) {
  proto::Hello h;
  h.version = version;
  h.tenant = tenant;
  h.client_nonce = nonce;
  return h;
}

TEST(Core, AuthenticatesByChallengeResponse) {
  Core core(small());
  for (const char* wrong : {"wrong", "secre", "secret!", ""}) {
    auto s = test::open_session(core, wrong);
    EXPECT_EQ(s.status().code(), StatusCode::kPermissionDenied) << wrong;
  }
  EXPECT_EQ(core.open_session(hello_of("", {}, proto::kVersion + 1), "t").status().code(),
            StatusCode::kProtocolError);
  EXPECT_TRUE(test::open_session(core, "secret").ok());
  EXPECT_EQ(core.auth_failures(), 4u);
  EXPECT_EQ(core.stats().sessions, 1u);  // the refused ones were closed
}

TEST(Core, NothingIsServedBeforeAuthAndAFailedAuthClosesTheSession) {
  Core core(small());
  const proto::Nonce nonce{1, 2, 3};
  auto s = *core.open_session(hello_of("", nonce), "t");
  EXPECT_FALSE(s->authenticated());
  const proto::HelloOk ok = core.hello_reply(*s);
  EXPECT_EQ(ok.flags & proto::kHelloAuthRequired, proto::kHelloAuthRequired);
  EXPECT_EQ(ok.capacity_bytes, 0u);  // told only to whom authenticated
  for (auto type : {proto::MsgType::kAllocSlab, proto::MsgType::kStats,
                    proto::MsgType::kListSessions, proto::MsgType::kSetLabel}) {
    proto::Message m;
    m.type = type;
    EXPECT_EQ(core.handle(*s, m).error_status().code(), StatusCode::kPermissionDenied)
        << proto::to_string(type);
  }
  EXPECT_EQ(s->access(0, 0, 8, [](std::byte*) {}).code(), StatusCode::kPermissionDenied);
  auto bad = test::auth_request(core, *s, "wrong", "", nonce);
  EXPECT_EQ(core.handle(*s, bad).error_status().code(), StatusCode::kPermissionDenied);
  // Closed now: even the right proof comes too late.
  auto good = test::auth_request(core, *s, "secret", "", nonce);
  EXPECT_EQ(core.handle(*s, good).error_status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(core.stats().sessions, 0u);
}

TEST(Core, AReplayedProofIsRefused) {
  Core core(small());
  const proto::Nonce nonce{9, 9, 9};
  auto first = *core.open_session(hello_of("", nonce), "victim");
  const proto::Message proof = test::auth_request(core, *first, "secret", "", nonce);
  ASSERT_EQ(core.handle(*first, proof).type, proto::MsgType::kAuthOk);
  // An eavesdropper replays the victim's HELLO (same nonce) and AUTH: the memserver's nonce
  // and the session id differ, so the old proof does not fit.
  auto replay = *core.open_session(hello_of("", nonce), "eavesdropper");
  EXPECT_EQ(core.handle(*replay, proof).error_status().code(), StatusCode::kPermissionDenied);
  EXPECT_FALSE(replay->authenticated());
  // AUTH twice on a good session is a protocol error, not a second login.
  EXPECT_EQ(core.handle(*first, proof).error_status().code(), StatusCode::kProtocolError);
}

TEST(Core, WithoutSecretsEveryoneIsTheAnonymousTenant) {
  CoreOptions o = small();
  o.token.clear();
  Core core(o);
  EXPECT_FALSE(core.auth_required());
  auto s = *core.open_session(hello_of("", {}), "t");
  EXPECT_TRUE(s->authenticated());
  EXPECT_EQ(core.hello_reply(*s).flags, 0u);
  EXPECT_EQ(core.handle(*s, alloc(1)).type, proto::MsgType::kSlabInfo);
}

CoreOptions with_tenants() {
  CoreOptions o;
  o.capacity_bytes = 32u << 20;
  o.chunk_bytes = 2u << 20;
  o.tenants = {{"kv", "kv-secret", 4u << 20, 2}, {"graph", "graph-secret", 0, 0}};
  return o;
}

TEST(Core, TenantsLogInWithTheirOwnSecretOnly) {
  Core core(with_tenants());
  EXPECT_TRUE(test::open_session(core, "kv-secret", "kv").ok());
  EXPECT_TRUE(test::open_session(core, "graph-secret", "graph").ok());
  // Another tenant's secret, an unknown tenant, and the anonymous tenant (no token) fail
  // alike.
  EXPECT_EQ(test::open_session(core, "graph-secret", "kv").status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(test::open_session(core, "x", "nobody").status().code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(test::open_session(core, "", "").status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(core.auth_failures(), 3u);
}

TEST(Core, ATenantsQuotaAndConnectionCapAreClearErrors) {
  Core core(with_tenants());
  auto a = *test::open_session(core, "kv-secret", "kv");
  ASSERT_EQ(core.handle(*a, alloc(4u << 20)).type, proto::MsgType::kSlabInfo);
  const auto over = core.handle(*a, alloc(1)).error_status();
  EXPECT_EQ(over.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(over.message().find("quota of tenant 'kv'"), std::string::npos) << over.to_string();
  // The pool itself had room: another tenant still leases.
  auto g = *test::open_session(core, "graph-secret", "graph");
  EXPECT_EQ(core.handle(*g, alloc(8u << 20)).type, proto::MsgType::kSlabInfo);

  auto b = *test::open_session(core, "kv-secret", "kv");  // kv's second connection: its cap
  const auto third = test::open_session(core, "kv-secret", "kv").status();
  EXPECT_EQ(third.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(third.message().find("cap"), std::string::npos) << third.to_string();
  core.close_session(*b);
  EXPECT_TRUE(test::open_session(core, "kv-secret", "kv").ok());  // a slot came back

  bool found = false;
  for (const TenantUsage& t : core.tenants()) {
    if (t.name != "kv") continue;
    found = true;
    EXPECT_EQ(t.used_bytes, 4u << 20);
    EXPECT_EQ(t.quota_bytes, 4u << 20);
    EXPECT_EQ(t.refused, 2u);  // one slab, one connection
  }
  EXPECT_TRUE(found);
  core.close_session(*a);  // its slab goes back to the quota
  for (const TenantUsage& t : core.tenants()) {
    if (t.name == "kv") {
      EXPECT_EQ(t.used_bytes, 0u);
    }
  }
}

TEST(Core, ATenantCannotTouchFreeOrListAnotherTenantsSlabsAndSessions) {
  Core core(with_tenants());
  auto victim = *test::open_session(core, "graph-secret", "graph", "victim");
  auto info = *core.handle(*victim, alloc(4096)).as<proto::SlabInfo>();
  bool written = false;
  ASSERT_TRUE(victim->access(info.addr, info.rkey, 8, [&](std::byte* p) {
    std::memset(p, 0x5a, 8);
    written = true;
  }).ok());
  ASSERT_TRUE(written);
  auto thief = *test::open_session(core, "kv-secret", "kv", "thief");
  bool touched = false;
  // Knowing the address, the key and the slab id (as a guesser might) gets it nothing.
  EXPECT_EQ(thief->access(info.addr, info.rkey, 8, [&](std::byte*) { touched = true; }).code(),
            StatusCode::kOutOfRange);
  EXPECT_FALSE(touched);
  EXPECT_EQ(core.handle(*thief, proto::Message::of(proto::MsgType::kFreeSlab,
                                                   proto::FreeSlab{info.slab_id}))
                .error_status()
                .code(),
            StatusCode::kNotFound);
  auto list = core.handle(*thief, proto::Message::of(proto::MsgType::kListSessions,
                                                     proto::ListSessions{0}));
  ASSERT_EQ(list.type, proto::MsgType::kSessionList);
  proto::SessionListHead head;
  std::memcpy(&head, list.payload.data(), sizeof head);
  EXPECT_EQ(head.count, 1u);  // itself only
  proto::SessionEntry e;
  std::memcpy(&e, list.payload.data() + sizeof head, sizeof e);
  EXPECT_EQ(e.session_id, thief->id());
  // The bystander's bytes are intact.
  EXPECT_TRUE(victim->access(info.addr, info.rkey, 8, [&](std::byte* p) {
    for (int i = 0; i < 8; ++i) EXPECT_EQ(p[i], std::byte{0x5a});
  }).ok());
}

CoreOptions with_grace(std::chrono::milliseconds grace) {
  CoreOptions o = small();
  o.lease_grace = grace;
  return o;
}

void fill(Session& s, std::uint64_t attachment, const proto::SlabInfo& info, std::byte value) {
  ASSERT_TRUE(s.access_as(attachment, info.addr, info.rkey, 64,
                          [&](std::byte* p) { std::memset(p, static_cast<int>(value), 64); })
                  .ok());
}

bool holds(Session& s, std::uint64_t attachment, const proto::SlabInfo& info, std::byte value) {
  bool same = false;
  const Status st = s.access_as(attachment, info.addr, info.rkey, 64, [&](std::byte* p) {
    same = std::all_of(p, p + 64, [&](std::byte b) { return b == value; });
  });
  return st.ok() && same;
}

TEST(Core, ADetachedSessionKeepsItsSlabsForTheGraceThenIsReclaimed) {
  Core core(with_grace(std::chrono::hours(1)));  // the reaper would take an hour: we call it
  auto s = *test::open_session(core, "secret");
  auto info = *core.handle(*s, alloc(4096)).as<proto::SlabInfo>();
  core.detach_session(*s, s->attachment());
  EXPECT_EQ(core.sessions_detached(), 1u);
  EXPECT_EQ(core.stats().slabs, 1u);
  EXPECT_EQ(core.stats().sessions, 1u);
  EXPECT_EQ(core.reap_expired(std::chrono::steady_clock::now()), 0u);  // within the grace
  EXPECT_EQ(core.reap_expired(std::chrono::steady_clock::now() + std::chrono::hours(2)), 1u);
  EXPECT_EQ(core.stats().slabs, 0u);
  EXPECT_EQ(core.stats().sessions, 0u);
  EXPECT_EQ(core.sessions_expired(), 1u);
  EXPECT_EQ(core.sessions_detached(), 0u);
  (void)info;
}

TEST(Core, WithoutAGraceOrBeforeAuthADetachedSessionClosesAtOnce) {
  Core none(small());
  auto a = *test::open_session(none, "secret");
  ASSERT_EQ(none.handle(*a, alloc(4096)).type, proto::MsgType::kSlabInfo);
  none.detach_session(*a, a->attachment());
  EXPECT_EQ(none.stats().slabs, 0u);
  Core graced(with_grace(std::chrono::hours(1)));
  auto pending = *graced.open_session(hello_of("", proto::Nonce{}), "p");  // no AUTH yet
  graced.detach_session(*pending, pending->attachment());
  EXPECT_EQ(graced.stats().sessions, 0u);
}

TEST(Core, ResumeTakesTheSessionOverWithItsSecretOnly) {
  CoreOptions o = with_grace(std::chrono::hours(1));
  o.tenants = {{"other", "other-secret", 0, 0}};
  Core core(o);
  proto::Nonce secret{};
  auto s = *test::open_session(core, "secret", "", "first", &secret);
  auto info = *core.handle(*s, alloc(4096)).as<proto::SlabInfo>();
  const auto first = s->attachment();
  fill(*s, first, info, std::byte{0x42});
  core.detach_session(*s, first);

  auto fresh = *test::open_session(core, "secret", "", "second");
  proto::Nonce wrong = secret;
  wrong[0] ^= 1;
  EXPECT_EQ(core.resume_session(*fresh, {s->id(), wrong}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(core.resume_session(*fresh, {s->id() + 100, secret}).status().code(),
            StatusCode::kNotFound);
  auto stranger = *test::open_session(core, "other-secret", "other", "stranger");
  EXPECT_EQ(core.resume_session(*stranger, {s->id(), secret}).status().code(),
            StatusCode::kNotFound);  // another tenant, even with the secret

  auto back = core.resume_session(*fresh, {s->id(), secret});
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(back->get(), s.get());
  EXPECT_EQ(core.sessions_detached(), 0u);
  EXPECT_EQ(core.sessions_resumed(), 1u);
  EXPECT_TRUE(holds(*s, s->attachment(), info, std::byte{0x42}));
  // The connection before can do nothing more, and its late end changes nothing.
  EXPECT_EQ(s->access_as(first, info.addr, info.rkey, 8, [](std::byte*) {}).code(),
            StatusCode::kUnavailable);
  core.detach_session(*s, first);
  EXPECT_EQ(core.sessions_detached(), 0u);
  EXPECT_EQ(core.stats().slabs, 1u);
  // The fresh session is gone: two sessions remain (the resumed one and the stranger).
  EXPECT_EQ(core.stats().sessions, 2u);
}

TEST(Core, ResumeTakesOverASessionWhoseConnectionOnlyStalled) {
  Core core(with_grace(std::chrono::hours(1)));
  proto::Nonce secret{};
  auto s = *test::open_session(core, "secret", "", "stalled", &secret);
  auto info = *core.handle(*s, alloc(4096)).as<proto::SlabInfo>();
  const auto stalled = s->attachment();
  auto fresh = *test::open_session(core, "secret", "", "new");
  ASSERT_TRUE(core.resume_session(*fresh, {s->id(), secret}).ok());
  const auto now = s->attachment();
  EXPECT_NE(now, stalled);
  // The stalled connection wakes up with a write in its buffer: refused, the data stays.
  fill(*s, now, info, std::byte{0x11});
  EXPECT_EQ(s->access_as(stalled, info.addr, info.rkey, 64,
                         [](std::byte* p) { std::memset(p, 0x99, 64); })
                .code(),
            StatusCode::kUnavailable);
  EXPECT_TRUE(holds(*s, now, info, std::byte{0x11}));
}

TEST(Core, ADetachedSessionFreesItsTenantsConnectionSlotAndResumeTakesOneBack) {
  CoreOptions o = with_grace(std::chrono::hours(1));
  o.token.clear();
  o.tenants = {{"kv", "kv-secret", 0, 1}};
  Core core(o);
  proto::Nonce secret{};
  auto s = *test::open_session(core, "kv-secret", "kv", "a", &secret);
  EXPECT_EQ(test::open_session(core, "kv-secret", "kv").status().code(),
            StatusCode::kResourceExhausted);
  core.detach_session(*s, s->attachment());
  auto fresh = *test::open_session(core, "kv-secret", "kv", "b");  // the freed slot
  ASSERT_TRUE(core.resume_session(*fresh, {s->id(), secret}).ok());
  EXPECT_EQ(test::open_session(core, "kv-secret", "kv").status().code(),
            StatusCode::kResourceExhausted);  // the resumed session holds the one slot
  core.close_session(*s);
  EXPECT_TRUE(test::open_session(core, "kv-secret", "kv").ok());
}

TEST(Core, TheReaperClosesExpiredSessions) {
  Core core(with_grace(std::chrono::milliseconds(50)));
  auto s = *test::open_session(core, "secret");
  ASSERT_EQ(core.handle(*s, alloc(4096)).type, proto::MsgType::kSlabInfo);
  core.detach_session(*s, s->attachment());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (core.stats().slabs != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(core.stats().slabs, 0u);
  EXPECT_EQ(core.sessions_expired(), 1u);
}

TEST(Tenants, FileIsCheckedStrictly) {
  auto ok = parse_tenants(R"({"tenants": [{"name": "kv", "secret": "s", "quota": "4G",
                             "max_connections": 3}, {"name": "g", "secret": "t", "quota": 1024}]})",
                          "f");
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[0].quota_bytes, 4ull << 30);
  EXPECT_EQ((*ok)[0].max_connections, 3u);
  EXPECT_EQ((*ok)[1].quota_bytes, 1024u);
  for (const char* bad : {
           "not json", R"({"tenant": []})", R"({"tenants": []})",
           R"({"tenants": [{"name": "kv"}]})", R"({"tenants": [{"secret": "s"}]})",
           R"({"tenants": [{"name": "kv", "secret": "s", "qouta": 1}]})",
           R"({"tenants": [{"name": "kv", "secret": "s"}, {"name": "kv", "secret": "t"}]})",
           R"({"tenants": [{"name": "0123456789012345678901234567890123", "secret": "s"}]})",
           R"({"tenants": [{"name": "kv", "secret": "s", "quota": "12Q"}]})",
           R"({"tenants": [{"name": "kv", "secret": "s", "max_connections": -1}]})"}) {
    auto r = parse_tenants(bad, "f");
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

// Every example of a tenants file in the docs (README.md and docs/*.md; the operator's guide
// has one) is one the memserver takes.
TEST(Tenants, TheDocsExampleFilesAreValid) {
  const std::filesystem::path root(FARMEM_SOURCE_DOCS);
  std::vector<std::filesystem::path> docs{root / "README.md"};
  for (const auto& e : std::filesystem::directory_iterator(root / "docs")) {
    if (e.path().extension() == ".md") docs.push_back(e.path());
  }
  int found = 0;
  for (const auto& doc : docs) {
    std::ifstream in(doc);
    ASSERT_TRUE(in) << doc;
    std::string line, block;
    bool inside = false;
    while (std::getline(in, line)) {  // bounded by the file
      if (!inside && line == "```json") {
        inside = true;
        block.clear();
      } else if (inside && line == "```") {
        inside = false;
        if (block.find("\"tenants\"") == std::string::npos) continue;
        ++found;
        auto t = parse_tenants(block, doc.string());
        ASSERT_TRUE(t.ok()) << doc << ": " << t.status().to_string();
        EXPECT_EQ(t->size(), 2u) << doc;
      } else if (inside) {
        block += line + "\n";
      }
    }
  }
  EXPECT_GE(found, 1) << "no ```json block with \"tenants\" in README.md or docs/*.md";
}

TEST(ServerCredentials, RefusesNoneUnlessInsecure) {
  ServerOptions o;
  o.tcp = ListenAddress{"127.0.0.1", 0};
  const Status none = check_credentials(o);
  EXPECT_EQ(none.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(none.message().find("--insecure"), std::string::npos) << none.to_string();
  EXPECT_EQ(Server::start(o).status().code(), StatusCode::kInvalidArgument);
  o.insecure = true;
  EXPECT_TRUE(check_credentials(o).ok());
  o.insecure = false;
  o.core.token = "t";
  EXPECT_TRUE(check_credentials(o).ok());
}

TEST(Core, GrowsOnDemandUpToCapacityAndReclaimsOnClose) {
  Core core(small());
  EXPECT_EQ(core.stats().used_bytes, 0u);  // an idle server holds nothing
  auto s = *test::open_session(core, "secret", "", "a");
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
  auto a = *test::open_session(core, "secret", "", "a");
  auto b = *test::open_session(core, "secret", "", "b");
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
  auto s = *test::open_session(core, "secret", "", "a");
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
