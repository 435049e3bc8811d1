// One TCP client of the memserver, served on its own thread (private to tcp_listener.cc).
//
// Requests are read into a user-space buffer; every complete frame in it is handled and its
// reply queued; the queued replies go out with one writev once no complete frame remains.
// READ replies are iovecs pointing straight at slab memory; WRITE payloads beyond what the
// buffer already holds are received straight into slab memory. Replies leave in request
// order, which lets the client predict them and receive payloads in place.
//
// Queued READ replies point into slabs, so queued replies are flushed before anything that
// could unmap a slab (every control request) or overwrite bytes they reference (a WRITE to
// an address range a queued READ covers).
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "memserver/core.h"
#include "transport/proto/wire.h"
#include "transport/tcp/socket.h"

namespace farmem::memserver {

class TcpSession {
 public:
  /// `fd` is a connected, blocking socket that the caller owns and keeps open until run()
  /// returns. `peer` names the client in logs and in its Core session.
  TcpSession(Core& core, int fd, std::string peer);
  ~TcpSession();  // detaches the Core session (kept for the lease grace, then reclaimed)
  TcpSession(const TcpSession&) = delete;
  TcpSession& operator=(const TcpSession&) = delete;

  /// Serves frames until the client leaves, sends something the stream cannot recover from
  /// (after a kError reply), or the socket is shut down.
  void run();

 private:
  /// A queued reply piece: bytes in tx_bytes_ (ext == nullptr) or in slab memory.
  struct Piece {
    const std::byte* ext;
    std::size_t off;
    std::size_t len;
  };

  Status handshake();
  Status serve_one();
  Status serve_read(const proto::FrameHeader& h);
  Status serve_write(const proto::FrameHeader& h);
  Status serve_control(const proto::FrameHeader& h);
  Status serve_unknown(const proto::FrameHeader& h);
  Status resume(const proto::Message& request);
  Status reject_body(const proto::FrameHeader& h, std::size_t body, const Status& why);

  // ---- input ----
  std::size_t avail() const { return rx_end_ - rx_begin_; }
  const std::byte* peek() const { return rx_.data() + rx_begin_; }
  void consume(std::size_t n) { rx_begin_ += n; }
  Status fill(std::size_t want, net::Deadline deadline);
  Status need(const proto::FrameHeader* h, std::size_t n, net::Deadline deadline);
  Status receive_into(const proto::FrameHeader& h, std::byte* dst, std::size_t n);
  Status discard(const proto::FrameHeader& h, std::size_t n);
  Status truncated(const proto::FrameHeader* h, std::size_t got, std::size_t want);

  // ---- output ----
  void queue_bytes(const void* p, std::size_t n);
  void queue_header(proto::MsgType type, std::uint64_t req_id, std::uint32_t length);
  void queue_message(const proto::Message& m);
  void queue_slab(const std::byte* p, std::size_t n);
  void queue_error(std::uint64_t req_id, const Status& st, bool count = true);
  bool overlaps_queued_reads(std::uint64_t addr, std::uint64_t len) const;
  Status flush();

  Core& core_;
  const int fd_;
  const std::string peer_;
  std::shared_ptr<Session> session_;
  std::uint64_t attachment_ = 0;  ///< session_'s attachment this connection serves

  std::vector<std::byte> rx_;
  std::size_t rx_begin_ = 0;
  std::size_t rx_end_ = 0;
  bool eof_ = false;

  std::vector<Piece> pieces_;
  std::vector<std::byte> tx_bytes_;
  std::vector<iovec> tx_iov_;
  std::uintptr_t read_lo_ = UINTPTR_MAX;  ///< slab range covered by queued READ replies
  std::uintptr_t read_hi_ = 0;
};

}  // namespace farmem::memserver
