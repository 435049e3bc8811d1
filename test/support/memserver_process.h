// A farmem-memserver child process for tests of the binary itself (readiness, signals,
// config files, logs, metrics): started with chosen flags and environment, its
// "listening KIND ADDR port N" lines read within a deadline, killed and reaped at the end.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "farmem/status.h"

namespace farmem::test {

class MemserverProcess {
 public:
  MemserverProcess() = default;
  MemserverProcess(const MemserverProcess&) = delete;
  MemserverProcess& operator=(const MemserverProcess&) = delete;
  ~MemserverProcess();  // SIGKILL and reap, if still running

  /// Starts `program` (default: the project's farmem-memserver) with `args`, plus `env`
  /// added to its environment, and waits up to `deadline` for one "listening KIND ..." line
  /// per entry of `kinds` ("tcp", "rdma", "metrics") on its stdout.
  Status start(const std::vector<std::string>& args, const std::vector<std::string>& kinds,
               const std::map<std::string, std::string>& env = {},
               std::chrono::milliseconds deadline = std::chrono::seconds(10));

  /// The usual test memserver: on 127.0.0.1 (backend "tcp") or the RDMA device's address
  /// ("verbs") at `port` (0: a free one), with the test token, 64M and `extra` flags; waits
  /// for its listening line (at most 30 s). url() then names it.
  Status start(const std::string& backend, const std::vector<std::string>& extra = {},
               std::uint16_t port = 0);
  const std::string& url() const { return url_; }
  /// Waits up to `limit` for it to exit; its raw wait status, or -1 when it did not exit.
  int reap(std::chrono::milliseconds limit = std::chrono::seconds(30));

  /// The port printed for `kind` (0 when none was).
  std::uint16_t port(const std::string& kind) const;
  pid_t pid() const { return pid_; }
  Status signal(int sig) const;
  /// SIGSTOP, then waits (up to 10 s) until the kernel reports the process stopped: a stop
  /// is asynchronous, and a server still running for a moment would answer what the test
  /// means to leave unanswered.
  Status stop() const;
  /// Waits up to `deadline` for the process to exit; its exit code, or -1 (killed by a
  /// signal), or kTimedOut.
  Result<int> wait_exit(std::chrono::milliseconds deadline);

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::map<std::string, std::uint16_t> ports_;
  std::string url_;
};

/// Runs a program to completion (stdin closed), with at most `deadline`; returns its exit
/// code and stdout. The child is killed when it overruns.
struct RunResult {
  int exit_code = -1;
  std::string out;
};
Result<RunResult> run_program(const std::vector<std::string>& argv,
                              std::chrono::milliseconds deadline = std::chrono::seconds(30));

/// Polls `ready` every `period` until it is true or `deadline` passes; returns its last value.
template <typename Fn>
bool eventually(Fn&& ready, std::chrono::milliseconds deadline = std::chrono::seconds(10),
                std::chrono::milliseconds period = std::chrono::milliseconds(10)) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  for (;;) {  // bounded by the deadline
    if (ready()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(period);
  }
}

/// eventually() every 50 ms: for conditions read from etcd (a listing a poll), so that the
/// tests' own polling does not load it.
template <typename Fn>
bool wait_until(Fn&& done, std::chrono::milliseconds limit) {
  return eventually(std::forward<Fn>(done), limit, std::chrono::milliseconds(50));
}

}  // namespace farmem::test
