#pragma once
/// @file
/// @brief Lab 04's exercise interface: the functions you write (exercises/) and the reference (solutions/) share it.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "pci_vm.hpp"
#include "vmm/error.hpp"
#include "vmm/pci/config_space.hpp"
#include "vmm/pci/msi.hpp"
#include "vmm/pci/pci_device.hpp"
#include "vmm/pci/pci_test_device.hpp"

namespace lab04 {

// --- Exercise 1 ------------------------------------------------------------------------------------------------

/// @brief Exercise 1: plug a second `PciTestDevice`, delivering its MSI-X messages to `sink`, into bus 0 of `vm` at
///        `slot`. Call it before the vCPU starts. Returns the device (the test reads its state).
///
/// `sink` must outlive the device; the root keeps the device for as long as `vm` exists.
[[nodiscard]] vmm::Result<std::shared_ptr<vmm::pci::PciTestDevice>> add_second_test_device(vmm::stage04::PciVm& vm,
                                                                                           vmm::pci::MsiSink& sink,
                                                                                           std::uint8_t slot);

// --- Exercise 2 ------------------------------------------------------------------------------------------------

/// @brief Exercise 2: a PCI function with one BAR: BAR0, a 64-bit prefetchable memory BAR of 16 KiB, backed by 16 KiB
///        of scratch memory (reads return what was written, zero at first; any size, any alignment).
///
/// IDs 1af4:10f2 (the next ID of QEMU's experimental range), class ff/00/00, header type 0. As given, the constructor
/// fills only the header: the BAR is yours to declare.
class Scratch64Device final : public vmm::pci::PciDevice {
 public:
  /// @brief QEMU's experimental vendor (see `PciTestDevice`).
  static constexpr std::uint16_t kVendorId = 0x1af4;
  /// @brief The next free ID of the experimental range.
  static constexpr std::uint16_t kDeviceId = 0x10f2;
  /// @brief BAR0's size: 16 KiB.
  static constexpr std::uint64_t kBarSize = 0x4000;

  Scratch64Device();
  vmm::pci::ConfigSpace& config() override { return config_; }
  void bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) override;
  void bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) override;
  [[nodiscard]] std::string name() const override { return "scratch64"; }

 private:
  vmm::pci::ConfigSpace config_;
  std::mutex mutex_;  // BAR accesses come from any vCPU thread
  std::array<std::uint8_t, kBarSize> memory_{};
};

// --- Exercise 3 ------------------------------------------------------------------------------------------------

/// @brief Exercise 3: the x86 MSI message that asks the local APIC with ID `apic_id` to take `vector` (fixed delivery,
///        edge, physical destination): address 0xFEE0_0000 with the destination in bits 19:12, data = the vector.
[[nodiscard]] vmm::pci::MsiMessage lapic_msi(std::uint8_t apic_id, std::uint8_t vector);

/// @brief Exercise 3: drive `device`'s MSI-X the way a guest does, but from the VMM side (config space and BAR
///        accesses, no guest): enable MSI-X (Message Control Enable, Function Mask clear), program table entry 1
///        with `message` and *masked*, ring the doorbell for vector 1, and return the PBA's first qword as the guest
///        would read it from BAR2.
[[nodiscard]] std::uint64_t fire_masked_and_read_pba(vmm::pci::PciTestDevice& device,
                                                     const vmm::pci::MsiMessage& message);

/// @brief Exercise 3: clear the mask bit of table entry `vector` of `device` through BAR2, as a guest would.
void unmask_vector(vmm::pci::PciTestDevice& device, std::uint16_t vector);

}  // namespace lab04
