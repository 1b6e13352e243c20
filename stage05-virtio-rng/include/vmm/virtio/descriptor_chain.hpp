#pragma once
/// @file
/// @brief `Descriptor` and `DescriptorChain`: one request as the device sees it, and `read_descriptor_chain`, which
/// walks it out of guest memory and checks every step.

#include <cstdint>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/memory/guest_address.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace vmm::virtio {

/// @brief One buffer of a chain: a guest-physical range and its direction, copied out of a `vring_desc`.
struct Descriptor {
  memory::GuestAddress address;  ///< First byte of the buffer.
  std::uint32_t length = 0;      ///< Bytes.
  /// @brief Equal when both fields are.
  bool operator==(const Descriptor&) const = default;
};

/// @brief A descriptor chain taken from the available ring, walked in full and checked.
///
/// The driver's request is the device-readable part, the room for the device's answer the device-writable part
/// (virtio 1.2, 2.7.4: every readable descriptor comes before every writable one). The device never looks at the
/// descriptor table again for this request: the chain is a private copy, so a driver that rewrites descriptors while
/// the device works cannot make it read one thing and use another. The buffers themselves stay in guest memory and
/// are accessed through `GuestMemory` (each was checked to lie inside it).
struct DescriptorChain {
  std::uint16_t head_index = 0;          ///< Index of the first descriptor: the `id` the used ring gets back.
  std::vector<Descriptor> readable;      ///< Device-readable buffers, in chain order.
  std::vector<Descriptor> writable;      ///< Device-writable buffers, in chain order.
  bool indirect = false;                 ///< The buffers came from an indirect descriptor table.
  std::uint16_t descriptors_walked = 0;  ///< Descriptors read, the indirect one and its table entries included.

  /// @brief Total bytes of the readable part.
  [[nodiscard]] std::uint64_t readable_bytes() const noexcept;
  /// @brief Total bytes of the writable part.
  [[nodiscard]] std::uint64_t writable_bytes() const noexcept;
};

/// @brief Limits and features that govern a walk.
struct ChainLimits {
  std::uint16_t queue_size = 0;   ///< Entries in the descriptor table; also the longest chain allowed (2.7.5.2).
  bool indirect_allowed = false;  ///< VIRTIO_RING_F_INDIRECT_DESC was negotiated.
};

/// @brief Reads the chain starting at `head` from the descriptor table at `table`, checking as it goes.
///
/// Refused, with an error that says which rule the driver broke and where:
/// - `head` or a `next` index not below the table size;
/// - more descriptors than the table has (so a chain that loops back on itself is reported, never followed);
/// - a device-readable descriptor after a device-writable one;
/// - a buffer not wholly inside guest memory, or a chain longer than 2^32 bytes in total;
/// - VRING_DESC_F_INDIRECT when not negotiated, together with VRING_DESC_F_NEXT, or inside an indirect table (one
///   level only); an indirect table whose length is zero, not a multiple of 16, holds more entries than the queue
///   size, or is not wholly inside guest memory.
/// An indirect descriptor may end a direct chain (2.7.5.3); its table's descriptors chain through `next` indices
/// inside the table. The write flag of the indirect descriptor itself is ignored, as the spec requires.
[[nodiscard]] Result<DescriptorChain> read_descriptor_chain(const memory::GuestMemory& memory,
                                                            memory::GuestAddress table, std::uint16_t head,
                                                            const ChainLimits& limits);

}  // namespace vmm::virtio
