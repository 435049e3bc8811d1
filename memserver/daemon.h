// farmem-memserver as a service: readiness and state for systemd (Type=notify, through
// libsystemd's sd_notify) and the signal loop of main(). Part of the binary only.
#pragma once

#include <csignal>
#include <functional>
#include <string>

namespace farmem::memserver {

/// sd_notify(3) "READY=1" with a STATUS= line. Does nothing when the service manager did not
/// ask (no NOTIFY_SOCKET); a failure to notify is logged, never fatal.
void notify_ready(const std::string& status);

/// The signals main() handles: SIGINT and SIGTERM stop the server, SIGHUP reopens its log.
/// Blocks them in the calling thread, so every thread started afterwards inherits the mask
/// and only wait_for_stop() receives them. Call before starting any thread.
sigset_t block_service_signals();

/// Waits for the signals of block_service_signals(). On SIGHUP: notifies RELOADING=1, runs
/// `on_hangup`, notifies READY=1 with `status`, and waits again. On SIGINT or SIGTERM:
/// notifies STOPPING=1 and returns the signal.
int wait_for_stop(const sigset_t& signals, const std::function<void()>& on_hangup,
                  const std::string& status);

}  // namespace farmem::memserver
