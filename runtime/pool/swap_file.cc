#include "pool/swap_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"

namespace farmem::pool {

namespace {

constexpr std::uint64_t kDirtyPage = 4096;
constexpr std::uint32_t kMaxOpBytes = 1u << 30;
constexpr std::uint32_t kMaxBatchOps = 1u << 16;

std::string errno_text(int e) { return std::strerror(e); }

Status pread_all(int fd, std::byte* p, std::uint64_t n, std::uint64_t off) {
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return IoError("swap file read: " + errno_text(errno));
    if (r == 0) {  // a hole past the end of the file reads as zeros
      std::memset(p, 0, n);
      return Status::Ok();
    }
    p += r;
    off += static_cast<std::uint64_t>(r);
    n -= static_cast<std::uint64_t>(r);
  }
  return Status::Ok();
}

Status pwrite_all(int fd, const std::byte* p, std::uint64_t n, std::uint64_t off) {
  while (n > 0) {
    const ssize_t r = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      if (errno == ENOSPC) return ResourceExhausted("swap file write: no space left on device");
      return IoError("swap file write: " + errno_text(errno));
    }
    p += r;
    off += static_cast<std::uint64_t>(r);
    n -= static_cast<std::uint64_t>(r);
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<SwapFile>> SwapFile::create(SwapFileOptions options) {
  if (options.path.empty()) return InvalidArgument("swap file: empty path");
  const std::uint64_t c = options.chunk_bytes;
  if (c < kDirtyPage || (c & (c - 1)) != 0) {
    return InvalidArgument("swap file: chunk must be a power of two >= 4 KiB");
  }
  if (options.max_bytes < c) {
    return InvalidArgument("swap file " + options.path + ": a cap of " +
                           std::to_string(options.max_bytes) + " bytes holds no " +
                           std::to_string(c) + "-byte chunk");
  }
  const int fd = ::open(options.path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int e = errno;
    if (e == EEXIST) {
      return InvalidArgument("swap file " + options.path +
                             " exists already; farmem never overwrites a file (remove it, or "
                             "name another)");
    }
    return IoError("swap file " + options.path + ": " + errno_text(e));
  }
  return std::unique_ptr<SwapFile>(new SwapFile(std::move(options), fd));
}

SwapFile::SwapFile(SwapFileOptions options, int fd)
    : options_(std::move(options)),
      fd_(fd),
      peer_("swapfile:" + options_.path),
      space_(options_.max_bytes / options_.chunk_bytes * options_.chunk_bytes) {
  caps_.name = "swapfile";
  caps_.one_sided = false;
  caps_.max_op_bytes = kMaxOpBytes;
  caps_.max_batch_ops = kMaxBatchOps;
}

SwapFile::~SwapFile() {
  ::close(fd_);
  if (::unlink(options_.path.c_str()) != 0) {
    log().warn("swap file {}: cannot remove it: {}", options_.path, errno_text(errno));
  }
}

Result<std::unique_ptr<transport::MemoryRegistration>> SwapFile::register_memory(
    void* addr, std::size_t length) {
  return transport::plain_registration(addr, length);
}

Result<SwapFile::Extent*> SwapFile::extent_for_locked(std::uint64_t addr, std::uint64_t len,
                                                      std::uint32_t rkey) {
  auto it = extents_.upper_bound(addr);
  if (it == extents_.begin()) {
    return OutOfRange(peer_ + ": access at " + std::to_string(addr) + " is in no leased slab");
  }
  --it;
  Extent& e = it->second;
  if (addr - it->first >= e.bytes || len > e.bytes - (addr - it->first)) {
    return OutOfRange(peer_ + ": access of " + std::to_string(len) + " bytes at " +
                      std::to_string(addr) + " runs past its slab");
  }
  if (rkey != static_cast<std::uint32_t>(e.id)) {
    return PermissionDenied(peer_ + ": wrong rkey for the slab at " + std::to_string(addr));
  }
  return &e;
}

Status SwapFile::post(std::span<const transport::Op> ops, transport::Completion& done) {
  FARMEM_RETURN_IF_ERROR(transport::validate_ops(ops, caps_));
  done.arm(1);
  Status first;
  MutexLock lock(mu_);  // I/O under the lock: take_dirty() sees every write whole
  for (const transport::Op& op : ops) {
    auto e = extent_for_locked(op.remote_addr, op.length, op.rkey);
    Status st = e.status();
    if (st.ok()) {
      auto* local = static_cast<std::byte*>(op.local);
      if (op.kind == transport::OpKind::kRead) {
        st = pread_all(fd_, local, op.length, op.remote_addr);
      } else {
        st = pwrite_all(fd_, local, op.length, op.remote_addr);
        if (st.ok()) {
          const std::uint64_t base = (*e)->offset;
          const std::uint64_t from = (op.remote_addr - base) / kDirtyPage;
          const std::uint64_t to = (op.remote_addr - base + op.length - 1) / kDirtyPage;
          for (std::uint64_t p = from; p <= to; ++p) (*e)->dirty[p] = 1;
        }
      }
    }
    if (!st.ok() && first.ok()) first = st;
  }
  done.finish_part(first);
  return Status::Ok();
}

Status SwapFile::wait(transport::Completion& done, std::chrono::nanoseconds) {
  return done.status();  // post() ran every op
}

Result<proto::SlabInfo> SwapFile::lease(std::uint64_t bytes) {
  const std::uint64_t c = options_.chunk_bytes;
  bytes = (bytes + c - 1) / c * c;
  MutexLock lock(mu_);
  auto off = space_.allocate(bytes, c);
  if (!off) {
    return ResourceExhausted(peer_ + ": full (" + std::to_string(space_.used_bytes()) + " of " +
                             std::to_string(space_.slab_bytes()) + " bytes in use)");
  }
  // The file grows here, one extent at a time: blocks exist only for leased slabs.
  const int r = ::fallocate(fd_, 0, static_cast<off_t>(*off), static_cast<off_t>(bytes));
  if (r != 0) {
    const int e = errno;
    space_.free(*off);
    if (e == ENOSPC) return ResourceExhausted(peer_ + ": no space left on device");
    return IoError(peer_ + ": fallocate: " + errno_text(e));
  }
  Extent ext;
  ext.offset = *off;
  ext.id = next_id_++;
  ext.bytes = bytes;
  ext.dirty.assign(bytes / kDirtyPage, 0);
  extents_.emplace(*off, std::move(ext));
  return proto::SlabInfo{extents_.at(*off).id, *off, bytes,
                         static_cast<std::uint32_t>(extents_.at(*off).id), 0};
}

Status SwapFile::release(std::uint64_t slab_id) {
  MutexLock lock(mu_);
  auto it = extents_.begin();
  while (it != extents_.end() && it->second.id != slab_id) ++it;
  if (it == extents_.end()) return NotFound(peer_ + ": no slab " + std::to_string(slab_id));
  const std::uint64_t off = it->first, bytes = it->second.bytes;
  extents_.erase(it);
  space_.free(off);
  // Give the blocks back: punch the extent out, and cut the file after the last live one.
  if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                  static_cast<off_t>(bytes)) != 0) {
    log().warn("{}: punching out {} bytes at {} failed: {}", peer_, bytes, off,
               errno_text(errno));
  }
  const std::uint64_t end =
      extents_.empty() ? 0 : extents_.rbegin()->first + extents_.rbegin()->second.bytes;
  if (::ftruncate(fd_, static_cast<off_t>(end)) != 0) {
    log().warn("{}: truncating to {} bytes failed: {}", peer_, end, errno_text(errno));
  }
  return Status::Ok();
}

Result<proto::Message> SwapFile::call(proto::Message request, std::chrono::nanoseconds) {
  switch (request.type) {
    case proto::MsgType::kAllocSlab: {
      FARMEM_ASSIGN_OR_RETURN(proto::AllocSlab a, request.as<proto::AllocSlab>());
      if (a.bytes == 0) return InvalidArgument(peer_ + ": slab of 0 bytes");
      FARMEM_ASSIGN_OR_RETURN(proto::SlabInfo info, lease(a.bytes));
      return proto::Message::of(proto::MsgType::kSlabInfo, info);
    }
    case proto::MsgType::kFreeSlab: {
      FARMEM_ASSIGN_OR_RETURN(proto::FreeSlab f, request.as<proto::FreeSlab>());
      FARMEM_RETURN_IF_ERROR(release(f.slab_id));
      proto::Message ok;
      ok.type = proto::MsgType::kFreeOk;
      return ok;
    }
    case proto::MsgType::kStats: {
      const SwapFileStats s = stats();
      proto::ServerStats out{};
      {
        MutexLock lock(mu_);
        out.capacity_bytes = space_.slab_bytes();
      }
      out.used_bytes = s.used_bytes;
      out.mapped_bytes = s.allocated_bytes;
      out.slabs = s.slabs;
      out.sessions = 1;
      return proto::Message::of(proto::MsgType::kStatsReply, out);
    }
    default:
      return InvalidArgument(peer_ + ": request " + std::string(proto::to_string(request.type)) +
                             " is not for a swap file");
  }
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> SwapFile::take_dirty(std::uint64_t slab_id) {
  MutexLock lock(mu_);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  for (auto& [off, e] : extents_) {
    if (e.id != slab_id) continue;
    for (std::uint64_t p = 0; p < e.dirty.size(); ++p) {
      if (!e.dirty[p]) continue;
      e.dirty[p] = 0;
      if (!out.empty() && out.back().first + out.back().second == p * kDirtyPage) {
        out.back().second += kDirtyPage;
      } else {
        out.emplace_back(p * kDirtyPage, kDirtyPage);
      }
    }
  }
  return out;
}

Status SwapFile::read_raw(std::uint64_t addr, std::span<std::byte> out) {
  MutexLock lock(mu_);
  return pread_all(fd_, out.data(), out.size(), addr);
}

SwapFileStats SwapFile::stats() const {
  SwapFileStats s;
  {
    MutexLock lock(mu_);
    s.used_bytes = space_.used_bytes();
    s.slabs = extents_.size();
  }
  struct stat st {};
  if (::fstat(fd_, &st) == 0) {
    s.file_bytes = static_cast<std::uint64_t>(st.st_size);
    s.allocated_bytes = static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  return s;
}

}  // namespace farmem::pool
