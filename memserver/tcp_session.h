// One TCP client of the memserver (private to tcp_listener.cc). Not thread-safe: the listener
// hands it to one worker thread at a time, and touches it (trim(), the timeouts' getters)
// only while no worker holds it.
//
// Between turns on a worker the session is *parked*: it waits for the socket to become
// readable, either between frames (idle) or with part of a frame received (mid-frame: header
// bytes in rx_, or a WRITE body partly in slab memory, body_), its replies flushed; or, when
// the client does not take its replies, for the socket to become writable, with the rest of
// them kept (wants_output()). Within a turn, nothing blocks for long: when the socket runs
// dry (or full) the session waits at most `linger` and then parks. Queued READ replies point
// into slabs while parked too: only this session's own requests could free those, and it
// reads none until its replies are out.
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
#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "memserver/core.h"
#include "transport/proto/wire.h"
#include "transport/tcp/socket.h"
#include "transport/tcp/tls.h"

namespace farmem::memserver {

// The whole handshake (HELLO and whatever follows it) must finish within this long after
// handshake() starts; the listener also closes a connection that has not finished it this
// long after being accepted. A client that connects must speak promptly; a silent one must
// not hold a connection slot.
inline constexpr auto kHelloTimeout = std::chrono::seconds(10);
// A client that takes no byte of its replies for this long is dropped rather than holding a
// worker (or, parked, a connection slot and its replies) forever.
inline constexpr auto kReplyStallTimeout = std::chrono::seconds(30);

class TcpSession {
 public:
  /// `fd` is a connected socket that the caller owns and keeps open until the session is
  /// destroyed. `peer` names the client in logs and in its Core session. With `tls` (which
  /// outlives the session) the handshake starts with TLS, and every byte after it is
  /// encrypted.
  TcpSession(Core& core, int fd, std::string peer, const net::TlsContext* tls = nullptr);
  ~TcpSession();  // detaches the Core session (kept for the lease grace, then reclaimed)
  TcpSession(const TcpSession&) = delete;
  TcpSession& operator=(const TcpSession&) = delete;

  /// Runs the handshake (blocking, within kHelloTimeout); its last reply is queued and goes
  /// out with the first serve(). Not ok: the session is over (its kError reply, if any, was
  /// sent); destroy it.
  Status open();

  /// How long one turn may keep a worker.
  struct Turn {
    std::size_t max_frames;            ///< yield after this many frames
    std::chrono::nanoseconds max_time;  ///< or after this long (checked between frames)
    std::chrono::nanoseconds linger;    ///< wait this long for more input before parking
  };
  enum class Outcome : std::uint8_t {
    kParked,  ///< waiting for input (see mid_frame()); replies flushed
    kYield,   ///< the turn is used up and input may be waiting; replies flushed
    kEnded,   ///< the session is over (closed by the client, or an unrecoverable error)
  };
  /// Serves frames (after open() succeeded) until the turn ends.
  Outcome serve(const Turn& turn);

  const std::string& peer() const { return peer_; }

  /// Whether the session parked because the client does not take its replies (it then
  /// waits for the socket to become writable; the input side waits meanwhile).
  bool wants_output() const { return !tx_left_.empty(); }
  /// When the client last took reply bytes (wants_output() only).
  net::Clock::time_point output_progress() const { return output_progress_; }

  /// Whether the parked session has received part of a frame.
  bool mid_frame() const { return frame_start_ != kNever; }
  /// When the unfinished frame's first bytes arrived (mid_frame() only).
  net::Clock::time_point frame_started() const { return frame_start_; }
  /// When bytes last arrived from the client.
  net::Clock::time_point last_input() const { return last_input_; }

  /// Ends the session for `why` (a timeout seen by the listener): sends a kError saying so,
  /// if it can be written at once, and closes the Core session. Not while serve() runs.
  void close_for(const Status& why);

  /// Frees the buffers of a session parked between frames (they come back on its next turn),
  /// so an idle connection costs little more than its socket.
  void trim();

 private:
  static constexpr net::Clock::time_point kNever = net::Clock::time_point::max();

  /// A frame body being received, or skipped, across turns.
  struct Body {
    proto::FrameHeader h;
    std::size_t prefix;     ///< bytes of the frame before the body (for error messages)
    std::uint64_t addr;     ///< WRITE: where the body goes
    std::uint32_t rkey;
    std::size_t total;      ///< body bytes
    std::size_t done;       ///< body bytes received (or skipped) so far
    std::optional<Status> reject;  ///< skip the body, then answer this error
  };

  /// A queued reply piece: bytes in tx_bytes_ (ext == nullptr) or in slab memory.
  struct Piece {
    const std::byte* ext;
    std::size_t off;
    std::size_t len;
  };

  Status handshake();
  Status start_tls(net::Deadline deadline);
  net::Channel channel() const { return {fd_, tls_.get()}; }
  Status serve_one();
  Status serve_read(const proto::FrameHeader& h);
  Status serve_write(const proto::FrameHeader& h);
  Status serve_control(const proto::FrameHeader& h);
  Status serve_unknown(const proto::FrameHeader& h);
  Status resume(const proto::Message& request);
  Status reject_body(const proto::FrameHeader& h, std::size_t prefix, std::size_t body,
                     const Status& why);
  Status continue_body();
  void begin_frame();
  void finish(const Status& st);
  void ensure_buffers();

  // ---- input ----
  std::size_t avail() const { return rx_end_ - rx_begin_; }
  const std::byte* peek() const { return rx_.get() + rx_begin_; }
  void consume(std::size_t n) { rx_begin_ += n; }
  Status fill(std::size_t want, net::Deadline deadline);
  Status need(const proto::FrameHeader* h, std::size_t n, net::Deadline deadline);
  Result<net::IoResult> receive(std::span<const iovec> iov, net::Deadline deadline);
  Status await_input(net::Deadline deadline);
  void note_input(std::size_t bytes);
  Status receive_body(std::byte* dst);
  Status skip_body();
  Status truncated(const proto::FrameHeader* h, std::size_t got, std::size_t want);

  // ---- output ----
  void queue_bytes(const void* p, std::size_t n);
  void queue_header(proto::MsgType type, std::uint64_t req_id, std::uint32_t length);
  void queue_message(const proto::Message& m);
  void queue_slab(const std::byte* p, std::size_t n);
  void queue_error(std::uint64_t req_id, const Status& st, bool count = true);
  bool overlaps_queued_reads(std::uint64_t addr, std::uint64_t len) const;
  Status flush();
  Status flush_by(net::Deadline deadline);
  void stage_output();
  void reset_output();

  Core& core_;
  const int fd_;
  const std::string peer_;
  const net::TlsContext* const tls_context_;
  std::unique_ptr<net::TlsSession> tls_;  ///< set once the TLS handshake succeeded
  std::shared_ptr<Session> session_;
  std::uint64_t attachment_ = 0;  ///< session_'s attachment this connection serves

  /// The receive buffer: rx_cap_ bytes, not zeroed (an idle connection touches only the pages
  /// its frames reach); null while trimmed.
  std::unique_ptr<std::byte[]> rx_;
  std::size_t rx_cap_ = 0;
  std::size_t rx_begin_ = 0;
  std::size_t rx_end_ = 0;
  bool eof_ = false;
  std::optional<Body> body_;  ///< the body of the frame being served, when it is not in rx_
  bool parked_ = false;       ///< the turn ended waiting for input (not an error)
  net::Clock::duration linger_{};  ///< this turn's wait for input before parking
  net::Clock::duration rcv_timeout_{};  ///< the socket's SO_RCVTIMEO (0: never set)
  net::Deadline turn_end_ = net::kNoDeadline;  ///< no new frame, nor lingering, after it
  net::Clock::time_point frame_start_ = kNever;  ///< first byte of the unfinished frame
  net::Clock::time_point last_input_ = net::Clock::now();

  std::vector<Piece> pieces_;
  std::vector<std::byte> tx_bytes_;
  std::vector<iovec> tx_iov_;
  std::span<iovec> tx_left_;  ///< what tx_iov_ still has to send (a turn parked on output)
  net::Clock::time_point output_progress_{};
  bool serving_ = false;      ///< in serve(): flush() parks instead of blocking
  std::uintptr_t read_lo_ = UINTPTR_MAX;  ///< slab range covered by queued READ replies
  std::uintptr_t read_hi_ = 0;
};

}  // namespace farmem::memserver
