#pragma once
/// @file
/// @brief Lab 05's exercise interface: the functions you write (exercises/) and the reference (solutions/) share it.

#include <cstdint>
#include <span>

#include "virtio_rng_vm.hpp"
#include "vmm/error.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/testing/mock_driver.hpp"
#include "vmm/virtio/descriptor_chain.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"
#include "vmmlab/virtio_rng_options.h"

namespace lab05 {

// --- Exercise 1 ------------------------------------------------------------------------------------------------

/// @brief Exercise 1: options for stage05's guest driver (`guest/virtio_rng.c`) that run only the flags phase
///        (no VIRTIO_RING_F_EVENT_IDX): at least 2 batches of at least 2 requests each, not chained.
///
/// The guest takes them only if `magic` is `VMMLAB_RNG_OPTIONS_MAGIC`; the other rules are in
/// `vmmlab/virtio_rng_options.h` (options that break one make the guest fail).
[[nodiscard]] vmmlab_rng_options flags_only_options();

/// @brief What the counters of one phase will show.
struct Prediction {
  std::uint64_t kicks = 0;       ///< Notify writes: the guest's count and the device's `notifications`.
  std::uint64_t interrupts = 0;  ///< Queue interrupts: sent by the device, taken by the guest.
  std::uint64_t suppressed = 0;  ///< The device's `interrupts_suppressed`.
  /// @brief Equal when every count is.
  bool operator==(const Prediction&) const = default;
};

/// @brief Exercise 1: your theory. The counts of one phase of the guest driver run with `options`, with
///        (`event_idx`) or without VIRTIO_RING_F_EVENT_IDX negotiated, on stage05's device (which serves every
///        kick inside the kick's own MMIO exit).
[[nodiscard]] Prediction predict(const vmmlab_rng_options& options, bool event_idx);

// --- Exercise 2 ------------------------------------------------------------------------------------------------

/// @brief Exercise 2: the driver's side of one request, by hand. Writes `parts` as descriptors 0, 1, ...,
///        parts.size() - 1 of the descriptor table at `layout.descriptor_table` (each device-writable, linked to
///        the next with VRING_DESC_F_NEXT), puts head 0 in the available ring's entry for `avail_index`, then
///        publishes it: `avail->idx = avail_index + 1`, a release store.
///
/// `avail_index` is the available ring's `idx` before the call (what the driver published last). Returns the new
/// `idx`. Refuses (an error, nothing written) an empty chain or one with more parts than the queue has descriptors.
[[nodiscard]] vmm::Result<std::uint16_t> publish_chained_request(const vmm::memory::GuestMemory& memory,
                                                                 const vmm::virtio::QueueLayout& layout,
                                                                 std::uint16_t avail_index,
                                                                 std::span<const vmm::virtio::Descriptor> parts);

// --- Exercise 3 ------------------------------------------------------------------------------------------------

/// @brief Exercise 3: the rules a driver can break, one per test.
enum class Violation {
  DescriptorLoop,         ///< A chain whose `next` leads back to a descriptor already in it.
  ReadableAfterWritable,  ///< A device-readable descriptor after a device-writable one in the same chain.
  BufferOutsideMemory,    ///< A descriptor whose buffer is not in guest memory.
  IndexJump,              ///< `avail->idx` moved by more than the queue size.
};

/// @brief Exercise 3: make `driver` (fresh: nothing published yet) publish exactly `violation`, with its raw calls
///        (`write_descriptor`, `publish`, `set_avail_index`) and `allocate` for buffers. The test kicks the device.
void publish_violation(vmm::testing::MockDriver& driver, Violation violation);

/// @brief Exercise 3: what a driver does when it sees DEVICE_NEEDS_RESET: reset the device through the common
///        configuration (write 0 to `device_status` in BAR0) and read `device_status` back until it is 0 (a bounded
///        number of times).
void reset_after_needs_reset(vmm::virtio::VirtioPciDevice& transport);

}  // namespace lab05
