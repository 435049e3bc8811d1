// The in-process backend: ops are memcpys into the Core's slabs, checked exactly as the TCP
// listener checks them, so it behaves like a remote memserver minus the wire.
#include <cstring>

#include "common/sanitizers.h"
#include "transport/local/local.h"

namespace farmem::transport {

namespace {

// Generous limits: nothing crosses a wire, but keep them finite so callers size batches.
constexpr std::uint32_t kLocalMaxOpBytes = 1u << 30;
constexpr std::uint32_t kLocalMaxBatchOps = 1u << 16;

class LocalConnection final : public Connection {
 public:
  LocalConnection(std::shared_ptr<memserver::Core> core,
                  std::shared_ptr<memserver::Session> session)
      : core_(std::move(core)), session_(std::move(session)) {
    caps_.name = "local";
    caps_.one_sided = false;
    caps_.max_op_bytes = kLocalMaxOpBytes;
    caps_.max_batch_ops = kLocalMaxBatchOps;
  }
  ~LocalConnection() override { core_->close_session(*session_); }

  const Capabilities& capabilities() const override { return caps_; }
  const std::string& peer() const override { return peer_; }

  Result<std::unique_ptr<MemoryRegistration>> register_memory(void* addr,
                                                              std::size_t length) override {
    return plain_registration(addr, length);
  }

  Status post(std::span<const Op> ops, Completion& done) override {
    FARMEM_RETURN_IF_ERROR(validate_ops(ops, caps_));
    done.arm(1);
    Status first;
    for (const Op& op : ops) {
      auto st = session_->access(op.remote_addr, op.rkey, op.length, [&](std::byte* remote) {
        // Far memory's side is ignored by TSan (see TsanIgnoreAccesses); ours is noted, so
        // a race on the application's buffer is still reported.
        {
          TsanIgnoreAccesses far_side;
          if (op.kind == OpKind::kRead) {
            std::memcpy(op.local, remote, op.length);
          } else {
            std::memcpy(remote, op.local, op.length);
          }
        }
        if (op.kind == OpKind::kRead) {
          tsan_note_write(op.local, op.length);
        } else {
          tsan_note_read(op.local, op.length);
        }
      });
      if (!st.ok() && first.ok()) first = st.with_context("local");
    }
    done.finish_part(first);
    return Status::Ok();
  }

  Status wait(Completion& done, std::chrono::nanoseconds) override {
    // post() completes synchronously: there is never anything left to drive.
    return done.status();
  }

  Result<proto::Message> call(proto::Message request, std::chrono::nanoseconds) override {
    auto reply = core_->handle(*session_, request);
    if (reply.type == proto::MsgType::kError) return reply.error_status();
    return reply;
  }

 private:
  std::shared_ptr<memserver::Core> core_;
  std::shared_ptr<memserver::Session> session_;
  Capabilities caps_;
  std::string peer_ = "local";
};

}  // namespace

Result<std::unique_ptr<Connection>> connect_local(std::shared_ptr<memserver::Core> core,
                                                  const ConnectOptions& options) {
  if (!core) return InvalidArgument("connect_local: no in-process memserver");
  FARMEM_RETURN_IF_ERROR(validate_credentials(options));
  // The same handshake as over a network, through the Core's calls: an in-process memserver
  // with secrets checks them like any other.
  FARMEM_ASSIGN_OR_RETURN(proto::Nonce nonce, proto::random_nonce());
  proto::Hello hello;
  hello.version = proto::kVersion;
  hello.tenant = options.tenant;
  hello.client_nonce = nonce;
  auto session = core->open_session(hello, "local");
  if (!session.ok()) return session.status().with_context("local");
  const proto::HelloOk ok = core->hello_reply(**session);
  std::unique_ptr<Connection> conn(new LocalConnection(std::move(core), std::move(session).value()));
  FARMEM_RETURN_IF_ERROR(finish_handshake(*conn, options, ok, nonce));
  return conn;
}

}  // namespace farmem::transport
