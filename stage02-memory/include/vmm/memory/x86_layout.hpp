#pragma once
/// @file
/// @brief Where RAM goes in an x86 guest's physical address space, around the 32-bit PCI hole.

#include <cstdint>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/memory/guest_address.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/memory/region.hpp"

namespace vmm::memory::x86 {

/// @brief Start of the 32-bit PCI hole: guest RAM stops here so 32-bit devices have addresses for their BARs, the
///        IOAPIC (0xfec00000), the local APIC (0xfee00000) and the firmware just below 4 GiB. 3 GiB is what QEMU's
///        q35 machine and Cloud Hypervisor use.
inline constexpr std::uint64_t kPciHoleStart = 0xC000'0000;
/// @brief End of the hole: 4 GiB, the limit of 32-bit addressing.
inline constexpr std::uint64_t kPciHoleEnd = 0x1'0000'0000;
/// @brief The hole's size: 1 GiB.
inline constexpr std::uint64_t kPciHoleSize = kPciHoleEnd - kPciHoleStart;
/// @brief Where RAM that did not fit below the hole resumes.
inline constexpr std::uint64_t kHighRamStart = kPciHoleEnd;

/// @brief The guest-physical map for a given amount of RAM.
struct Layout {
  std::vector<GuestRange> ram;  ///< Low RAM from 0, then (if RAM exceeds the space below the hole) high RAM at 4 GiB.
  GuestRange pci_hole;          ///< Not RAM: later stages allocate 32-bit BARs from it.
};

/// @brief The layout for `ram_size` bytes of RAM (non-zero, a multiple of the page size).
[[nodiscard]] Result<Layout> layout_for(std::uint64_t ram_size);

/// @brief Maps one `GuestMemoryRegion` per RAM range of `layout`, all with `options`.
[[nodiscard]] Result<GuestMemory> allocate(const Layout& layout, const RegionOptions& options = {});

}  // namespace vmm::memory::x86
