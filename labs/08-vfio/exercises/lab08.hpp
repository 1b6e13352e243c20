#pragma once
/// @file
/// @brief Lab 08's exercise interface: the functions you write (exercises/) and the reference (solutions/) share it.

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/pci/msi.hpp"
#include "vmm/pci/msix.hpp"
#include "vmm/vfio/device.hpp"
#include "vmm/vfio/device_memory.hpp"
#include "vmm/vfio/dma_mappings.hpp"
#include "vmm/vfio/msi.hpp"

namespace lab08 {

// --- Exercise 1 ------------------------------------------------------------------------------------------------

/// @brief The IOMMU's page size on x86: every IOVA, size and host address handed to VFIO_IOMMU_MAP_DMA is a
///        multiple of it.
inline constexpr std::uint64_t kIommuPageSize = 4096;

/// @brief One region of guest RAM, as the VMM's memory map has it (what `GuestMemoryRegion` knows).
struct RamRegion {
  std::uint64_t gpa = 0;      ///< Guest-physical address of its first byte.
  std::uint64_t size = 0;     ///< Length in bytes.
  std::uint64_t host_va = 0;  ///< Where the VMM mapped it (the memory KVM's slot and the IOMMU must both point at).
  /// @brief Member-wise equality.
  friend bool operator==(const RamRegion&, const RamRegion&) = default;
};

/// @brief What one step of a DMA plan does.
enum class DmaOpKind : std::uint8_t {
  Unmap,  ///< VFIO_IOMMU_UNMAP_DMA of exactly `mapping.iova`, `mapping.size`.
  Map,    ///< VFIO_IOMMU_MAP_DMA of `mapping`.
};

/// @brief One call to make on a `vmm::vfio::DmaMapper`.
struct DmaOp {
  DmaOpKind kind = DmaOpKind::Map;  ///< Map or unmap.
  vmm::vfio::DmaMapping mapping;    ///< For an unmap, the mapping that goes (as it was mapped).
  /// @brief Member-wise equality.
  friend bool operator==(const DmaOp&, const DmaOp&) = default;
};

/// @brief Exercise 1: the calls that make the IOMMU's mappings (`mapped`, what earlier plans mapped) equal to guest
///        RAM (`memory_map`), with IOVA = guest-physical address.
///
/// Every region of `memory_map` is wanted as one mapping {iova = gpa, size, host_va, readable, writable}. A mapping
/// in `mapped` that is exactly wanted stays (no call); every other one is unmapped, and every wanted mapping that is
/// not in `mapped` is mapped. All the unmaps come first, then the maps, each group by increasing IOVA.
///
/// Refused (an error whose message names the region's `gpa` in hex, "0x..."), before any call is planned, when a
/// region of `memory_map` is empty, has a gpa, size or host_va that is not a multiple of `kIommuPageSize`, runs past
/// the end of the 64-bit address space, or overlaps another region in guest-physical space. `memory_map` may come in
/// any order; `mapped` is what earlier plans left (consistent: no overlaps).
[[nodiscard]] vmm::Result<std::vector<DmaOp>> dma_plan(std::span<const RamRegion> memory_map,
                                                       std::span<const vmm::vfio::DmaMapping> mapped);

// --- Exercise 2 ------------------------------------------------------------------------------------------------

/// @brief Exercise 2: the parts of BAR `bar` (its index is `bar.index`) that may become KVM memory slots, so that the
///        guest's accesses there go straight to the device, by increasing offset.
///
/// Start from what VFIO lets this process mmap: nothing unless `bar.mappable()`; the areas of `bar.caps.sparse_mmap`
/// if it has them (clipped to the BAR); else the whole BAR. Keep only whole pages of `page_size` inside those
/// areas, and drop every page that overlaps the MSI-X table or the PBA when `msix` (the device's MSI-X capability)
/// puts them in this BAR: those pages must trap to the VMM. Merge adjacent results. An empty BAR (size 0) has none.
/// Refused when `page_size` is not a power of two.
[[nodiscard]] vmm::Result<std::vector<vmm::vfio::BarArea>> mappable_areas(
    const vmm::vfio::RegionInfo& bar, const std::optional<vmm::pci::MsixCapability>& msix, std::uint64_t page_size);

// --- Exercise 3 ------------------------------------------------------------------------------------------------

/// @brief Exercise 3a: the message plain-MSI vector `vector` sends, as the guest programmed the capability (`state`),
///        or nothing when that vector cannot fire (MSI disabled, or `vector` not below the vectors the guest enabled).
///
/// With several vectors enabled (a power of two, 2^k), the device sends the vector number in the low k bits of the
/// data: those bits of the guest's data are replaced, the rest kept. The address is the same for every vector.
[[nodiscard]] std::optional<vmm::pci::MsiMessage> msi_message(const vmm::vfio::MsiState& state, std::uint16_t vector);

/// @brief Exercise 3b: the eventfds to hand VFIO (VFIO_DEVICE_SET_IRQS on VFIO_PCI_MSI_IRQ_INDEX, from vector 0)
///        when the guest has enabled MSI as `state` says: one per vector the guest enabled that `routes` has (the
///        host may give the device fewer than the guest's Multiple Message Enable asks for), each that vector's
///        irqfd, in vector order. Empty when MSI is disabled.
[[nodiscard]] std::vector<int> msi_eventfds(const vmm::vfio::MsiState& state, const vmm::vfio::MsiRoutes& routes);

/// @brief Exercise 3c: the eventfd VFIO should signal for MSI-X vector `vector` now: the vector's irqfd (from
///        `routes`) while a write to it interrupts the guest, or the VMM's relay eventfd for that vector
///        (`relays[vector]`) while it would not. -1 when `vector` is not one of the device's vectors.
[[nodiscard]] int msix_eventfd_for(const vmm::irq::MsixRoutes& routes, std::span<const vmm::event::EventFd> relays,
                                   std::uint16_t vector);

}  // namespace lab08
