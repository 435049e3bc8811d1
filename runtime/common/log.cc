#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace farmem {

spdlog::logger& log() {
  // Created on first use so that programs that never log pay nothing.
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_color_mt("farmem");
    l->set_level(spdlog::level::warn);
    return l;
  }();
  return *logger;
}

bool set_log_level(std::string_view level) {
  const auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") return false;
  log().set_level(lvl);
  return true;
}

}  // namespace farmem
