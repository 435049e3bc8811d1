// placeholder: being written
#include "memserver/tcp_listener.h"
namespace farmem::memserver {
Result<std::unique_ptr<TcpListener>> TcpListener::start(Core&, const std::string&, std::uint16_t) {
  return Internal("tcp listener not built yet");
}
}  // namespace farmem::memserver
