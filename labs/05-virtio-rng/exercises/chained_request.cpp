// Lab 05, exercise 2: a chained request, published by hand. See labs/05-virtio-rng/README.md.
#include "lab05.hpp"
#include "vmm/virtio/uapi.hpp"

namespace lab05 {

vmm::Result<std::uint16_t> publish_chained_request(const vmm::memory::GuestMemory& memory,
                                                   const vmm::virtio::QueueLayout& layout, std::uint16_t avail_index,
                                                   std::span<const vmm::virtio::Descriptor> parts) {
  // TODO:
  //  1. Refuse an empty chain and one with more parts than layout.size (vmm::logic_error), before writing anything.
  //  2. Descriptor i (a vring_desc, 16 bytes at layout.descriptor_table + 16 * i): addr and len from parts[i],
  //     flags VRING_DESC_F_WRITE, plus VRING_DESC_F_NEXT and next = i + 1 on every part but the last.
  //     memory.write_obj.
  //  3. The head, 0, into avail->ring[avail_index % layout.size] (offsetof(vring_avail, ring), 2 bytes per entry).
  //  4. avail->idx = avail_index + 1 (offsetof(vring_avail, idx)): memory.store with std::memory_order_release.
  //     Why last, and why release?
  (void)memory;
  (void)layout;
  (void)avail_index;
  (void)parts;
  return vmm::logic_error("publish_chained_request", "not implemented yet (lab 05, exercise 2)");
}

}  // namespace lab05
