// A real etcd for tests, started, killed, restarted and cleaned up by its owner. Every wait is
// bounded. (farmem-memserver processes: memserver_process.h.)
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
