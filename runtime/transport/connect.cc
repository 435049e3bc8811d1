#include "transport/connect.h"

#include "transport/local/local.h"
#include "transport/resume/resuming_connection.h"
#include "transport/tcp/tcp.h"
#include "transport/verbs/verbs.h"

namespace farmem::transport {

Result<std::unique_ptr<Connection>> connect(std::string_view url, const ConnectOptions& options,
                                            std::shared_ptr<memserver::Core> local_core) {
  FARMEM_RETURN_IF_ERROR(validate_credentials(options));
  FARMEM_ASSIGN_OR_RETURN(Endpoint ep, parse_endpoint(url));
  if (ep.scheme == "local") {
    if (!local_core) return InvalidArgument("'local' server requested but none was provided");
    return connect_local(std::move(local_core), options);
  }
  if (ep.scheme == "tcp" || ep.scheme == "tls") {
    if (!options.resume_on_break) return connect_tcp(ep, options);
    return connect_resuming([ep](const ConnectOptions& o) { return connect_tcp(ep, o); },
                            options, options.heartbeat);
  }
  if (!options.resume_on_break) return connect_verbs(ep, options);
  // Every connection of one resuming connection shares a protection domain, so that local
  // registrations survive a reconnection (transport/resume/resuming_connection.h).
  return connect_resuming(
      [ep, share = make_verbs_pd_share()](const ConnectOptions& o) {
        return connect_verbs(ep, o, share);
      },
      options, options.heartbeat);
}

}  // namespace farmem::transport
