#include "region/uffd.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace farmem::region {

namespace {

std::string errno_text(const char* what) {
  return std::string(what) + ": " + std::strerror(errno);
}

/// A new userfaultfd: the syscall first, /dev/userfaultfd (Linux >= 6.1) when the syscall is
/// refused (vm.unprivileged_userfaultfd=0 without CAP_SYS_PTRACE).
Result<UniqueFd> new_uffd_fd() {
  const int flags = O_CLOEXEC | O_NONBLOCK;
  int fd = static_cast<int>(::syscall(SYS_userfaultfd, flags));
  if (fd >= 0) return UniqueFd(fd);
  const int syscall_errno = errno;
  UniqueFd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
  if (dev.valid()) {
    fd = ::ioctl(dev.get(), USERFAULTFD_IOC_NEW, flags);
    if (fd >= 0) return UniqueFd(fd);
  }
  return PermissionDenied(std::string("userfaultfd unavailable (syscall: ") +
                          std::strerror(syscall_errno) +
                          "; /dev/userfaultfd: " + std::strerror(errno) +
                          "): needs CAP_SYS_PTRACE or access to /dev/userfaultfd");
}

/// UFFDIO_API with `features`; the kernel answers with what it supports in api.features.
Result<std::uint64_t> handshake(int fd, std::uint64_t features) {
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(fd, UFFDIO_API, &api) != 0) return Internal(errno_text("UFFDIO_API"));
  return static_cast<std::uint64_t>(api.features);
}

/// Runs an ioctl, retrying while the kernel says the mm is changing under it (EAGAIN from
/// fork/mremap in flight): the operation did not happen and is safe to repeat.
template <typename Arg>
int ioctl_retrying(int fd, unsigned long request, Arg* arg) {
  for (;;) {
    const int rc = ::ioctl(fd, request, arg);
    if (rc == 0 || errno != EAGAIN) return rc;
  }
}

}  // namespace

void UniqueFd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Result<Mapping> Mapping::anonymous(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return ResourceExhausted(errno_text("mmap of a region"));
  // Pages are tracked one base page at a time; a huge page would merge 512 of them.
  (void)::madvise(p, bytes, MADV_NOHUGEPAGE);
  Mapping m;
  m.base_ = static_cast<std::byte*>(p);
  m.bytes_ = bytes;
  return m;
}

Mapping::~Mapping() {
  if (base_ != nullptr) ::munmap(base_, bytes_);
}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    if (base_ != nullptr) ::munmap(base_, bytes_);
    base_ = std::exchange(o.base_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

Result<Uffd> Uffd::open(std::uint64_t required, std::uint64_t optional) {
  // UFFDIO_API may be issued once per descriptor, so a probe descriptor learns what the
  // kernel has and a second one is opened with exactly the features wanted.
  std::uint64_t available = 0;
  {
    FARMEM_ASSIGN_OR_RETURN(UniqueFd probe, new_uffd_fd());
    FARMEM_ASSIGN_OR_RETURN(available, handshake(probe.get(), 0));
  }
  if ((available & required) != required) {
    return Unavailable("userfaultfd lacks required features (have 0x" + std::to_string(available) +
                       ", need 0x" + std::to_string(required) +
                       "): anonymous write-protect needs Linux >= 5.7");
  }
  FARMEM_ASSIGN_OR_RETURN(UniqueFd fd, new_uffd_fd());
  const std::uint64_t wanted = required | (optional & available);
  FARMEM_ASSIGN_OR_RETURN(std::uint64_t enabled, handshake(fd.get(), wanted));
  return Uffd(std::move(fd), enabled & wanted);
}

Status Uffd::register_range(void* addr, std::size_t len, std::uint64_t modes,
                            std::uint64_t needed_ioctls) {
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<std::uintptr_t>(addr);
  reg.range.len = len;
  reg.mode = modes;
  if (::ioctl(fd(), UFFDIO_REGISTER, &reg) != 0) return Internal(errno_text("UFFDIO_REGISTER"));
  if ((reg.ioctls & needed_ioctls) != needed_ioctls) {
    return Unavailable("userfaultfd range lacks ioctls (have 0x" + std::to_string(reg.ioctls) +
                       ", need 0x" + std::to_string(needed_ioctls) + ")");
  }
  return Status::Ok();
}

Result<CopyOutcome> Uffd::copy(void* dst, const void* src, std::size_t len, bool write_protect) {
  std::size_t done = 0;
  while (done < len) {
    uffdio_copy c{};
    c.dst = reinterpret_cast<std::uintptr_t>(dst) + done;
    c.src = reinterpret_cast<std::uintptr_t>(src) + done;
    c.len = len - done;
    c.mode = write_protect ? UFFDIO_COPY_MODE_WP : 0;
    if (::ioctl(fd(), UFFDIO_COPY, &c) == 0) return CopyOutcome::kInstalled;
    if (errno == EEXIST && done == 0 && c.copy == -EEXIST) return CopyOutcome::kAlreadyPresent;
    if (errno != EAGAIN) return Internal(errno_text("UFFDIO_COPY"));
    // EAGAIN: a partial copy (c.copy > 0 bytes went in) or the mm was changing; go on.
    if (c.copy > 0) done += static_cast<std::size_t>(c.copy);
  }
  return CopyOutcome::kInstalled;
}

Status Uffd::write_protect(void* addr, std::size_t len, bool protect) {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<std::uintptr_t>(addr);
  wp.range.len = len;
  wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  if (ioctl_retrying(fd(), UFFDIO_WRITEPROTECT, &wp) != 0) {
    return Internal(errno_text("UFFDIO_WRITEPROTECT"));
  }
  return Status::Ok();
}

Status Uffd::wake(void* addr, std::size_t len) {
  uffdio_range r{};
  r.start = reinterpret_cast<std::uintptr_t>(addr);
  r.len = len;
  if (::ioctl(fd(), UFFDIO_WAKE, &r) != 0) return Internal(errno_text("UFFDIO_WAKE"));
  return Status::Ok();
}

Result<std::size_t> Uffd::read_messages(std::span<uffd_msg> out) {
  for (;;) {
    const ssize_t n = ::read(fd(), out.data(), out.size_bytes());
    if (n >= 0) return static_cast<std::size_t>(n) / sizeof(uffd_msg);
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return std::size_t{0};
    return Internal(errno_text("read of userfaultfd"));
  }
}

bool send_sigbus(pid_t tid, void* addr) {
  // The kernel refuses a positive si_code (e.g. BUS_ADRERR) from any thread but the thread
  // group leader, so this is an SI_QUEUE signal carrying the address in si_value.
  siginfo_t info{};
  info.si_signo = SIGBUS;
  info.si_code = SI_QUEUE;
  info.si_pid = ::getpid();
  info.si_uid = ::getuid();
  info.si_value.sival_ptr = addr;
  return ::syscall(SYS_rt_tgsigqueueinfo, ::getpid(), tid, SIGBUS, &info) == 0;
}

}  // namespace farmem::region
