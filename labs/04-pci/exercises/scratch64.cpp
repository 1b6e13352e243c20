// Lab 04, exercise 2: a device with a 64-bit prefetchable memory BAR. See labs/04-pci/README.md.
#include <linux/pci_regs.h>

#include <algorithm>

#include "lab04.hpp"

namespace lab04 {

Scratch64Device::Scratch64Device() {
  config_.set_header(kVendorId, kDeviceId, 0xff, 0x00, 0x00, 0x00, PCI_HEADER_TYPE_NORMAL);
  // TODO: declare BAR0: 64-bit, prefetchable, kBarSize bytes (vmm::pci::Bar and ConfigSpace::add_bar). Which BAR
  // register holds the high dword?
}

void Scratch64Device::bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) {
  // TODO: copy from memory_ (under mutex_); all-ones outside BAR0's 16 KiB.
  (void)bar_index;
  (void)offset;
  std::ranges::fill(data, 0xff);
}

void Scratch64Device::bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) {
  // TODO: copy into memory_ (under mutex_); drop writes outside BAR0's 16 KiB.
  (void)bar_index;
  (void)offset;
  (void)data;
}

}  // namespace lab04
