#include "transport/transport.h"

#include <charconv>
#include <cstring>

namespace farmem::transport {

std::string Endpoint::to_string() const {
  if (scheme == "local") return "local";
  return scheme + "://" + host + ":" + std::to_string(port);
}

Result<Endpoint> parse_endpoint(std::string_view url) {
  if (url == "local") return Endpoint{"local", "", 0};
  const auto sep = url.find("://");
  if (sep == std::string_view::npos) {
    return InvalidArgument("server '" + std::string(url) +
                           "' is not a URL: use rdma://host:port, tcp://host:port, tls://host:port or local");
  }
  Endpoint ep;
  ep.scheme = std::string(url.substr(0, sep));
  if (ep.scheme != "rdma" && ep.scheme != "tcp" && ep.scheme != "tls") {
    return InvalidArgument("server '" + std::string(url) + "': unknown scheme '" + ep.scheme +
                           "' (rdma, tcp, tls or local)");
  }
  auto rest = url.substr(sep + 3);
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == rest.size()) {
    return InvalidArgument("server '" + std::string(url) + "': expected host:port");
  }
  ep.host = std::string(rest.substr(0, colon));
  if (ep.host.size() > 2 && ep.host.front() == '[' && ep.host.back() == ']') {
    ep.host = ep.host.substr(1, ep.host.size() - 2);
  }
  const auto port_text = rest.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || p != port_text.data() + port_text.size() || port == 0 ||
      port > 65535) {
    return InvalidArgument("server '" + std::string(url) + "': bad port '" +
                           std::string(port_text) + "'");
  }
  ep.port = static_cast<std::uint16_t>(port);
  return ep;
}

namespace {
Result<proto::Message> expect(Result<proto::Message> reply, proto::MsgType want) {
  if (!reply.ok()) return reply;
  if (reply->type != want) {
    return ProtocolError("expected " + std::string(proto::to_string(want)) + " reply, got " +
                         std::string(proto::to_string(reply->type)));
  }
  return reply;
}
}  // namespace

Status validate_credentials(const ConnectOptions& options) {
  if (options.token.size() > proto::kMaxSecretBytes) {
    return InvalidArgument("auth secret of " + std::to_string(options.token.size()) +
                           " bytes; at most " + std::to_string(proto::kMaxSecretBytes));
  }
  if (options.tenant.size() > proto::kMaxTenantBytes) {
    return InvalidArgument("tenant name '" + options.tenant + "' is " +
                           std::to_string(options.tenant.size()) + " bytes; at most " +
                           std::to_string(proto::kMaxTenantBytes));
  }
  if (!options.tenant.empty() && options.token.empty()) {
    return InvalidArgument("tenant '" + options.tenant + "' given without its secret");
  }
  return Status::Ok();
}

Status finish_handshake(Connection& c, const ConnectOptions& options, const proto::HelloOk& ok,
                        const proto::Nonce& client_nonce) {
  const bool required = (ok.flags & proto::kHelloAuthRequired) != 0;
  SessionTicket ticket{ok.session_id, ok.resume_secret};
  if (!required && !options.token.empty()) {
    return PermissionDenied(c.peer() +
                            ": the memserver does not authenticate (it runs --insecure) but "
                            "this client has a secret: refusing a memserver that cannot prove "
                            "it holds it");
  }
  if (required && options.token.empty()) {
    return PermissionDenied(c.peer() +
                            ": the memserver requires authentication: give the tenant's "
                            "secret (RuntimeOptions::auth_token, and auth_tenant for a named "
                            "tenant)");
  }
  if (required) {
    FARMEM_ASSIGN_OR_RETURN(proto::Mac mine,
                            proto::auth_proof(options.token, proto::AuthRole::kClient,
                                              options.tenant, client_nonce, ok.server_nonce,
                                              ok.session_id));
    auto reply = expect(c.call(proto::Message::of(proto::MsgType::kAuth, proto::AuthProof{mine}),
                               options.control_timeout),
                        proto::MsgType::kAuthOk);
    if (!reply.ok()) return reply.status().with_context(c.peer());
    FARMEM_ASSIGN_OR_RETURN(proto::AuthOk theirs, reply->as<proto::AuthOk>());
    FARMEM_ASSIGN_OR_RETURN(proto::Mac expected,
                            proto::auth_proof(options.token, proto::AuthRole::kServer,
                                              options.tenant, client_nonce, ok.server_nonce,
                                              ok.session_id));
    if (!proto::mac_equal(theirs.mac, expected)) {
      return PermissionDenied(c.peer() +
                              ": the memserver's answer to our challenge is wrong: it does not "
                              "hold this tenant's secret (not the memserver you meant?)");
    }
    ticket.resume_secret = theirs.resume_secret;
  }
  if (options.resume) {
    const proto::ResumeRequest req{options.resume->session_id, options.resume->resume_secret};
    auto reply = expect(c.call(proto::Message::of(proto::MsgType::kResume, req),
                               options.control_timeout),
                        proto::MsgType::kResumeOk);
    if (!reply.ok()) return reply.status().with_context(c.peer() + ": resuming");
    FARMEM_ASSIGN_OR_RETURN(proto::ResumeOk resumed, reply->as<proto::ResumeOk>());
    if (resumed.session_id != options.resume->session_id) {
      return ProtocolError(c.peer() + ": RESUME_OK names another session");
    }
    ticket = *options.resume;
  }
  c.set_ticket(ticket);
  return Status::Ok();
}

Result<proto::SlabInfo> alloc_slab(Connection& c, std::uint64_t bytes,
                                   std::chrono::nanoseconds timeout) {
  auto reply = expect(c.call(proto::Message::of(proto::MsgType::kAllocSlab,
                                                proto::AllocSlab{bytes}),
                             timeout),
                      proto::MsgType::kSlabInfo);
  if (!reply.ok()) return reply.status();
  return reply->as<proto::SlabInfo>();
}

Status free_slab(Connection& c, std::uint64_t slab_id, std::chrono::nanoseconds timeout) {
  auto reply = expect(c.call(proto::Message::of(proto::MsgType::kFreeSlab,
                                                proto::FreeSlab{slab_id}),
                             timeout),
                      proto::MsgType::kFreeOk);
  return reply.status();
}

Result<proto::ServerStats> server_stats(Connection& c, std::chrono::nanoseconds timeout) {
  proto::Message req;
  req.type = proto::MsgType::kStats;
  auto reply = expect(c.call(std::move(req), timeout), proto::MsgType::kStatsReply);
  if (!reply.ok()) return reply.status();
  return reply->as<proto::ServerStats>();
}

namespace {
class PlainRegistration final : public MemoryRegistration {
 public:
  PlainRegistration(void* addr, std::size_t length) : addr_(addr), length_(length) {}
  std::uint32_t lkey() const override { return 0; }
  void* addr() const override { return addr_; }
  std::size_t length() const override { return length_; }

 private:
  void* addr_;
  std::size_t length_;
};
}  // namespace

Result<std::unique_ptr<MemoryRegistration>> plain_registration(void* addr, std::size_t length) {
  if (addr == nullptr || length == 0) return InvalidArgument("register_memory: empty range");
  return std::unique_ptr<MemoryRegistration>(new PlainRegistration(addr, length));
}

Status set_label(Connection& c, std::string_view label, std::chrono::nanoseconds timeout) {
  if (label.empty() || label.size() > proto::kMaxLabelBytes) {
    return InvalidArgument("a client label is 1.." + std::to_string(proto::kMaxLabelBytes) +
                           " bytes, got " + std::to_string(label.size()));
  }
  proto::Message req;
  req.type = proto::MsgType::kSetLabel;
  req.payload.resize(label.size());
  std::memcpy(req.payload.data(), label.data(), label.size());
  return expect(c.call(std::move(req), timeout), proto::MsgType::kLabelOk).status();
}

Result<std::vector<proto::SlabInfo>> list_slabs(Connection& c, std::chrono::nanoseconds timeout) {
  // Bounds the pages asked for, should a server keep answering `more` (127 slabs a page).
  constexpr int kMaxPages = 1 << 16;
  std::vector<proto::SlabInfo> out;
  std::uint64_t after = 0;
  for (int page = 0; page < kMaxPages; ++page) {
    auto reply = expect(c.call(proto::Message::of(proto::MsgType::kListSlabs,
                                                  proto::ListSlabs{after}), timeout),
                        proto::MsgType::kSlabList);
    if (!reply.ok()) return reply.status();
    bool more = false;
    FARMEM_ASSIGN_OR_RETURN(auto slabs, proto::parse_slab_list(reply->payload, after, &more));
    if (!slabs.empty()) after = slabs.back().slab_id;
    out.insert(out.end(), slabs.begin(), slabs.end());
    if (!more) return out;
  }
  return ProtocolError(c.peer() + ": SLAB_LIST never ended");
}

Result<std::vector<proto::SessionEntry>> list_sessions(Connection& c,
                                                       std::chrono::nanoseconds timeout) {
  // Bounds the pages asked for, should a server keep answering `more`: 4096 pages hold far
  // more sessions than a memserver admits (its TCP listener takes 1024 clients).
  constexpr int kMaxPages = 4096;
  std::vector<proto::SessionEntry> out;
  std::uint64_t after = 0;
  for (int page = 0; page < kMaxPages; ++page) {
    proto::Message req = proto::Message::of(proto::MsgType::kListSessions,
                                            proto::ListSessions{after});
    auto reply = expect(c.call(std::move(req), timeout), proto::MsgType::kSessionList);
    if (!reply.ok()) return reply.status();
    proto::SessionListHead head;
    const auto& p = reply->payload;
    if (p.size() < sizeof head) return ProtocolError("SESSION_LIST shorter than its head");
    std::memcpy(&head, p.data(), sizeof head);
    if (head.count > proto::kMaxSessionsPerList ||
        p.size() != sizeof head + head.count * sizeof(proto::SessionEntry)) {
      return ProtocolError("SESSION_LIST of " + std::to_string(p.size()) + " bytes does not hold " +
                           std::to_string(head.count) + " entries");
    }
    for (std::uint32_t i = 0; i < head.count; ++i) {
      proto::SessionEntry e;
      std::memcpy(&e, p.data() + sizeof head + i * sizeof e, sizeof e);
      if (e.label_len > sizeof e.label || e.session_id <= after) {
        return ProtocolError("SESSION_LIST entry out of order or with a bad label length");
      }
      after = e.session_id;
      out.push_back(e);
    }
    if (head.more == 0) return out;
    if (head.count == 0) return ProtocolError("SESSION_LIST says more but holds nothing");
  }
  return ProtocolError("SESSION_LIST: more than " + std::to_string(kMaxPages) + " pages");
}

Status validate_ops(std::span<const Op> ops, const Capabilities& caps) {
  if (ops.empty()) return InvalidArgument("empty batch");
  if (ops.size() > caps.max_batch_ops) {
    return InvalidArgument("batch of " + std::to_string(ops.size()) + " ops exceeds the " +
                           caps.name + " limit of " + std::to_string(caps.max_batch_ops));
  }
  for (const Op& op : ops) {
    if (op.length == 0 || op.length > caps.max_op_bytes) {
      return InvalidArgument("op length " + std::to_string(op.length) + " outside 1.." +
                             std::to_string(caps.max_op_bytes) + " for " + caps.name);
    }
    if (op.local == nullptr) return InvalidArgument("op with a null local buffer");
  }
  return Status::Ok();
}

}  // namespace farmem::transport
