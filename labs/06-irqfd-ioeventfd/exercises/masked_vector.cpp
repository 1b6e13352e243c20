// Lab 06, exercise 2: a masked vector, its pending bit and its GSI route. See labs/06-irqfd-ioeventfd/README.md.
#include <fmt/format.h>

#include "lab06.hpp"

namespace lab06 {

void mask_vector(vmm::testing::VirtioPciDriver& driver, std::uint16_t vector) {
  // TODO: set the mask bit (PCI_MSIX_ENTRY_CTRL_MASKBIT) of table entry `vector`'s Vector Control dword, a 4-byte
  // write in the MSI-X BAR (VirtioPciDevice::kMsixBar) at kMsixTableOffset + PCI_MSIX_ENTRY_SIZE * vector +
  // PCI_MSIX_ENTRY_VECTOR_CTRL. Then delete the print.
  fmt::print("mask_vector: not implemented yet (lab 06, exercise 2)\n");
  (void)driver;
  (void)vector;
}

void unmask_vector(vmm::testing::VirtioPciDriver& driver, std::uint16_t vector) {
  // TODO: the same dword with the mask bit clear. Then delete the print.
  fmt::print("unmask_vector: not implemented yet (lab 06, exercise 2)\n");
  (void)driver;
  (void)vector;
}

bool pending(vmm::testing::VirtioPciDriver& driver, std::uint16_t vector) {
  // TODO: read the Pending Bit Array as a guest does, through the MSI-X BAR at kMsixPbaOffset: one bit per vector,
  // in little-endian qwords (vector v is bit v % 64 of qword v / 64). Then delete the print.
  fmt::print("pending: not implemented yet (lab 06, exercise 2)\n");
  (void)driver;
  (void)vector;
  return false;
}

std::optional<vmm::pci::MsiMessage> routed_message(std::span<const kvm_irq_routing_entry> table, std::uint32_t gsi) {
  // TODO: find the entry for `gsi` that is an MSI route (type KVM_IRQ_ROUTING_MSI) and rebuild its message from
  // u.msi: address_lo, address_hi, data. Nothing if `gsi` has no MSI route (irqchip routes don't count). Then delete
  // the print.
  fmt::print("routed_message: not implemented yet (lab 06, exercise 2)\n");
  (void)table;
  (void)gsi;
  return std::nullopt;
}

}  // namespace lab06
