// Opening sessions on an in-process memserver Core the way a client does: HELLO, then the
// challenge-response (AUTH) when the Core has secrets, through the Core's own calls.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "memserver/core.h"
#include "transport/proto/auth.h"
#include "transport/proto/wire.h"

namespace farmem::test {

/// The AUTH request a client holding `secret` sends for `session` (opened with `nonce` as
/// `tenant`).
inline proto::Message auth_request(memserver::Core& core, const memserver::Session& session,
                                   std::string_view secret, std::string_view tenant,
                                   const proto::Nonce& nonce) {
  const proto::HelloOk ok = core.hello_reply(session);
  auto mac = proto::auth_proof(secret, proto::AuthRole::kClient, tenant, nonce, ok.server_nonce,
                               ok.session_id);
  return proto::Message::of(proto::MsgType::kAuth, proto::AuthProof{mac.ok() ? *mac : proto::Mac{}});
}

/// A session of `core` authenticated as `tenant` with `secret` (or the Core's refusal). The
/// memserver's own proof is checked too.
inline Result<std::shared_ptr<memserver::Session>> open_session(memserver::Core& core,
                                                                std::string_view secret,
                                                                std::string_view tenant = "",
                                                                std::string peer = "test",
                                                                proto::Nonce* resume_secret = nullptr) {
  FARMEM_ASSIGN_OR_RETURN(proto::Nonce nonce, proto::random_nonce());
  proto::Hello hello;
  hello.version = proto::kVersion;
  hello.tenant = tenant;
  hello.client_nonce = nonce;
  FARMEM_ASSIGN_OR_RETURN(auto session, core.open_session(hello, std::move(peer)));
  if (!core.auth_required()) {
    if (resume_secret != nullptr) *resume_secret = core.hello_reply(*session).resume_secret;
    return session;
  }
  const proto::Message reply = core.handle(*session, auth_request(core, *session, secret, tenant, nonce));
  if (reply.type == proto::MsgType::kError) return reply.error_status();
  FARMEM_ASSIGN_OR_RETURN(proto::AuthOk theirs, reply.as<proto::AuthOk>());
  if (resume_secret != nullptr) *resume_secret = theirs.resume_secret;
  const proto::HelloOk ok = core.hello_reply(*session);
  FARMEM_ASSIGN_OR_RETURN(proto::Mac expected,
                          proto::auth_proof(secret, proto::AuthRole::kServer, tenant, nonce,
                                            ok.server_nonce, ok.session_id));
  if (!proto::mac_equal(expected, theirs.mac)) return PermissionDenied("memserver's proof is wrong");
  return session;
}

}  // namespace farmem::test
