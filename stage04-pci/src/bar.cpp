#include "vmm/pci/bar.hpp"

#include <linux/pci_regs.h>

#include <bit>

#include <fmt/format.h>

namespace vmm::pci {

std::uint16_t Bar::register_offset() const noexcept {
  return static_cast<std::uint16_t>(PCI_BASE_ADDRESS_0 + 4 * index);
}

std::uint32_t Bar::type_bits() const noexcept {
  switch (kind) {
    case BarKind::Io:
      return PCI_BASE_ADDRESS_SPACE_IO;
    case BarKind::Memory32:
      return PCI_BASE_ADDRESS_SPACE_MEMORY | PCI_BASE_ADDRESS_MEM_TYPE_32 |
             (prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0U);
    case BarKind::Memory64:
      return PCI_BASE_ADDRESS_SPACE_MEMORY | PCI_BASE_ADDRESS_MEM_TYPE_64 |
             (prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0U);
  }
  return 0;
}

std::uint64_t Bar::address_mask() const noexcept {
  std::uint64_t mask = ~(size - 1);
  if (kind == BarKind::Io) {
    mask &= static_cast<std::uint64_t>(PCI_BASE_ADDRESS_IO_MASK);
  } else {
    mask &= static_cast<std::uint64_t>(PCI_BASE_ADDRESS_MEM_MASK);
  }
  if (kind != BarKind::Memory64) {
    mask &= 0xffff'ffffULL;
  }
  return mask;
}

Result<void> validate(const Bar& bar) {
  const std::string op = fmt::format("BAR{}", bar.index);
  if (bar.index >= PCI_STD_NUM_BARS) {
    return logic_error(op, fmt::format("a type-0 header has BAR0..BAR{}", PCI_STD_NUM_BARS - 1));
  }
  if (bar.is_64bit() && bar.index + 1 >= PCI_STD_NUM_BARS) {
    return logic_error(op, "a 64-bit BAR needs the next register for its high dword");
  }
  if (!std::has_single_bit(bar.size)) {
    return logic_error(op, fmt::format("size {:#x} is not a power of two", bar.size));
  }
  // Minimums: the type bits occupy the low bits, so smaller sizes cannot be expressed. Maximums: what the register
  // width (or, for I/O, x86's 64 KiB port space) can hold with at least one writable address bit.
  struct Limits {
    std::uint64_t min;
    std::uint64_t max;
  };
  const Limits limits = bar.is_io()      ? Limits{4, 0x1'0000}
                        : bar.is_64bit() ? Limits{16, 1ULL << 63}
                                         : Limits{16, 1ULL << 31};
  if (bar.size < limits.min || bar.size > limits.max) {
    return logic_error(
        op, fmt::format("size {:#x} is outside [{:#x}, {:#x}] for this kind", bar.size, limits.min, limits.max));
  }
  if (bar.is_io() && bar.prefetchable) {
    return logic_error(op, "an I/O BAR cannot be prefetchable");
  }
  return {};
}

}  // namespace vmm::pci
