#include "common/log.h"

#include <spdlog/details/file_helper.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

#include "common/mutex.h"
#include "common/thread_annotations.h"

namespace farmem {

namespace {

// A file sink that can reopen its file by name (spdlog's basic_file_sink cannot). Writes and
// the reopen both hold base_sink's mutex, so a line never goes to a half-closed file.
class ReopenableFileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit ReopenableFileSink(const std::string& path) { file_.open(path, false); }
  void reopen() {
    std::lock_guard lock(mutex_);
    file_.reopen(false);
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    file_.write(line);
    file_.flush();  // a daemon's lines must be in the file when an operator looks
  }
  void flush_() override { file_.flush(); }

 private:
  spdlog::details::file_helper file_;
};

// The sink installed by log_to_file, if any.
Mutex file_mu;
std::shared_ptr<ReopenableFileSink> file_sink FARMEM_GUARDED_BY(file_mu);

}  // namespace

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

Status log_to_file(const std::string& path) {
  std::shared_ptr<ReopenableFileSink> sink;
  try {
    sink = std::make_shared<ReopenableFileSink>(path);
  } catch (const spdlog::spdlog_ex& e) {
    return IoError("cannot open log file " + path + ": " + e.what());
  }
  MutexLock lock(file_mu);
  log().sinks().assign(1, sink);
  file_sink = std::move(sink);
  return Status::Ok();
}

Status reopen_log_file() {
  MutexLock lock(file_mu);
  if (!file_sink) return Status::Ok();
  try {
    file_sink->reopen();
  } catch (const spdlog::spdlog_ex& e) {
    return IoError(std::string("cannot reopen the log file: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace farmem
