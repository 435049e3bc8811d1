// LeaseTable: the slabs leased on one connection, as the client saw them granted.
//
// A one-sided backend (verbs) checks every op against it before posting, so an access outside
// a leased slab or with a wrong rkey fails with the same code as on the backends whose server
// checks it (kOutOfRange, kPermissionDenied), and leaves the connection usable. Without the
// check the NIC would answer with a remote access error, which moves an RC queue pair to the
// error state and breaks the connection for every other thread on it.
#pragma once

#include <cstdint>
#include <map>
#include <span>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "farmem/status.h"
#include "transport/proto/wire.h"
#include "transport/transport.h"

namespace farmem::transport {

class LeaseTable {
 public:
  /// Records a slab granted by ALLOC_SLAB.
  void add(const proto::SlabInfo& slab);
  /// Forgets a slab released by FREE_SLAB (no-op for an unknown id).
  void remove(std::uint64_t slab_id);
  /// Ok when every op lies inside one leased slab and carries its rkey; otherwise the first
  /// bad op's error, from proto::check_access (the memserver's own rule).
  Status check(std::span<const Op> ops) const;
  /// Learns from one control exchange: a granted ALLOC_SLAB adds, a FREE_SLAB that
  /// succeeded removes, a SLAB_LIST adds (or re-keys) what it lists.
  void observe(proto::MsgType request_type, std::uint64_t freed_slab_id,
               const proto::Message& reply);

 private:
  /// Guards by_addr_: shared for check() on the data path, exclusive for add/remove.
  mutable SharedMutex mu_;
  /// Keyed by the slab's base address.
  std::map<std::uint64_t, proto::SlabInfo> by_addr_ FARMEM_GUARDED_BY(mu_);
};

}  // namespace farmem::transport
