// Lab 04, exercise 2 (reference): a device with a 64-bit prefetchable memory BAR. See labs/04-pci/README.md.
#include <linux/pci_regs.h>

#include <algorithm>
#include <cstdlib>

#include "lab04.hpp"

namespace lab04 {

Scratch64Device::Scratch64Device() {
  config_.set_header(kVendorId, kDeviceId, 0xff, 0x00, 0x00, 0x00, PCI_HEADER_TYPE_NORMAL);
  // Two registers, BAR0 (low dword, type bits 0xc: 64-bit, prefetchable) and BAR1 (high dword). ConfigSpace makes
  // bits 31:14 of BAR0 and all of BAR1 writable: ~(0x4000 - 1) over 64 bits.
  const vmm::pci::Bar bar{.index = 0, .kind = vmm::pci::BarKind::Memory64, .prefetchable = true, .size = kBarSize};
  if (auto rc = config_.add_bar(bar); !rc) {
    std::abort();  // a constant declaration that validate() accepts: cannot happen
  }
}

void Scratch64Device::bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) {
  std::lock_guard lock(mutex_);
  if (bar_index != 0 || offset >= kBarSize || data.size() > kBarSize - offset) {
    std::ranges::fill(data, 0xff);
    return;
  }
  std::copy_n(memory_.begin() + static_cast<std::ptrdiff_t>(offset), data.size(), data.begin());
}

void Scratch64Device::bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) {
  std::lock_guard lock(mutex_);
  if (bar_index != 0 || offset >= kBarSize || data.size() > kBarSize - offset) {
    return;
  }
  std::ranges::copy(data, memory_.begin() + static_cast<std::ptrdiff_t>(offset));
}

}  // namespace lab04
