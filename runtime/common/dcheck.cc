#include "common/dcheck.h"

#include <unistd.h>

#include <cstdlib>
#include <exception>

namespace farmem::detail {

void dcheck_failed(const char* file, int line, const char* cond,
                   std::string_view message) noexcept {
  std::string text;
  try {
    text = fmt::format("farmem: dcheck failed at {}:{}: {}{}{}\n", file, line, cond,
                       message.empty() ? "" : ": ", message);
  } catch (...) {
    text = "farmem: dcheck failed (and formatting its message failed too)\n";
  }
  // One write(2), not the logger: see dcheck.h. A short write leaves a truncated line, which
  // is still better than a second attempt from a process about to abort.
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, text.data(), text.size());
  std::abort();
}

}  // namespace farmem::detail
