// Child processes for tests: farmem-memserver and a real etcd, started, signalled, killed and
// reaped by their owners. Every wait is bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "farmem/status.h"

namespace farmem::test {

/// A farmem-memserver child process (the project's own binary).
class MemserverProcess {
 public:
  MemserverProcess() = default;
  ~MemserverProcess();  // SIGKILL and reap, if still running
  MemserverProcess(const MemserverProcess&) = delete;
  MemserverProcess& operator=(const MemserverProcess&) = delete;

  /// Starts it on 127.0.0.1 (backend "tcp") or the RDMA device's address ("verbs"), on
  /// `port` (0: a free one), with `extra` flags appended, and waits for its "listening" line
  /// (at most 30 s).
  Status start(const std::string& backend, const std::vector<std::string>& extra = {},
               std::uint16_t port = 0);
  /// Sends `sig`; false when it is not running.
  bool signal(int sig);
  /// Waits for it to exit (at most `limit`); its wait status, or -1 when it did not exit.
  int reap(std::chrono::milliseconds limit = std::chrono::seconds(30));
  pid_t pid() const { return pid_; }
  const std::string& url() const { return url_; }

 private:
  pid_t pid_ = -1;
  FILE* out_ = nullptr;
  std::string url_;
};

/// A real etcd on 127.0.0.1 with free ports and a data dir of its own, removed at the end.
/// Fails (never skips) when the etcd binary is missing: ci/install-deps installs it.
class EtcdProcess {
 public:
  /// Starts it and waits until it answers /health (at most 30 s).
  static Result<std::unique_ptr<EtcdProcess>> start();
  ~EtcdProcess();  // SIGKILL, reap, remove the data dir
  EtcdProcess(const EtcdProcess&) = delete;
  EtcdProcess& operator=(const EtcdProcess&) = delete;

  /// SIGKILLs it and reaps it (the ports stay reserved for restart()).
  void kill_now();
  /// Starts it again on the same ports; with `fresh_data`, on an empty data dir (every key
  /// and lease gone, revisions from 1 again). Waits for /health.
  Status restart(bool fresh_data);

  std::uint16_t client_port() const { return client_port_; }
  /// "etcd://127.0.0.1:PORT" (the registry URL, default prefix).
  std::string registry_url() const;
  /// Where its output goes (read it when a test fails).
  std::filesystem::path log_path() const { return dir_ / "etcd.log"; }

 private:
  EtcdProcess() = default;
  Status launch();

  std::filesystem::path dir_;
  std::uint16_t client_port_ = 0;
  std::uint16_t peer_port_ = 0;
  pid_t pid_ = -1;
};

/// A TCP port on 127.0.0.1 that was free a moment ago.
Result<std::uint16_t> free_loopback_port();

}  // namespace farmem::test
