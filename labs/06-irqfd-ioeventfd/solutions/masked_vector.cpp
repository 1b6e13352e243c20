// Lab 06, exercise 2: a masked vector, its pending bit and its GSI route (reference). See
// labs/06-irqfd-ioeventfd/README.md.
#include <linux/pci_regs.h>

#include "lab06.hpp"

namespace lab06 {

namespace {

using vmm::virtio::VirtioPciDevice;

// The Vector Control dword of table entry `vector`, as an offset into the MSI-X BAR.
std::uint64_t vector_control(std::uint16_t vector) {
  return VirtioPciDevice::kMsixTableOffset + std::uint64_t{PCI_MSIX_ENTRY_SIZE} * vector + PCI_MSIX_ENTRY_VECTOR_CTRL;
}

}  // namespace

void mask_vector(vmm::testing::VirtioPciDriver& driver, std::uint16_t vector) {
  // Bits 31:1 are reserved (read as 0): a driver writes the whole dword. The table's observer (MsixRoutes) removes
  // the vector's GSI route before this write returns.
  driver.write(vector_control(vector), PCI_MSIX_ENTRY_CTRL_MASKBIT, 4, VirtioPciDevice::kMsixBar);
}

void unmask_vector(vmm::testing::VirtioPciDriver& driver, std::uint16_t vector) {
  // The observer installs the route again first, then the table delivers the pending message through it.
  driver.write(vector_control(vector), 0, 4, VirtioPciDevice::kMsixBar);
}

bool pending(vmm::testing::VirtioPciDriver& driver, std::uint16_t vector) {
  const std::uint64_t qword =
      driver.read(VirtioPciDevice::kMsixPbaOffset + 8ull * (vector / 64), 8, VirtioPciDevice::kMsixBar);
  return ((qword >> (vector % 64)) & 1) != 0;
}

std::optional<vmm::pci::MsiMessage> routed_message(std::span<const kvm_irq_routing_entry> table, std::uint32_t gsi) {
  for (const auto& entry : table) {
    // GSIs below 24 carry irqchip routes (PIC and IOAPIC pins), two for most of them: skip anything not an MSI.
    if (entry.gsi == gsi && entry.type == KVM_IRQ_ROUTING_MSI) {
      return vmm::pci::MsiMessage{.address = (std::uint64_t{entry.u.msi.address_hi} << 32) | entry.u.msi.address_lo,
                                  .data = entry.u.msi.data};
    }
  }
  return std::nullopt;
}

}  // namespace lab06
