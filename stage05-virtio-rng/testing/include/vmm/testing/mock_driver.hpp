#pragma once
/// @file
/// @brief `MockDriver`: plays a virtio driver against a `SplitQueue` in ordinary memory, so device logic is tested
/// without a guest (in the spirit of rust-vmm virtio-queue's `mock.rs`).

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vmm/memory/guest_address.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/uapi.hpp"

namespace vmm::testing {

/// @brief One buffer the driver offers: where, how long, and whether the device may write it.
struct MockBuffer {
  memory::GuestAddress address;  ///< First byte.
  std::uint32_t length = 0;      ///< Bytes.
  bool writable = false;         ///< VRING_DESC_F_WRITE.
};

/// @brief Where a `MockDriver` lays out its queue: the three areas packed from `rings` (aligned as the spec
/// requires) and buffers handed out from `buffers` upward. Both must lie in the memory given to the driver.
struct MockLayout {
  std::uint16_t size = 16;                  ///< Queue size.
  memory::GuestAddress rings{0x1000};       ///< Descriptor table, then available ring, then used ring.
  memory::GuestAddress buffers{0x10'0000};  ///< Where `allocate` starts.
};

/// @brief A virtio driver, written the way Linux's virtio_ring is: descriptors from a free list, the chain's head
/// published in the available ring, `avail->idx` stored with release ordering, kicks decided with the device's
/// suppression hints, used entries collected with acquire ordering.
///
/// Besides well-behaved use it exposes the raw pieces (`write_descriptor`, `publish`, `set_avail_index`) so tests
/// can build what a hostile driver would: loops, out-of-range indices, bogus indirect tables, indices that jump.
/// Every access goes through `GuestMemory`; an access the test set up wrongly aborts the test (assert-style), since
/// that is a bug in the test, not in the device.
class MockDriver {
 public:
  /// @brief Lays out and zeroes the rings for `layout.size` entries in `memory` (which must outlive the driver).
  /// `event_idx`: the driver negotiated VIRTIO_RING_F_EVENT_IDX (decides how it reads the device's hints).
  MockDriver(const memory::GuestMemory& memory, MockLayout layout = {}, bool event_idx = false);

  /// @brief The layout to give `SplitQueue::create` (what the driver would write to the common configuration).
  [[nodiscard]] virtio::QueueLayout queue_layout() const noexcept { return queue_layout_; }
  /// @brief The ring features this driver negotiated, with `indirect` as given.
  [[nodiscard]] virtio::QueueFeatures features(bool indirect = true) const noexcept {
    return {.event_idx = event_idx_, .indirect = indirect};
  }

  /// @brief Hands out `length` bytes of buffer space (16-byte aligned), filled with `fill`.
  [[nodiscard]] MockBuffer allocate(std::uint32_t length, bool writable, std::uint8_t fill = 0);
  /// @brief Puts `buffers` in free descriptors chained with VRING_DESC_F_NEXT and publishes the head; returns it.
  std::uint16_t add_chain(std::span<const MockBuffer> buffers);
  /// @brief Writes `buffers` as an indirect table at a fresh allocation, points one descriptor at it (INDIRECT) and
  /// publishes it; returns the head.
  std::uint16_t add_indirect(std::span<const MockBuffer> buffers);
  /// @brief Whether to notify the device now, for the buffers published since the last call (Linux's
  /// virtqueue_kick_prepare: `need_event(avail_event, new, old)` with EVENT_IDX, else !VRING_USED_F_NO_NOTIFY).
  [[nodiscard]] bool kick_needed();
  /// @brief `kick_needed`, counting a kick when it says yes (the test then calls the device's notify).
  bool kick_if_needed();
  /// @brief Kicks counted so far.
  [[nodiscard]] std::uint64_t kicks() const noexcept { return kicks_; }

  /// @brief New entries in the used ring since the last call (acquire load of `used->idx`); frees their
  /// descriptors.
  [[nodiscard]] std::vector<vring_used_elem> collect_used();
  /// @brief Asks for an interrupt once the used index passes `index` (writes `used_event`; EVENT_IDX mode).
  void set_used_event(std::uint16_t index);
  /// @brief Sets or clears VRING_AVAIL_F_NO_INTERRUPT (flags mode).
  void set_no_interrupt(bool no_interrupt);

  /// @brief Raw: writes descriptor `index` of the table as given.
  void write_descriptor(std::uint16_t index, const vring_desc& descriptor);
  /// @brief Raw: writes `head` in the next available slot and bumps `avail->idx` (release).
  void publish(std::uint16_t head);
  /// @brief Raw: stores `avail->idx` directly (and makes it the driver's own idea of it).
  void set_avail_index(std::uint16_t index);
  /// @brief Raw: makes the driver continue from `avail_index`/`used_index` (tests near the 65535 wrap). Call before
  /// publishing anything; set the device's `next_avail`/`next_used` to match.
  void start_at(std::uint16_t avail_index, std::uint16_t used_index);

  /// @brief `avail->idx` as the driver last published it.
  [[nodiscard]] std::uint16_t avail_index() const noexcept { return avail_idx_; }
  /// @brief `used->idx` as the device last published it (acquire load).
  [[nodiscard]] std::uint16_t used_index() const;
  /// @brief `used->flags`.
  [[nodiscard]] std::uint16_t used_flags() const;
  /// @brief `avail_event` (after the used ring).
  [[nodiscard]] std::uint16_t avail_event() const;
  /// @brief Reads `length` bytes of guest memory at `address` (to check what the device wrote).
  [[nodiscard]] std::vector<std::uint8_t> read_bytes(memory::GuestAddress address, std::size_t length) const;
  /// @brief Free descriptors left.
  [[nodiscard]] std::size_t free_descriptors() const noexcept { return free_.size(); }

 private:
  [[nodiscard]] std::uint16_t take_descriptor();

  const memory::GuestMemory& memory_;
  virtio::QueueLayout queue_layout_;
  bool event_idx_;
  memory::GuestAddress next_buffer_;
  std::vector<std::uint16_t> free_;          // free descriptor indices
  std::vector<std::uint16_t> chain_length_;  // per head: descriptors to free when it comes back
  std::uint16_t avail_idx_ = 0;
  std::uint16_t last_kick_avail_ = 0;  // avail idx at the last kick_needed
  std::uint16_t last_used_ = 0;        // used idx up to which entries were collected
  std::uint64_t kicks_ = 0;
};

/// @brief Guest memory for mock-driver tests: one anonymous region of `size` bytes at guest address 0.
[[nodiscard]] memory::GuestMemory make_test_memory(std::uint64_t size = 4ull << 20);

}  // namespace vmm::testing
