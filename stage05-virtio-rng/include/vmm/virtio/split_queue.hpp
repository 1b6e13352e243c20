#pragma once
/// @file
/// @brief `SplitQueue`: the device side of a virtio split virtqueue (virtio 1.2, 2.7), with its layout checks and
/// both kinds of notification suppression.

#include <cstdint>
#include <memory>
#include <optional>

#include "vmm/error.hpp"
#include "vmm/memory/guest_address.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/virtio/descriptor_chain.hpp"
#include "vmm/virtio/queue_counters.hpp"

namespace vmm::virtio {

/// @brief Where the driver put a split virtqueue's three areas, and how many entries it has: what it writes to the
/// common configuration's queue_size, queue_desc, queue_driver and queue_device before enabling the queue.
///
/// | area                         | layout                                            | bytes      | alignment |
/// |------------------------------|---------------------------------------------------|------------|-----------|
/// | descriptor table             | `vring_desc[size]`                                | 16 * size  | 16        |
/// | available ring ("driver")    | flags, idx, ring[size], used_event                | 6 + 2*size | 2         |
/// | used ring ("device")         | flags, idx, ring[size] (`vring_used_elem`), avail_event | 6 + 8*size | 4   |
///
/// The event fields (`used_event`, `avail_event`) exist in memory whether or not VIRTIO_RING_F_EVENT_IDX is
/// negotiated, so the sizes always include them.
struct QueueLayout {
  std::uint16_t size = 0;                 ///< Entries (queue_size): a power of two.
  memory::GuestAddress descriptor_table;  ///< queue_desc.
  memory::GuestAddress available_ring;    ///< queue_driver.
  memory::GuestAddress used_ring;         ///< queue_device.

  /// @brief Bytes of the descriptor table for `size` entries.
  [[nodiscard]] static constexpr std::uint64_t descriptor_table_bytes(std::uint16_t size) noexcept {
    return 16ull * size;
  }
  /// @brief Bytes of the available ring, `used_event` included.
  [[nodiscard]] static constexpr std::uint64_t available_ring_bytes(std::uint16_t size) noexcept {
    return 6ull + 2ull * size;
  }
  /// @brief Bytes of the used ring, `avail_event` included.
  [[nodiscard]] static constexpr std::uint64_t used_ring_bytes(std::uint16_t size) noexcept {
    return 6ull + 8ull * size;
  }
  /// @brief Equal when every field is.
  bool operator==(const QueueLayout&) const = default;
};

/// @brief Checks a layout the way a device must before trusting it: `size` is a power of two in [1, `max_size`],
/// each area is aligned as the table above says and lies wholly inside guest memory. The error names the first
/// rule broken and the values involved.
[[nodiscard]] Result<void> validate(const QueueLayout& layout, std::uint16_t max_size,
                                    const memory::GuestMemory& memory);

/// @brief The virtio event-index test (`vring_need_event` in the spec and in `<linux/virtio_ring.h>`): the other side
/// asked to be notified once our index passes `event_index`; it moved from `old_index` to `new_index` since we last
/// decided. True when `event_index` lies in [old_index, new_index) modulo 2^16, i.e. the index crossed it just now.
[[nodiscard]] constexpr bool need_event(std::uint16_t event_index, std::uint16_t new_index,
                                        std::uint16_t old_index) noexcept {
  return static_cast<std::uint16_t>(new_index - event_index - 1) < static_cast<std::uint16_t>(new_index - old_index);
}

/// @brief The ring features that change how a queue works.
struct QueueFeatures {
  bool event_idx = false;  ///< VIRTIO_RING_F_EVENT_IDX: `used_event`/`avail_event` replace the flags.
  bool indirect = false;   ///< VIRTIO_RING_F_INDIRECT_DESC: descriptors may point at indirect tables.
};

/// @brief The device side of one split virtqueue, created when the driver enables it.
///
/// The life of a request, device side:
/// 1. `pop` reads the available ring's `idx` with acquire ordering (everything the driver wrote before publishing the
///    index, descriptors included, is then visible), takes the head at `ring[next_avail % size]` and walks its chain
///    (`read_descriptor_chain`).
/// 2. The device reads the readable buffers and fills the writable ones.
/// 3. `add_used` writes `{id, len}` to `used->ring[next_used % size]` and then `used->idx` with release ordering, so
///    the driver never sees the index before the entry.
/// 4. `needs_notification` decides whether to interrupt the driver now.
///
/// Indices are free-running u16s: they wrap from 65535 to 0 and only `idx % size` picks a slot, so every comparison
/// here is modulo 2^16. An available index that moved by more than `size` since the device last looked is a driver
/// bug and an error.
///
/// Notification suppression, in the mode the features select:
/// - flags mode: the device sets VRING_USED_F_NO_NOTIFY in `used->flags` to say "don't kick me" and reads
///   VRING_AVAIL_F_NO_INTERRUPT in `avail->flags` ("don't interrupt me"). Both are hints.
/// - EVENT_IDX: the device writes `avail_event` (after the used ring) to say "kick me when your idx passes this", and
///   reads `used_event` (after the available ring) to decide interrupts with `need_event`.
/// `disable_notification`/`enable_notification` bracket a batch: a driver that publishes a buffer just before the
/// device re-enables notifications would not kick, so `enable_notification` re-reads the available index after a
/// full fence and reports whether more work arrived.
///
/// Not thread-safe: the device serialises calls (its own lock, or one thread). Holds a pointer to `memory`, which
/// must outlive it. Errors never leave guest memory or the queue in a state that is unsafe to continue from; the
/// device decides what a driver error means (vmmlab's devices set DEVICE_NEEDS_RESET).
class SplitQueue {
 public:
  /// @brief Validates `layout` (see `validate`) and returns the queue in its initial state: both indices 0, which is
  /// where a driver starts after the device (or queue) reset. `counters` is shared with the transport (a private set
  /// if null).
  [[nodiscard]] static Result<SplitQueue> create(const memory::GuestMemory& memory, const QueueLayout& layout,
                                                 std::uint16_t max_size, QueueFeatures features,
                                                 std::shared_ptr<QueueCounters> counters = nullptr);

  /// @brief The next available chain, nothing if the driver has not published one, or an error (the driver broke a
  /// rule: the index jumped, or the chain is invalid). A chain that fails its checks is still consumed, so the
  /// device does not see it again; the device should then stop using the queue.
  [[nodiscard]] Result<std::optional<DescriptorChain>> pop();
  /// @brief Steps back over the chain `pop` returned last, so the next `pop` returns it again (a device that cannot
  /// serve it yet: rate limiting). Only valid once after a successful pop.
  void undo_pop();
  /// @brief Returns chain `head_index` to the driver with `length` bytes written into its writable part.
  [[nodiscard]] Result<void> add_used(std::uint16_t head_index, std::uint32_t length);
  /// @brief Whether the driver wants a used-buffer notification now, for the entries added since the last call
  /// (flags mode: VRING_AVAIL_F_NO_INTERRUPT is clear; EVENT_IDX: `need_event(used_event, next_used, last)`), read
  /// after a full fence so the driver's latest request is seen. Counts `interrupts_suppressed` when it says no
  /// although entries were added.
  [[nodiscard]] Result<bool> needs_notification();

  /// @brief Asks the driver not to kick while the device is busy (flags mode: sets VRING_USED_F_NO_NOTIFY; with
  /// EVENT_IDX nothing is written: `avail_event` simply stays behind).
  [[nodiscard]] Result<void> disable_notification();
  /// @brief Asks for kicks again (flags mode: clears VRING_USED_F_NO_NOTIFY; EVENT_IDX: `avail_event = next_avail`),
  /// then, after a full fence, re-reads the available index: true when buffers arrived that the device has not
  /// popped, which the device must process, since their kick may have been suppressed.
  [[nodiscard]] Result<bool> enable_notification();

  /// @brief Layout the driver programmed.
  [[nodiscard]] const QueueLayout& layout() const noexcept { return layout_; }
  /// @brief Entries.
  [[nodiscard]] std::uint16_t size() const noexcept { return layout_.size; }
  /// @brief Ring features in force.
  [[nodiscard]] QueueFeatures features() const noexcept { return features_; }
  /// @brief The available-ring index the device will read next.
  [[nodiscard]] std::uint16_t next_avail() const noexcept { return next_avail_; }
  /// @brief The used-ring index the device will write next.
  [[nodiscard]] std::uint16_t next_used() const noexcept { return next_used_; }
  /// @brief Sets where the device resumes in the available ring (vhost-user's SET_VRING_BASE; tests near 65535).
  void set_next_avail(std::uint16_t index) noexcept { next_avail_ = index; }
  /// @brief Sets where the device resumes in the used ring (and the last index it signalled).
  void set_next_used(std::uint16_t index) noexcept {
    next_used_ = index;
    signalled_used_ = index;
  }
  /// @brief The counters (shared with the transport).
  [[nodiscard]] QueueCounters& counters() const noexcept { return *counters_; }
  /// @brief The available ring's `idx` as the driver last published it (acquire load; for tests, traces and gdb).
  [[nodiscard]] Result<std::uint16_t> available_index() const;

 private:
  SplitQueue(const memory::GuestMemory& memory, const QueueLayout& layout, QueueFeatures features,
             std::shared_ptr<QueueCounters> counters)
      : memory_(&memory), layout_(layout), features_(features), counters_(std::move(counters)) {}

  const memory::GuestMemory* memory_;
  QueueLayout layout_;
  QueueFeatures features_;
  std::shared_ptr<QueueCounters> counters_;
  std::uint16_t next_avail_ = 0;
  std::uint16_t next_used_ = 0;
  std::uint16_t signalled_used_ = 0;  // next_used_ when needs_notification was last asked
  bool has_popped_ = false;           // undo_pop is allowed
};

}  // namespace vmm::virtio
