#pragma once
/// @file
/// @brief Lab 06's exercise interface: the functions you write (exercises/) and the reference (solutions/) share it.

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <span>

#include "eventfd_rng_vm.hpp"
#include "vmm/machine/exit_counters.hpp"
#include "vmm/pci/msi.hpp"
#include "vmm/pci/pci_root.hpp"
#include "vmm/testing/virtio_pci_driver.hpp"
#include "vmmlab/virtio_rng_options.h"

namespace lab06 {

// --- Exercise 1 ------------------------------------------------------------------------------------------------

/// @brief Exercise 1: the configuration of stage06's machine that runs stage05's guest driver with `options`, with
///        the rng still on its worker thread and its interrupts still on irqfds, but without ioeventfds on its
///        notify addresses (so every kick is a userspace MMIO exit again). Everything else as the defaults.
[[nodiscard]] vmm::stage06::EventfdRngVmConfig without_ioeventfds(const vmmlab_rng_options& options);

/// @brief Exercise 1: of the userspace exits in `exits`, the MMIO *writes* that landed in the rng's notify region:
///        BAR0 of the device at slot `vmm::stage05::kRngSlot`, offsets [kNotifyOffset, kNotifyOffset + kRegionSize).
///        `mappings` is where the guest put every BAR (`PciRoot::mappings()`); 0 if the rng's BAR0 is not among them.
[[nodiscard]] std::uint64_t notify_exits(const vmm::machine::ExitCountersSnapshot& exits,
                                         std::span<const vmm::pci::BarMapping> mappings);

/// @brief Where a run's kicks end up.
struct KickPrediction {
  std::uint64_t notify_exits = 0;     ///< Userspace MMIO exits to the notify region (what `notify_exits` counts).
  std::uint64_t ioeventfd_kicks = 0;  ///< Kicks the worker read from its queue eventfd (`ThreadedDevice`).
  /// @brief Equal when both counts are.
  bool operator==(const KickPrediction&) const = default;
};

/// @brief Exercise 1: your theory. A run in which the guest wrote its notify register `guest_kicks` times, on
///        stage06's machine with (`ioeventfd`) or without ioeventfds registered.
[[nodiscard]] KickPrediction predict(std::uint64_t guest_kicks, bool ioeventfd);

// --- Exercise 2 ------------------------------------------------------------------------------------------------

/// @brief Exercise 2: what a guest driver does to mask MSI-X vector `vector`: set the mask bit of its table entry's
///        Vector Control, through the MSI-X BAR (BAR2).
void mask_vector(vmm::testing::VirtioPciDriver& driver, std::uint16_t vector);
/// @brief Exercise 2: clear that mask bit again.
void unmask_vector(vmm::testing::VirtioPciDriver& driver, std::uint16_t vector);
/// @brief Exercise 2: `vector`'s bit in the Pending Bit Array, read through the MSI-X BAR as a guest reads it.
[[nodiscard]] bool pending(vmm::testing::VirtioPciDriver& driver, std::uint16_t vector);
/// @brief Exercise 2: the MSI message GSI `gsi` sends in the routing table `table` (what KVM_SET_GSI_ROUTING
///        installed), or nothing if `gsi` has no MSI route in it.
[[nodiscard]] std::optional<vmm::pci::MsiMessage> routed_message(std::span<const kvm_irq_routing_entry> table,
                                                                 std::uint32_t gsi);

}  // namespace lab06
