#include "vmm/virtio/split_queue.hpp"

#include <atomic>
#include <bit>
#include <cassert>
#include <cstddef>
#include <string_view>

#include <fmt/format.h>

#include "vmm/virtio/uapi.hpp"

namespace vmm::virtio {

namespace {

using memory::GuestAddress;
using memory::GuestMemory;

// Where each field sits inside its area, from the kernel's structs (never their sizeof: `ring[]` is a flexible array).
constexpr std::uint64_t kAvailFlags = offsetof(vring_avail, flags);  // 0
constexpr std::uint64_t kAvailIdx = offsetof(vring_avail, idx);      // 2
constexpr std::uint64_t kAvailRing = offsetof(vring_avail, ring);    // 4: then ring[size], then used_event
constexpr std::uint64_t kUsedFlags = offsetof(vring_used, flags);    // 0
constexpr std::uint64_t kUsedIdx = offsetof(vring_used, idx);        // 2
constexpr std::uint64_t kUsedRing = offsetof(vring_used, ring);      // 4: then ring[size], then avail_event
constexpr std::uint64_t kAvailEntryBytes = sizeof(std::uint16_t);    // an available-ring entry is a head index
constexpr std::uint64_t kUsedEntryBytes = sizeof(vring_used_elem);   // {id, len}: 8 bytes

static_assert(kAvailRing == 4 && kUsedRing == 4 && kUsedEntryBytes == 8, "the layout virtio 1.2, 2.7 describes");

// Alignments from the table in virtio 1.2, 2.7 (and split_queue.hpp).
constexpr std::uint64_t kDescriptorTableAlign = 16;
constexpr std::uint64_t kAvailableRingAlign = 2;
constexpr std::uint64_t kUsedRingAlign = 4;

// The address of a field `offset` bytes into an area. Safe without checked_add: `validate` made sure the whole area
// lies in guest memory, so no field address can wrap.
GuestAddress at(GuestAddress area, std::uint64_t offset) {
  return GuestAddress(area.raw() + offset);
}

// One area: aligned, and every byte of it guest memory.
Result<void> check_area(const GuestMemory& memory, std::string_view name, GuestAddress address, std::uint64_t bytes,
                        std::uint64_t alignment) {
  if (address.raw() % alignment != 0) {
    return logic_error("virtqueue", fmt::format("the {} at {} is not {}-byte aligned", name, address, alignment));
  }
  if (auto inside = memory.check_range(address, bytes); !inside) {
    return logic_error("virtqueue", fmt::format("the {} ({:#x} bytes at {}) is not inside guest memory: {}", name,
                                                bytes, address, inside.error().message()));
  }
  return {};
}

}  // namespace

Result<void> validate(const QueueLayout& layout, std::uint16_t max_size, const memory::GuestMemory& memory) {
  const auto size = layout.size;
  if (size == 0) {
    return logic_error("virtqueue", "queue size 0: a virtqueue needs at least one entry");
  }
  // Indices are free-running u16s and a slot is idx % size: only a power of two divides 2^16, so only then does the
  // slot sequence stay continuous when the index wraps from 65535 to 0.
  if (!std::has_single_bit(size)) {
    return logic_error("virtqueue", fmt::format("queue size {} is not a power of two", size));
  }
  if (size > max_size) {
    return logic_error("virtqueue", fmt::format("queue size {} is larger than the maximum {}", size, max_size));
  }
  if (auto ok = check_area(memory, "descriptor table", layout.descriptor_table,
                           QueueLayout::descriptor_table_bytes(size), kDescriptorTableAlign);
      !ok) {
    return ok;
  }
  if (auto ok = check_area(memory, "available ring", layout.available_ring, QueueLayout::available_ring_bytes(size),
                           kAvailableRingAlign);
      !ok) {
    return ok;
  }
  return check_area(memory, "used ring", layout.used_ring, QueueLayout::used_ring_bytes(size), kUsedRingAlign);
}

Result<SplitQueue> SplitQueue::create(const memory::GuestMemory& memory, const QueueLayout& layout,
                                      std::uint16_t max_size, QueueFeatures features,
                                      std::shared_ptr<QueueCounters> counters) {
  if (auto ok = validate(layout, max_size, memory); !ok) {
    return std::unexpected(std::move(ok).error());
  }
  if (!counters) {
    counters = std::make_shared<QueueCounters>();
  }
  return SplitQueue(memory, layout, features, std::move(counters));
}

Result<std::uint16_t> SplitQueue::available_index() const {
  // Acquire: pairs with the driver's release store of avail->idx (Linux: virtio_store_mb / smp_wmb before it). Once we
  // see index N, the ring entries below N and the descriptors they name, written before the store, are visible too.
  return memory_->load<std::uint16_t>(at(layout_.available_ring, kAvailIdx), std::memory_order_acquire);
}

Result<std::optional<DescriptorChain>> SplitQueue::pop() {
  auto available = available_index();
  if (!available) {
    return std::unexpected(std::move(available).error());
  }
  // Modulo 2^16: the driver's index may have wrapped past 65535 while ours has not yet.
  const auto pending = static_cast<std::uint16_t>(*available - next_avail_);
  if (pending > layout_.size) {
    // The driver cannot have more than `size` chains outstanding: it has only `size` descriptors. The ring entries
    // would overwrite each other, so nothing in the ring can be trusted.
    counters_->errors.fetch_add(1, std::memory_order_relaxed);
    return logic_error("virtqueue", fmt::format("available index moved from {} to {}, more than the queue size {}",
                                                next_avail_, *available, layout_.size));
  }
  if (pending == 0) {
    return std::nullopt;
  }

  const auto slot = static_cast<std::uint16_t>(next_avail_ % layout_.size);
  // A plain copy is enough: the acquire load above already ordered this entry (written before idx) for us.
  auto head = memory_->read_obj<std::uint16_t>(at(layout_.available_ring, kAvailRing + kAvailEntryBytes * slot));
  if (!head) {
    return std::unexpected(std::move(head).error());
  }
  // Consumed from here on, valid or not: a bad chain must not be offered to the device again.
  const auto entry = next_avail_;
  ++next_avail_;
  has_popped_ = false;
  counters_->chains.fetch_add(1, std::memory_order_relaxed);

  auto chain = read_descriptor_chain(*memory_, layout_.descriptor_table, *head,
                                     ChainLimits{.queue_size = layout_.size, .indirect_allowed = features_.indirect});
  if (!chain) {
    counters_->errors.fetch_add(1, std::memory_order_relaxed);
    return std::unexpected(std::move(chain).error().with_context(
        fmt::format("available ring entry {} (slot {}) names head {}", entry, slot, *head)));
  }
  has_popped_ = true;
  return std::optional<DescriptorChain>(std::move(chain).value());
}

void SplitQueue::undo_pop() {
  assert(has_popped_ && "undo_pop without a successful pop just before");
  if (!has_popped_) {
    return;  // Release builds: refuse to step back over something we did not hand out.
  }
  has_popped_ = false;
  --next_avail_;
  // The chain will be popped (and counted) again: count each request once.
  counters_->chains.fetch_sub(1, std::memory_order_relaxed);
}

Result<void> SplitQueue::add_used(std::uint16_t head_index, std::uint32_t length) {
  if (head_index >= layout_.size) {
    counters_->errors.fetch_add(1, std::memory_order_relaxed);
    return logic_error("virtqueue",
                       fmt::format("used entry for head {}: out of range (queue size {})", head_index, layout_.size));
  }
  const auto slot = static_cast<std::uint16_t>(next_used_ % layout_.size);
  const vring_used_elem element{.id = head_index, .len = length};
  if (auto ok = memory_->write_obj(at(layout_.used_ring, kUsedRing + kUsedEntryBytes * slot), element); !ok) {
    return ok;
  }
  const auto next = static_cast<std::uint16_t>(next_used_ + 1);
  // Release: the entry above (and the bytes the device wrote into the buffers before calling us) must be visible
  // before the driver can see the new index; it reads idx with acquire (Linux: virtio_rmb after reading it).
  if (auto ok = memory_->store<std::uint16_t>(at(layout_.used_ring, kUsedIdx), next, std::memory_order_release); !ok) {
    return ok;
  }
  next_used_ = next;
  counters_->used.fetch_add(1, std::memory_order_relaxed);
  return {};
}

Result<bool> SplitQueue::needs_notification() {
  // A full fence, not just acquire/release. The pattern is "store, then load the other side's variable" on both
  // sides (a Dekker pattern): we stored used->idx and now load used_event/flags; the driver stores used_event/flags
  // and then re-reads used->idx (Linux: virtqueue_enable_cb_prepare + virtio_mb). Only seq_cst fences on both sides
  // forbid each of us reading the other's old value, the outcome in which the driver waits for an interrupt that we
  // decide not to send.
  std::atomic_thread_fence(std::memory_order_seq_cst);

  const auto old_used = signalled_used_;
  const auto new_used = next_used_;
  signalled_used_ = new_used;

  bool need = false;
  if (new_used == old_used) {
    need = false;  // Nothing added since the last decision: nothing to tell the driver.
  } else if (features_.event_idx) {
    const auto used_event_address =
        at(layout_.available_ring, kAvailRing + kAvailEntryBytes * layout_.size);  // after ring[size]
    // Relaxed: the fence above does the ordering.
    auto used_event = memory_->load<std::uint16_t>(used_event_address, std::memory_order_relaxed);
    if (!used_event) {
      return std::unexpected(std::move(used_event).error());
    }
    need = need_event(*used_event, new_used, old_used);
  } else {
    auto flags = memory_->load<std::uint16_t>(at(layout_.available_ring, kAvailFlags), std::memory_order_relaxed);
    if (!flags) {
      return std::unexpected(std::move(flags).error());
    }
    need = (*flags & VRING_AVAIL_F_NO_INTERRUPT) == 0;
  }
  if (!need && new_used != old_used) {
    counters_->interrupts_suppressed.fetch_add(1, std::memory_order_relaxed);
  }
  return need;
}

namespace {

// Sets or clears VRING_USED_F_NO_NOTIFY. The device is the only writer of used->flags, so read-modify-write is safe.
// Relaxed: the flag is a hint; a driver that sees it late kicks once more, which costs an exit, not correctness.
Result<void> set_no_notify(const GuestMemory& memory, GuestAddress used_ring, bool no_notify) {
  const auto address = at(used_ring, kUsedFlags);
  auto flags = memory.load<std::uint16_t>(address, std::memory_order_relaxed);
  if (!flags) {
    return std::unexpected(std::move(flags).error());
  }
  const auto updated =
      static_cast<std::uint16_t>(no_notify ? (*flags | VRING_USED_F_NO_NOTIFY) : (*flags & ~VRING_USED_F_NO_NOTIFY));
  return memory.store<std::uint16_t>(address, updated, std::memory_order_relaxed);
}

}  // namespace

Result<void> SplitQueue::disable_notification() {
  if (features_.event_idx) {
    // avail_event stays where enable_notification put it: once the driver's index has passed it, need_event says
    // no kick until we move it again.
    return {};
  }
  return set_no_notify(*memory_, layout_.used_ring, true);
}

Result<bool> SplitQueue::enable_notification() {
  if (features_.event_idx) {
    // "Kick me when your idx passes next_avail": the next buffer the driver publishes (entry next_avail) kicks.
    const auto avail_event_address = at(layout_.used_ring, kUsedRing + kUsedEntryBytes * layout_.size);
    if (auto ok = memory_->store<std::uint16_t>(avail_event_address, next_avail_, std::memory_order_relaxed); !ok) {
      return std::unexpected(std::move(ok).error());
    }
  } else if (auto ok = set_no_notify(*memory_, layout_.used_ring, false); !ok) {
    return std::unexpected(std::move(ok).error());
  }
  // The race this function exists for: the driver stores avail->idx, then loads our hint (avail_event or flags) to
  // decide whether to kick. We store the hint, then load avail->idx. If a buffer was published while we still said
  // "don't kick", the driver did not kick; a seq_cst fence on each side (Linux: virtio_mb in virtqueue_kick_prepare)
  // guarantees that at least one of us sees the other's store: either the driver sees our new hint and kicks, or we
  // see its new index here and report it.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  auto available = available_index();
  if (!available) {
    return std::unexpected(std::move(available).error());
  }
  return *available != next_avail_;
}

}  // namespace vmm::virtio
