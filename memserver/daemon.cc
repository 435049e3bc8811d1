#include "memserver/daemon.h"

#include <pthread.h>
#include <systemd/sd-daemon.h>

#include <cstring>

#include "common/log.h"

namespace farmem::memserver {

namespace {

void notify(const std::string& state) {
  // unset_environment = 0: a reload must still be able to notify.
  const int rc = sd_notify(0, state.c_str());
  if (rc < 0) log().warn("sd_notify: {}", std::strerror(-rc));
}

}  // namespace

void notify_ready(const std::string& status) { notify("READY=1\nSTATUS=" + status); }

sigset_t block_service_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

int wait_for_stop(const sigset_t& signals, const std::function<void()>& on_hangup,
                  const std::string& status) {
  for (;;) {  // ends on the first SIGINT or SIGTERM; each SIGHUP is one round
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig != SIGHUP) {
      notify("STOPPING=1\nSTATUS=stopping on signal " + std::to_string(sig));
      return sig;
    }
    notify("RELOADING=1\nSTATUS=reopening the log");
    on_hangup();
    notify("READY=1\nSTATUS=" + status);
  }
}

}  // namespace farmem::memserver
