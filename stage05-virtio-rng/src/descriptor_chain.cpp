#include "vmm/virtio/descriptor_chain.hpp"

#include <algorithm>
#include <limits>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "vmm/virtio/uapi.hpp"

namespace vmm::virtio {

namespace {

using memory::GuestAddress;
using memory::GuestMemory;

constexpr std::uint64_t kDescriptorBytes = sizeof(vring_desc);  // 16
static_assert(kDescriptorBytes == 16, "virtio 1.2, 2.7.5: a descriptor is 16 bytes");
// virtio 1.2, 2.7.5.2: a chain carries at most 2^32 bytes in total (lengths are u32, and so is the used `len`).
constexpr std::uint64_t kMaxChainBytes = 1ull << 32;

std::uint64_t total(const std::vector<Descriptor>& buffers) noexcept {
  std::uint64_t sum = 0;
  for (const auto& buffer : buffers) {
    sum += buffer.length;
  }
  return sum;
}

// Names a descriptor in error messages: "descriptor 3" or "descriptor 3: indirect table entry 2". Formatted only
// when an error is reported: building the string for every descriptor walked was a third of the cost of a healthy
// chain (benchmark figure 4).
struct DescriptorName {
  std::uint16_t index = 0;
  std::optional<std::uint32_t> entry;  // set inside an indirect table
};

}  // namespace
}  // namespace vmm::virtio

template <>
struct fmt::formatter<vmm::virtio::DescriptorName> : fmt::formatter<std::string_view> {
  auto format(const vmm::virtio::DescriptorName& name, format_context& ctx) const {
    return name.entry ? fmt::format_to(ctx.out(), "descriptor {}: indirect table entry {}", name.index, *name.entry)
                      : fmt::format_to(ctx.out(), "descriptor {}", name.index);
  }
};

namespace vmm::virtio {
namespace {

// Builds one chain, buffer by buffer, enforcing the rules that span the whole chain (direct part and indirect
// table alike): readable before writable, every buffer in guest memory, at most 2^32 bytes.
class ChainBuilder {
 public:
  ChainBuilder(const GuestMemory& memory, std::uint16_t head) : memory_(memory) { chain_.head_index = head; }

  // `where` names the descriptor for error messages.
  Result<void> add(const vring_desc& descriptor, const DescriptorName& where) {
    const bool writable = (descriptor.flags & VRING_DESC_F_WRITE) != 0;
    if (!writable && !chain_.writable.empty()) {
      // virtio 1.2, 2.7.4.2: the driver MUST place any device-writable descriptor after any device-readable one.
      return logic_error("virtqueue", fmt::format("{}: a device-readable buffer after a device-writable one", where));
    }
    const GuestAddress address(descriptor.addr);
    if (auto inside = memory_.check_range(address, descriptor.len); !inside) {
      return logic_error("virtqueue", fmt::format("{}: the buffer ({:#x} bytes at {}) is not inside guest memory: {}",
                                                  where, descriptor.len, address, inside.error().message()));
    }
    // Cannot overflow: at most 2 * 65535 descriptors of less than 2^32 bytes each.
    bytes_ += descriptor.len;
    if (bytes_ > kMaxChainBytes) {
      return logic_error("virtqueue",
                         fmt::format("{}: the chain now holds {:#x} bytes, more than 2^32", where, bytes_));
    }
    (writable ? chain_.writable : chain_.readable).push_back(Descriptor{.address = address, .length = descriptor.len});
    return {};
  }

  // One more descriptor read (the indirect one and table entries included).
  void walked() noexcept { ++walked_; }
  void mark_indirect() noexcept { chain_.indirect = true; }

  DescriptorChain finish() && {
    // At most size (direct) + size (table) <= 65536 descriptors: saturate rather than wrap in the one extreme case.
    chain_.descriptors_walked =
        static_cast<std::uint16_t>(std::min<std::uint32_t>(walked_, std::numeric_limits<std::uint16_t>::max()));
    return std::move(chain_);
  }

 private:
  const GuestMemory& memory_;
  DescriptorChain chain_;
  std::uint64_t bytes_ = 0;
  std::uint32_t walked_ = 0;
};

// Walks the indirect table that `descriptor` (number `index` of the direct table) points at.
Result<void> walk_indirect(const GuestMemory& memory, const vring_desc& descriptor, std::uint16_t index,
                           const ChainLimits& limits, ChainBuilder& builder) {
  const GuestAddress table(descriptor.addr);
  const std::uint32_t length = descriptor.len;
  if (length == 0) {
    return logic_error("virtqueue", fmt::format("descriptor {}: an indirect table of length 0", index));
  }
  if (length % kDescriptorBytes != 0) {
    return logic_error("virtqueue", fmt::format("descriptor {}: indirect table length {} is not a multiple of {}",
                                                index, length, kDescriptorBytes));
  }
  const std::uint64_t entries = length / kDescriptorBytes;
  if (entries > limits.queue_size) {
    // virtio 1.2, 2.7.5.3.1: no chain longer than the queue size, indirect or not. It also bounds the walk.
    return logic_error("virtqueue",
                       fmt::format("descriptor {}: indirect table has {} entries, more than the queue size {}", index,
                                   entries, limits.queue_size));
  }
  if (auto inside = memory.check_range(table, length); !inside) {
    return logic_error("virtqueue", fmt::format("descriptor {}: the indirect table ({:#x} bytes at {}) is not inside "
                                                "guest memory: {}",
                                                index, length, table, inside.error().message()));
  }
  builder.mark_indirect();

  // The table's chain starts at entry 0 and follows `next` inside the table. At most `entries` steps: one more means
  // the chain revisited an entry, a loop.
  std::uint64_t entry = 0;
  for (std::uint64_t step = 0;; ++step) {
    if (step == entries) {
      return logic_error("virtqueue",
                         fmt::format("descriptor {}: the chain in its indirect table is longer than the table's {} "
                                     "entries: a loop?",
                                     index, entries));
    }
    // Cannot wrap: the whole table was checked to lie in guest memory.
    auto inner = memory.read_obj<vring_desc>(GuestAddress(table.raw() + entry * kDescriptorBytes));
    if (!inner) {
      return std::unexpected(std::move(inner).error());
    }
    builder.walked();
    const DescriptorName where{index, static_cast<std::uint32_t>(entry)};  // entry < entries <= 65535
    if ((inner->flags & VRING_DESC_F_INDIRECT) != 0) {
      // virtio 1.2, 2.7.5.3.1: the driver MUST NOT set VRING_DESC_F_INDIRECT inside an indirect table.
      return logic_error("virtqueue",
                         fmt::format("{}: VRING_DESC_F_INDIRECT inside an indirect table (one level only)", where));
    }
    if (auto ok = builder.add(*inner, where); !ok) {
      return ok;
    }
    if ((inner->flags & VRING_DESC_F_NEXT) == 0) {
      return {};
    }
    if (inner->next >= entries) {
      return logic_error("virtqueue", fmt::format("{}: next index {} is out of range (the table has {} entries)", where,
                                                  inner->next, entries));
    }
    entry = inner->next;
  }
}

}  // namespace

std::uint64_t DescriptorChain::readable_bytes() const noexcept {
  return total(readable);
}

std::uint64_t DescriptorChain::writable_bytes() const noexcept {
  return total(writable);
}

Result<DescriptorChain> read_descriptor_chain(const memory::GuestMemory& memory, memory::GuestAddress table,
                                              std::uint16_t head, const ChainLimits& limits) {
  const auto size = limits.queue_size;
  if (head >= size) {
    return logic_error("virtqueue", fmt::format("head index {} is out of range (queue size {})", head, size));
  }
  // The table itself is the caller's to check (SplitQueue's validate did); each read below is checked anyway.
  ChainBuilder builder(memory, head);
  std::uint16_t index = head;
  // A chain visits each of the `size` descriptors at most once; a further step means it came back to one (a loop,
  // whether 0 -> 1 -> 0 or a descriptor naming itself). Counting steps finds every loop without remembering which
  // descriptors were seen, and bounds the walk however hostile the table is.
  for (std::uint32_t step = 0;; ++step) {
    if (step == size) {
      return logic_error("virtqueue", fmt::format("descriptor chain longer than the queue size {}: a loop?", size));
    }
    auto address = table.checked_add(kDescriptorBytes * index);
    if (!address) {
      return std::unexpected(std::move(address).error());
    }
    auto descriptor = memory.read_obj<vring_desc>(*address);
    if (!descriptor) {
      return std::unexpected(std::move(descriptor).error());
    }
    builder.walked();
    const DescriptorName where{index, std::nullopt};

    if ((descriptor->flags & VRING_DESC_F_INDIRECT) != 0) {
      if (!limits.indirect_allowed) {
        return logic_error("virtqueue", fmt::format("{}: VRING_DESC_F_INDIRECT, but VIRTIO_RING_F_INDIRECT_DESC was "
                                                    "not negotiated",
                                                    where));
      }
      if ((descriptor->flags & VRING_DESC_F_NEXT) != 0) {
        // virtio 1.2, 2.7.5.3.1: the driver MUST NOT set both. So an indirect descriptor always ends the chain.
        return logic_error("virtqueue",
                           fmt::format("{}: VRING_DESC_F_INDIRECT together with VRING_DESC_F_NEXT", where));
      }
      // Its own VRING_DESC_F_WRITE is meaningless and ignored (2.7.5.3.2); the table entries say what is writable.
      if (auto ok = walk_indirect(memory, *descriptor, index, limits, builder); !ok) {
        return std::unexpected(std::move(ok).error());
      }
      return std::move(builder).finish();
    }

    if (auto ok = builder.add(*descriptor, where); !ok) {
      return std::unexpected(std::move(ok).error());
    }
    if ((descriptor->flags & VRING_DESC_F_NEXT) == 0) {
      return std::move(builder).finish();
    }
    if (descriptor->next >= size) {
      return logic_error(
          "virtqueue", fmt::format("{}: next index {} is out of range (queue size {})", where, descriptor->next, size));
    }
    index = descriptor->next;
  }
}

}  // namespace vmm::virtio
