#include "transport/lease_table.h"

#include <iterator>
#include <string>

namespace farmem::transport {

void LeaseTable::add(const proto::SlabInfo& slab) {
  WriterLock lock(mu_);
  by_addr_[slab.addr] = slab;
}

void LeaseTable::remove(std::uint64_t slab_id) {
  WriterLock lock(mu_);
  for (auto it = by_addr_.begin(); it != by_addr_.end(); ++it) {
    if (it->second.slab_id == slab_id) {
      by_addr_.erase(it);
      return;
    }
  }
}

Status LeaseTable::check(std::span<const Op> ops) const {
  ReaderLock lock(mu_);
  for (const Op& op : ops) {
    auto it = by_addr_.upper_bound(op.remote_addr);
    if (it == by_addr_.begin()) {
      return proto::check_access(nullptr, op.remote_addr, op.length, op.rkey);
    }
    const proto::SlabInfo& s = std::prev(it)->second;
    const proto::SlabBounds bounds{s.slab_id, s.addr, s.bytes, s.rkey};
    FARMEM_RETURN_IF_ERROR(proto::check_access(&bounds, op.remote_addr, op.length, op.rkey));
  }
  return Status::Ok();
}

void LeaseTable::observe(proto::MsgType request_type, std::uint64_t freed_slab_id,
                         const proto::Message& reply) {
  if (request_type == proto::MsgType::kAllocSlab && reply.type == proto::MsgType::kSlabInfo) {
    if (auto info = reply.as<proto::SlabInfo>(); info.ok()) add(*info);
  } else if (request_type == proto::MsgType::kFreeSlab && reply.type == proto::MsgType::kFreeOk) {
    remove(freed_slab_id);
 } else if (request_type == proto::MsgType::kListSlabs &&
             reply.type == proto::MsgType::kSlabList) {
    // After a RESUME the connection starts with an empty table: the list fills it (and
    // carries the keys the slabs have now).
    bool more = false;
    auto slabs = proto::parse_slab_list(reply.payload, 0, &more);
    if (slabs.ok()) {
      for (const auto& s : *slabs) add(s);
    }
  }
}

}  // namespace farmem::transport
