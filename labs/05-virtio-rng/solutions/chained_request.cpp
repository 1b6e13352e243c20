// Lab 05, exercise 2: a chained request, published by hand (reference). See labs/05-virtio-rng/README.md.
#include <fmt/format.h>

#include <atomic>
#include <cstddef>

#include "lab05.hpp"
#include "vmm/virtio/uapi.hpp"

namespace lab05 {

vmm::Result<std::uint16_t> publish_chained_request(const vmm::memory::GuestMemory& memory,
                                                   const vmm::virtio::QueueLayout& layout, std::uint16_t avail_index,
                                                   std::span<const vmm::virtio::Descriptor> parts) {
  const std::string op = "publish_chained_request";
  if (parts.empty()) {
    return vmm::logic_error(op, "an empty chain: a request needs at least one descriptor");
  }
  if (parts.size() > layout.size) {
    return vmm::logic_error(op, fmt::format("{} parts, but the queue has {} descriptors", parts.size(), layout.size));
  }

  // 1. The descriptors, 0 to n-1, each device-writable and linked to the next. The device reads none of this until
  //    it sees the new index, so plain writes are enough here.
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const bool last = i + 1 == parts.size();
    const vring_desc descriptor{
        .addr = parts[i].address.raw(),
        .len = parts[i].length,
        .flags = static_cast<std::uint16_t>(VRING_DESC_F_WRITE | (last ? 0 : VRING_DESC_F_NEXT)),
        .next = static_cast<std::uint16_t>(last ? 0 : i + 1)};
    auto at = layout.descriptor_table.checked_add(sizeof(vring_desc) * i);
    if (!at) {
      return std::unexpected(std::move(at).error());
    }
    if (auto ok = memory.write_obj(*at, descriptor); !ok) {
      return std::unexpected(std::move(ok).error());
    }
  }

  // 2. The head in the available ring's slot for this index: free-running index, slot = index % size.
  const std::uint16_t head = 0;
  const auto slot = static_cast<std::uint16_t>(avail_index % layout.size);
  auto entry = layout.available_ring.checked_add(offsetof(vring_avail, ring) + sizeof(std::uint16_t) * slot);
  if (!entry) {
    return std::unexpected(std::move(entry).error());
  }
  if (auto ok = memory.write_obj(*entry, head); !ok) {
    return std::unexpected(std::move(ok).error());
  }

  // 3. Publish: the index last, with release ordering, so a device that sees it (acquire load in SplitQueue::pop)
  //    also sees the entry and the descriptors written above.
  const auto next = static_cast<std::uint16_t>(avail_index + 1);
  auto idx = layout.available_ring.checked_add(offsetof(vring_avail, idx));
  if (!idx) {
    return std::unexpected(std::move(idx).error());
  }
  if (auto ok = memory.store<std::uint16_t>(*idx, next, std::memory_order_release); !ok) {
    return std::unexpected(std::move(ok).error());
  }
  return next;
}

}  // namespace lab05
