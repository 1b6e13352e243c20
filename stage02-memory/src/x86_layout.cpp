#include "vmm/memory/x86_layout.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace vmm::memory::x86 {

Result<Layout> layout_for(std::uint64_t ram_size) {
  const auto page = host_page_size();
  if (ram_size == 0 || ram_size % page != 0) {
    return logic_error(
        "x86::layout_for",
        fmt::format("RAM size {:#x} must be a non-zero multiple of the page size {:#x}", ram_size, page));
  }
  // Above 4 GiB the high range must still end below 2^64; far beyond any real machine, but checked, not assumed.
  const auto low = std::min(ram_size, kPciHoleStart);
  const auto high = ram_size - low;
  if (high > 0 && !GuestAddress(kHighRamStart).checked_add(high)) {
    return logic_error("x86::layout_for", fmt::format("RAM size {:#x} does not fit in the address space", ram_size));
  }
  Layout layout{.ram = {GuestRange{GuestAddress(0), low}},
                .pci_hole = GuestRange{GuestAddress(kPciHoleStart), kPciHoleSize}};
  if (high > 0) {
    layout.ram.push_back(GuestRange{GuestAddress(kHighRamStart), high});
  }
  return layout;
}

Result<GuestMemory> allocate(const Layout& layout, const RegionOptions& options) {
  GuestMemory memory;
  for (const auto& range : layout.ram) {
    auto region = GuestMemoryRegion::create(range.start, range.size, options);
    if (!region) {
      return std::unexpected(std::move(region).error());
    }
    if (auto ok = memory.add_region(std::move(*region)); !ok) {
      return std::unexpected(std::move(ok).error());
    }
  }
  return memory;
}

}  // namespace vmm::memory::x86
