// RAII wrappers for what a mapped region is made of: a file descriptor, an anonymous mapping,
// and a userfaultfd with the few ioctls regions use (register, copy, write-protect, wake).
// Thin on purpose: policy (what to install, when to protect) lives in region/.
#pragma once

#include <linux/userfaultfd.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "farmem/status.h"

namespace farmem::region {

/// The base page size: UFFDIO_COPY on anonymous memory installs exactly base pages, and every
/// region bookkeeping unit (charge, fetch, write-back, protection) is one of these.
inline constexpr std::size_t kPageSize = 4096;

/// An owned file descriptor; closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

/// An anonymous private mapping (MAP_NORESERVE, no transparent huge pages); unmapped on
/// destruction.
class Mapping {
 public:
  static Result<Mapping> anonymous(std::size_t bytes);
  Mapping() = default;
  ~Mapping();
  Mapping(Mapping&& o) noexcept
      : base_(std::exchange(o.base_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  std::byte* data() const { return base_; }
  std::size_t size() const { return bytes_; }
  std::span<std::byte> span() const { return {base_, bytes_}; }

 private:
  std::byte* base_ = nullptr;
  std::size_t bytes_ = 0;
};

/// What UFFDIO_COPY did.
enum class CopyOutcome : std::uint8_t {
  kInstalled,       ///< the page is now mapped (and waiters woken unless asked not to)
  kAlreadyPresent,  ///< something was mapped there already (EEXIST): nothing changed
};

/// A userfaultfd, opened non-blocking and close-on-exec, with its API handshake done.
///
/// Kernel-mode faults are handled too (no UFFD_USER_MODE_ONLY): a region pointer handed to
/// read(2) or a NIC must work like any other memory. That needs CAP_SYS_PTRACE (root) for the
/// syscall, or access to /dev/userfaultfd, which is tried second.
class Uffd {
 public:
  Uffd() = default;  ///< not open; assign from open()
  /// Fails with a clear Status when a `required` feature bit is missing (e.g. write-protect on
  /// kernels before 5.7); `optional` bits are asked for and kept only if the kernel has them.
  static Result<Uffd> open(std::uint64_t required, std::uint64_t optional);

  int fd() const { return fd_.get(); }
  /// The features the handshake enabled.
  std::uint64_t features() const { return features_; }
  bool has(std::uint64_t feature) const { return (features_ & feature) == feature; }

  /// Registers [addr, addr+len) with `modes` (UFFDIO_REGISTER_MODE_*) and checks that the
  /// range supports every ioctl in `needed_ioctls` (bit masks 1 << _UFFDIO_*).
  Status register_range(void* addr, std::size_t len, std::uint64_t modes,
                        std::uint64_t needed_ioctls);
  /// Atomically maps a copy of `src` at `dst` (page multiples); with `write_protect` the
  /// pages are installed write-protected. Wakes waiters on the range.
  Result<CopyOutcome> copy(void* dst, const void* src, std::size_t len, bool write_protect);
  /// Sets (`protect`) or clears write protection on [addr, addr+len). Clearing wakes waiters.
  Status write_protect(void* addr, std::size_t len, bool protect);
  /// Wakes threads waiting for faults in [addr, addr+len) so they retry their access.
  Status wake(void* addr, std::size_t len);
  /// Reads pending messages into `out` (non-blocking); returns how many (0: none pending).
  Result<std::size_t> read_messages(std::span<uffd_msg> out);

 private:
  Uffd(UniqueFd fd, std::uint64_t features) : fd_(std::move(fd)), features_(features) {}
  UniqueFd fd_;
  std::uint64_t features_ = 0;
};

/// Delivers SIGBUS to thread `tid` of this process (si_code SI_QUEUE, the faulting address in
/// si_value.sival_ptr): what the kernel itself does when a file-backed page cannot be read
/// in. Returns false if it could not.
bool send_sigbus(pid_t tid, void* addr);

}  // namespace farmem::region
