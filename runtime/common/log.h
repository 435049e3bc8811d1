// The one levelled logger of libfarmem and farmem-memserver (spdlog, logger name "farmem").
// Library code logs here and never prints to stdout; main() picks the level and sink.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

#include "farmem/status.h"

namespace farmem {

/// The "farmem" logger (stderr, level from set_log_level; default: warn).
spdlog::logger& log();
/// "trace", "debug", "info", "warn", "error", "off"; false when the name is unknown.
bool set_log_level(std::string_view level);

/// Sends the logger's lines to `path` (appended; created if missing) instead of stderr, each
/// line flushed as it is written. For programs (farmem-memserver --log-file); call it before
/// other threads log, since it replaces the logger's sinks. Fails naming the file.
Status log_to_file(const std::string& path);
/// Reopens the file of log_to_file by its name, as logrotate expects after it moved the old
/// one away: later lines go to a new file of that name. Safe while other threads log. Ok and
/// nothing done when the logger does not write to a file.
Status reopen_log_file();

}  // namespace farmem
