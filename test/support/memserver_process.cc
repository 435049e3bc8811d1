#include "test/support/memserver_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "test/support/test_server.h"

namespace farmem::test {

namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point end) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

// Forks and execs argv with stdout into a pipe (returned in *out_fd) and stdin from
// /dev/null; `env` is added to the child's environment.
Result<pid_t> spawn(const std::vector<std::string>& argv,
                    const std::map<std::string, std::string>& env, int* out_fd) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Internal(std::string("pipe: ") + std::strerror(errno));
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return Internal(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    const int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, STDIN_FILENO);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  close(fds[1]);
  *out_fd = fds[0];
  return pid;
}

}  // namespace

MemserverProcess::~MemserverProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (out_fd_ >= 0) close(out_fd_);
}

Status MemserverProcess::start(const std::vector<std::string>& args,
                               const std::vector<std::string>& kinds,
                               const std::map<std::string, std::string>& env,
                               std::chrono::milliseconds deadline) {
  std::vector<std::string> argv{FARMEM_MEMSERVER_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  auto pid = spawn(argv, env, &out_fd_);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  const auto end = Clock::now() + deadline;
  std::string text;
  char buf[512];
  // Bounded by the deadline: every poll waits at most what is left of it.
  while (ports_.size() < kinds.size()) {
    pollfd p{out_fd_, POLLIN, 0};
    if (poll(&p, 1, remaining_ms(end)) <= 0) {
      return TimedOut("farmem-memserver printed only: '" + text + "'");
    }
    const ssize_t n = read(out_fd_, buf, sizeof buf);
    if (n <= 0) return Unavailable("farmem-memserver exited after printing: '" + text + "'");
    text.append(buf, static_cast<std::size_t>(n));
    std::istringstream lines(text);
    std::string line;
    while (std::getline(lines, line)) {
      char kind[16] = {};
      unsigned port = 0;
      if (std::sscanf(line.c_str(), "listening %15s %*s port %u", kind, &port) == 2) {
        ports_[kind] = static_cast<std::uint16_t>(port);
      }
    }
  }
  return Status::Ok();
}

Status MemserverProcess::start(const std::string& backend, const std::vector<std::string>& extra,
                               std::uint16_t port) {
  const bool tcp = backend == "tcp";
  const std::string host = tcp ? "127.0.0.1" : rdma_test_address();
  std::vector<std::string> args{tcp ? "--tcp" : "--rdma", host + ":" + std::to_string(port),
                                "--token", kToken, "--capacity", "64M", "--log-level", "error"};
  args.insert(args.end(), extra.begin(), extra.end());
  const std::string kind = tcp ? "tcp" : "rdma";
  FARMEM_RETURN_IF_ERROR(start(args, {kind}, {}, std::chrono::seconds(30)));
  url_ = kind + "://" + host + ":" + std::to_string(this->port(kind));
  return Status::Ok();
}

int MemserverProcess::reap(std::chrono::milliseconds limit) {
  if (pid_ <= 0) return -1;
  int status = 0;
  const bool exited = eventually([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, limit);
  if (!exited) return -1;
  pid_ = -1;
  return status;
}

std::uint16_t MemserverProcess::port(const std::string& kind) const {
  auto it = ports_.find(kind);
  return it == ports_.end() ? 0 : it->second;
}

Status MemserverProcess::signal(int sig) const {
  if (pid_ <= 0 || kill(pid_, sig) != 0) return Internal("cannot signal the memserver");
  return Status::Ok();
}

Status MemserverProcess::stop() const {
  FARMEM_RETURN_IF_ERROR(signal(SIGSTOP));
  // /proc/PID/stat: "PID (COMM) STATE ..."; COMM may hold spaces, STATE follows its ')'.
  const std::string path = "/proc/" + std::to_string(pid_) + "/stat";
  const bool stopped = eventually([&] {
    std::ifstream f(path);
    std::string line;
    std::getline(f, line);
    const auto close = line.rfind(')');
    return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'T';
  });
  return stopped ? Status::Ok() : TimedOut("the memserver did not stop within 10 s");
}

Result<int> MemserverProcess::wait_exit(std::chrono::milliseconds deadline) {
  int status = 0;
  const bool exited = eventually([&] { return waitpid(pid_, &status, WNOHANG) == pid_; },
                                 deadline);
  if (!exited) return TimedOut("farmem-memserver still running");
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Result<RunResult> run_program(const std::vector<std::string>& argv,
                              std::chrono::milliseconds deadline) {
  int fd = -1;
  auto pid = spawn(argv, {}, &fd);
  if (!pid.ok()) return pid.status();
  RunResult r;
  const auto end = Clock::now() + deadline;
  char buf[4096];
  bool overran = false;
  for (;;) {  // until EOF or the deadline
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, remaining_ms(end)) <= 0) {
      overran = true;
      break;
    }
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    r.out.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  int status = 0;
  if (overran) kill(*pid, SIGKILL);
  waitpid(*pid, &status, 0);
  if (overran) return TimedOut(argv[0] + " ran past its deadline");
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace farmem::test
