// Lab 04, exercise 3 (reference): a masked MSI-X vector, its pending bit, and the message it becomes.
// See labs/04-pci/README.md.
#include <linux/pci_regs.h>

#include <array>

#include "lab04.hpp"

namespace lab04 {
namespace {

using vmm::pci::PciTestDevice;

void bar_write32(PciTestDevice& device, std::size_t bar, std::uint64_t offset, std::uint32_t value) {
  const std::array<std::uint8_t, 4> bytes{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8),
                                          static_cast<std::uint8_t>(value >> 16),
                                          static_cast<std::uint8_t>(value >> 24)};
  device.bar_write(bar, offset, bytes);
}

// Where entry `vector`'s dword `field` (PCI_MSIX_ENTRY_LOWER_ADDR ... PCI_MSIX_ENTRY_VECTOR_CTRL) sits in BAR2.
std::uint64_t entry_offset(std::uint16_t vector, std::uint64_t field) {
  return PciTestDevice::kTableOffset + std::uint64_t{vector} * PCI_MSIX_ENTRY_SIZE + field;
}

}  // namespace

vmm::pci::MsiMessage lapic_msi(std::uint8_t apic_id, std::uint8_t vector) {
  return {.address = 0xfee0'0000ull | std::uint64_t{apic_id} << 12, .data = vector};
}

std::uint64_t fire_masked_and_read_pba(PciTestDevice& device, const vmm::pci::MsiMessage& message) {
  // Message Control: Enable on, Function Mask off. The guest's write would arrive through the root, which calls
  // config_written after the config space took it; from the VMM side we make both calls ourselves.
  const std::uint16_t control = static_cast<std::uint16_t>(device.msix_capability() + PCI_MSIX_FLAGS);
  device.config().write16(control, PCI_MSIX_FLAGS_ENABLE);
  device.config_written(control, 2);

  // Entry 1: address (two dwords), data, and Vector Control with the mask bit set.
  constexpr std::uint16_t kVector = 1;
  bar_write32(device, PciTestDevice::kMsixBar, entry_offset(kVector, PCI_MSIX_ENTRY_LOWER_ADDR),
              static_cast<std::uint32_t>(message.address));
  bar_write32(device, PciTestDevice::kMsixBar, entry_offset(kVector, PCI_MSIX_ENTRY_UPPER_ADDR),
              static_cast<std::uint32_t>(message.address >> 32));
  bar_write32(device, PciTestDevice::kMsixBar, entry_offset(kVector, PCI_MSIX_ENTRY_DATA), message.data);
  bar_write32(device, PciTestDevice::kMsixBar, entry_offset(kVector, PCI_MSIX_ENTRY_VECTOR_CTRL),
              PCI_MSIX_ENTRY_CTRL_MASKBIT);

  // The doorbell: the device wants to interrupt on vector 1, finds it masked, and sets its pending bit instead.
  bar_write32(device, PciTestDevice::kRegistersBar, PciTestDevice::kRegDoorbell, kVector);

  std::array<std::uint8_t, 8> pba{};
  device.bar_read(PciTestDevice::kMsixBar, PciTestDevice::kPbaOffset, pba);
  std::uint64_t word = 0;
  for (std::size_t i = 0; i < pba.size(); ++i) {
    word |= std::uint64_t{pba[i]} << (8 * i);
  }
  return word;
}

void unmask_vector(PciTestDevice& device, std::uint16_t vector) {
  // Clearing the mask bit of a pending vector delivers it at once, and clears its pending bit.
  bar_write32(device, PciTestDevice::kMsixBar, entry_offset(vector, PCI_MSIX_ENTRY_VECTOR_CTRL), 0);
}

}  // namespace lab04
