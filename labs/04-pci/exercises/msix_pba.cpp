// Lab 04, exercise 3: a masked MSI-X vector, its pending bit, and the message it becomes. See labs/04-pci/README.md.
#include <linux/pci_regs.h>

#include <array>

#include "lab04.hpp"

namespace lab04 {

vmm::pci::MsiMessage lapic_msi(std::uint8_t apic_id, std::uint8_t vector) {
  // TODO: address 0xFEE0_0000 with the destination APIC ID in bits 19:12; data: the vector.
  (void)apic_id;
  (void)vector;
  return {};
}

std::uint64_t fire_masked_and_read_pba(vmm::pci::PciTestDevice& device, const vmm::pci::MsiMessage& message) {
  // TODO:
  //  1. Message Control (device.msix_capability() + PCI_MSIX_FLAGS): Enable on, Function Mask off. Write it with
  //     device.config().write16, then tell the device with device.config_written (the root would).
  //  2. Entry 1 of the table in BAR2 (PciTestDevice::kMsixBar, kTableOffset): address low and high, data, and
  //     Vector Control = PCI_MSIX_ENTRY_CTRL_MASKBIT, four device.bar_write calls of 4 bytes each.
  //  3. The doorbell: write 1 at kRegDoorbell in BAR0.
  //  4. Read 8 bytes at kPbaOffset in BAR2 and return them as a little-endian qword.
  (void)device;
  (void)message;
  return 0;
}

void unmask_vector(vmm::pci::PciTestDevice& device, std::uint16_t vector) {
  // TODO: clear the mask bit: write 0 to Vector Control of entry `vector` in BAR2.
  (void)device;
  (void)vector;
}

}  // namespace lab04
