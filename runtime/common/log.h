// The one levelled logger of libfarmem and farmem-memserver (spdlog, logger name "farmem").
// Library code logs here and never prints to stdout; main() picks the level and sink.
#pragma once

#include <spdlog/spdlog.h>

namespace farmem {

/// The "farmem" logger (stderr, level from set_log_level; default: warn).
spdlog::logger& log();
/// "trace", "debug", "info", "warn", "error", "off"; false when the name is unknown.
bool set_log_level(std::string_view level);

}  // namespace farmem
