// A farmem-memserver child process (the project's own binary) that a test can stop
// (SIGSTOP: a peer that stalls rather than dies), resume or kill.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "farmem/status.h"
#include "test/support/test_server.h"

namespace farmem::test {

/// A farmem-memserver child process (the project's own binary), stopped and killed at will.
class ServerProcess {
 public:
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ != nullptr) std::fclose(out_);
  }
  /// Starts it on 127.0.0.1 (tcp) or the RDMA device's address (verbs), port 0.
  Status start(const std::string& backend) {
    std::string listen_flag, host;
    if (backend == "tcp") {
      listen_flag = "--tcp";
      host = "127.0.0.1";
    } else {
      listen_flag = "--rdma";
      host = rdma_test_address();
    }
    const std::string listen = host + ":0";
    int fds[2];
    if (pipe(fds) != 0) return Internal("pipe failed");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      execl(FARMEM_MEMSERVER_BIN, FARMEM_MEMSERVER_BIN, listen_flag.c_str(), listen.c_str(),
            "--token", kToken, "--capacity", "64M", "--log-level", "error", nullptr);
      _exit(127);
    }
    close(fds[1]);
    out_ = fdopen(fds[0], "r");
    char line[256] = {};
    if (out_ == nullptr || std::fgets(line, sizeof line, out_) == nullptr) {
      return Unavailable("farmem-memserver printed nothing");
    }
    unsigned port = 0;
    char what[16] = {};
    if (std::sscanf(line, "listening %15s %*s port %u", what, &port) != 2 || port == 0) {
      return Internal(std::string("unexpected memserver output: ") + line);
    }
    url_ = (backend == "tcp" ? "tcp://" : "rdma://") + host + ":" + std::to_string(port);
    return Status::Ok();
  }
  void signal(int sig) { ASSERT_EQ(kill(pid_, sig), 0); }
  void reap() {
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  const std::string& url() const { return url_; }

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
  std::string url_;
};

}  // namespace farmem::test
