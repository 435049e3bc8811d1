// TcpConnection: the tcp backend's Connection (private to the backend; users call connect_tcp).
//
// Sending: post() encodes a whole batch (frame headers in a reused scratch buffer, write
// payloads referenced in place) and hands it to the kernel with one sendmsg per IOV_MAX
// iovecs. Batches never interleave on the stream (send_mu_).
//
// Receiving, leader/follower: there is no receiver thread. A thread in wait() that finds no
// leader becomes the leader and reads the socket for everyone, dispatching completions;
// the others sleep on a condition variable until their batch is done or the leader role is
// free. A synchronous read therefore costs no thread hand-off.
//
// Zero-copy replies: the memserver answers each connection's requests in order, so the
// leader can predict the next frames (READ_DATA of op.length, WRITE_OK) and point one
// recvmsg at [header slot][op's local buffer][next header slot][next buffer]... A header
// that does not match the prediction (an ERROR reply, or a server that reorders) is still
// handled correctly: the bytes received after it are copied out of the predicted buffers
// and parsed the slow way.
//
// No deadlock on full socket buffers: when a send would block, the sending thread takes
// the leader role if it is free and drains replies while it waits for send space, so the
// server is never stuck writing replies nobody reads.
#pragma once

#include <sys/uio.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "transport/proto/wire.h"
#include "transport/tcp/socket.h"
#include "transport/tcp/tls.h"
#include "transport/transport.h"

namespace farmem::transport {

/// Largest batch one post() accepts: 4096 ops of 40 header bytes each is a 160 KiB frame
/// burst, enough to amortize the syscall while keeping the scratch buffers small.
inline constexpr std::uint32_t kTcpMaxBatchOps = 4096;

class TcpConnection final : public Connection {
 public:
  /// Takes a connected, non-blocking socket on which HELLO already succeeded, with the TLS
  /// session on it for a tls:// URL (null for tcp://).
  TcpConnection(net::UniqueFd fd, std::unique_ptr<net::TlsSession> tls, std::string peer,
                std::uint64_t first_req_id);
  ~TcpConnection() override;

  const Capabilities& capabilities() const override { return caps_; }
  const std::string& peer() const override { return peer_; }
  Result<std::unique_ptr<MemoryRegistration>> register_memory(void* addr,
                                                              std::size_t length) override;
  Status post(std::span<const Op> ops, Completion& done) override;
  Status wait(Completion& done, std::chrono::nanoseconds timeout) override;
  Result<proto::Message> call(proto::Message request, std::chrono::nanoseconds timeout) override;

 private:
  enum class Kind : std::uint8_t { kRead, kWrite, kControl };
  /// Where a control reply lands; shared with the pending entry so that a call() that timed
  /// out may return while the leader still holds the slot.
  struct ControlSlot {
    Completion done;
    proto::Message reply;
  };
  /// One request awaiting its reply.
  struct Pending {
    std::uint64_t id = 0;
    Kind kind = Kind::kRead;
    std::uint32_t length = 0;
    std::byte* local = nullptr;
    Completion* done = nullptr;  ///< null once finished (a hole awaiting pop)
    std::shared_ptr<ControlSlot> control;
  };
  /// FIFO of pending requests in stream order; ids are consecutive, so lookup is O(1).
  class PendingRing {
   public:
    void push(Pending p);
    std::size_t size() const { return size_; }
    Pending& at(std::size_t pos) { return slots_[(head_ + pos) & (slots_.size() - 1)]; }
    Pending* find(std::uint64_t id);
    void pop_finished();
    std::vector<Pending> take_all();

   private:
    std::vector<Pending> slots_;  // power-of-two capacity
    std::size_t head_ = 0;
    std::size_t size_ = 0;
  };
  /// The reply frame being received.
  struct RxFrame {
    proto::FrameHeader hdr{};
    std::size_t hdr_got = 0;  ///< header bytes received so far
    std::byte* dst = nullptr;  ///< payload destination, once the header is known
    std::size_t len = 0;
    std::size_t got = 0;
  };
  /// A reply the leader expects next, with where its header lands.
  struct Predicted {
    std::uint64_t id;
    Kind kind;
    std::uint32_t length;
    std::byte* local;
    std::size_t first_seg;
  };

  /// One recvmsg takes at most IOV_MAX (1024 on Linux) segments.
  static constexpr std::size_t kMaxRxSegments = 1024;
  /// Replies predicted per receive: a read needs two segments (header slot + payload).
  static constexpr std::size_t kMaxPredicted = kMaxRxSegments / 2;
  static bool matches(const Predicted& p, const proto::FrameHeader& h);

  // ---- sending (tcp_connection.cc) ----
  void encode_batch_locked(std::span<const Op> ops, std::uint64_t first_id)
      FARMEM_REQUIRES(send_mu_);
  Status send_all_locked(std::span<iovec> iov) FARMEM_REQUIRES(send_mu_);
  Status progress_while_send_blocked() FARMEM_EXCLUDES(mu_);

  // ---- leader/follower (tcp_connection.cc) ----
  bool try_lead_locked() FARMEM_REQUIRES(mu_);
  void stop_leading_locked(const Status& st) FARMEM_REQUIRES(mu_);
  Status lead_until(Completion& done, net::Deadline deadline) FARMEM_EXCLUDES(mu_);
  void break_locked(const Status& why, bool as_leader) FARMEM_REQUIRES(mu_);
  /// After a timeout broke the connection: waits until no thread can touch `done` or its
  /// buffers any more (the leader has failed every pending op). `lock` holds mu_.
  void quiesce_locked(UniqueLock& lock, Completion& done) FARMEM_REQUIRES(mu_);
  void fail_all_locked() FARMEM_REQUIRES(mu_);

  // ---- receiving, leader only (tcp_receive.cc) ----
  Status pump_as_leader(net::Deadline deadline, bool poll_first) FARMEM_EXCLUDES(mu_);
  void plan_receive_locked() FARMEM_REQUIRES(mu_);
  void plan_push(void* base, std::size_t len);
  Status absorb_locked(std::size_t n) FARMEM_REQUIRES(mu_);
  Status advance_current_locked(std::size_t n) FARMEM_REQUIRES(mu_);
  Status on_header_locked() FARMEM_REQUIRES(mu_);
  Status finish_current_locked() FARMEM_REQUIRES(mu_);
  void spill_locked(std::size_t first_seg, std::size_t n) FARMEM_REQUIRES(mu_);
  Status consume_spill_locked() FARMEM_REQUIRES(mu_);

  net::Channel channel() const { return {fd_.get(), tls_.get()}; }

  const net::UniqueFd fd_;
  const std::unique_ptr<net::TlsSession> tls_;  // declared after fd_: freed before it closes
  const std::string peer_;
  const Capabilities caps_;

  /// Serializes batches on the outgoing stream and guards the tx scratch and next_id_.
  /// Taken before mu_.
  Mutex send_mu_ FARMEM_ACQUIRED_BEFORE(mu_);
  std::vector<std::byte> tx_hdrs_ FARMEM_GUARDED_BY(send_mu_);
  std::vector<iovec> tx_iov_ FARMEM_GUARDED_BY(send_mu_);
  std::uint64_t next_id_ FARMEM_GUARDED_BY(send_mu_);

  /// Guards ring_, leader_, waiters_, broken_* and, together with the leader role, the
  /// receive state below (the leader mutates it only while holding mu_; it reads into the
  /// planned buffers without mu_, which is safe because only the leader retires entries).
  Mutex mu_;
  std::condition_variable cv_;  ///< signalled when completions finish or the leader leaves
  PendingRing ring_ FARMEM_GUARDED_BY(mu_);
  bool leader_ FARMEM_GUARDED_BY(mu_) = false;
  int waiters_ FARMEM_GUARDED_BY(mu_) = 0;
  bool broken_ FARMEM_GUARDED_BY(mu_) = false;
  Status broken_status_ FARMEM_GUARDED_BY(mu_);

  // Receive state: touched only by the thread holding the leader role (a role, not a lock,
  // so not annotated; the leader reads the socket into it without mu_).
  RxFrame cur_;
  bool rx_hot_ = false;  ///< last receive moved bytes: try again before polling
  std::size_t finished_ = 0;  ///< completions finished by the current absorb
  std::vector<proto::FrameHeader> slot_hdrs_;
  std::vector<Predicted> plan_;
  std::vector<iovec> rx_iov_;
  std::vector<std::byte> spill_;
  std::vector<std::byte> err_buf_;
};

}  // namespace farmem::transport
