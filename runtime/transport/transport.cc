#include "transport/transport.h"

#include <charconv>

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
                           "' is not a URL: use rdma://host:port, tcp://host:port or local");
  }
  Endpoint ep;
  ep.scheme = std::string(url.substr(0, sep));
  if (ep.scheme != "rdma" && ep.scheme != "tcp") {
    return InvalidArgument("server '" + std::string(url) + "': unknown scheme '" + ep.scheme +
                           "' (rdma, tcp or local)");
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
