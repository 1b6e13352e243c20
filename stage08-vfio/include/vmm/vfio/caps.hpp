#pragma once
/// @file
/// @brief Parsers for the capability chains VFIO appends to its info structs (region info, IOMMU info), as pure
/// functions over a byte span so that they can be tested on hand-built buffers.
///
/// Several VFIO ioctls answer with a fixed struct followed by a chain of capabilities: the struct's `cap_offset`
/// gives the offset (from the start of the struct) of a `vfio_info_cap_header`, whose `next` gives the following one,
/// 0 ending the chain. The data comes from the kernel, but it is still validated: a header outside the buffer, a
/// capability body that runs past it, or a chain that does not move forward (a loop) is refused with an error rather
/// than read out of bounds or walked forever.

#include <linux/vfio.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vmm/error.hpp"

namespace vmm::vfio {

/// @brief One capability of a chain: its id and version, and where its header starts in the buffer.
struct CapHeader {
  std::uint16_t id = 0;       ///< e.g. VFIO_REGION_INFO_CAP_SPARSE_MMAP (ids are per info struct, not global).
  std::uint16_t version = 0;  ///< The capability's layout version.
  std::uint32_t offset = 0;   ///< Offset of its `vfio_info_cap_header` from the start of the info struct.
};

/// @brief Walks a capability chain starting at `first_offset` (0: no capabilities) in `info`, the whole info struct
/// as the kernel filled it. `fixed_size` is the size of the fixed struct: a capability may not start inside it.
///
/// Each `next` must be beyond the current capability (the kernel appends them in order), which refuses loops;
/// every header must lie entirely within `info`.
[[nodiscard]] Result<std::vector<CapHeader>> walk_cap_chain(std::span<const std::byte> info, std::uint32_t first_offset,
                                                            std::size_t fixed_size);

/// @brief One mmap-able area of a region (VFIO_REGION_INFO_CAP_SPARSE_MMAP), relative to the region's start.
struct SparseMmapArea {
  std::uint64_t offset = 0;  ///< Start of the area within the region.
  std::uint64_t size = 0;    ///< Its length in bytes.
  /// @brief Member-wise equality (for tests and lookups).
  friend bool operator==(const SparseMmapArea&, const SparseMmapArea&) = default;
};

/// @brief The body of a VFIO_REGION_INFO_CAP_SPARSE_MMAP capability at `cap` (its `nr_areas` areas must fit in
/// `info`).
[[nodiscard]] Result<std::vector<SparseMmapArea>> parse_sparse_mmap(std::span<const std::byte> info, CapHeader cap);

/// @brief A region's type (VFIO_REGION_INFO_CAP_TYPE): device-specific regions beyond the standard PCI ones.
struct RegionType {
  std::uint32_t type = 0;     ///< e.g. VFIO_REGION_TYPE_PCI_VENDOR_TYPE | vendor id.
  std::uint32_t subtype = 0;  ///< Meaning depends on `type`.
  /// @brief Member-wise equality (for tests and lookups).
  friend bool operator==(const RegionType&, const RegionType&) = default;
};

/// @brief What the capability chain of a `vfio_region_info` says.
struct RegionCaps {
  /// @brief Set when the region is only partly mmap-able: the areas that are (possibly none).
  std::optional<std::vector<SparseMmapArea>> sparse_mmap;
  /// @brief VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: the MSI-X table inside this BAR may be mmap-ed too.
  bool msix_mappable = false;
  /// @brief VFIO_REGION_INFO_CAP_TYPE, if present.
  std::optional<RegionType> type;
};

/// @brief Parses the capabilities of a `vfio_region_info` buffer (the fixed struct plus whatever followed it, as
/// the kernel filled it). No VFIO_REGION_INFO_FLAG_CAPS flag: no capabilities. Unknown ids are ignored.
[[nodiscard]] Result<RegionCaps> parse_region_caps(std::span<const std::byte> info);

/// @brief One usable IOVA range [start, last] (VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE; the kernel's `end` is
/// inclusive).
struct IovaRange {
  std::uint64_t start = 0;  ///< First usable IOVA.
  std::uint64_t last = 0;   ///< Last usable IOVA (inclusive).
  /// @brief Member-wise equality (for tests and lookups).
  friend bool operator==(const IovaRange&, const IovaRange&) = default;
};

/// @brief The body of a VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE capability at `cap`.
[[nodiscard]] Result<std::vector<IovaRange>> parse_iova_ranges(std::span<const std::byte> info, CapHeader cap);

/// @brief What VFIO_IOMMU_GET_INFO says about the container's IOMMU.
struct IommuInfo {
  std::uint32_t flags = 0;       ///< VFIO_IOMMU_INFO_PGSIZES, VFIO_IOMMU_INFO_CAPS.
  std::uint64_t page_sizes = 0;  ///< Bitmap of the IOMMU page sizes (bit 12 set: 4 KiB pages); 0 if not reported.
  /// @brief The IOVA ranges a mapping may use, if the kernel reported them (anything outside is reserved, e.g. the
  /// x86 MSI window at 0xfee00000).
  std::optional<std::vector<IovaRange>> iova_ranges;
  /// @brief VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: how many more DMA mappings the container allows, if reported.
  std::optional<std::uint32_t> dma_available;

  /// @brief The smallest page size the IOMMU supports (mappings must be aligned to it); 0 if not reported.
  [[nodiscard]] std::uint64_t min_page_size() const noexcept { return page_sizes & (~page_sizes + 1); }
};

/// @brief Parses a whole `vfio_iommu_type1_info` buffer: fixed fields, then the capability chain if
/// VFIO_IOMMU_INFO_CAPS is set. Unknown ids are ignored.
[[nodiscard]] Result<IommuInfo> parse_iommu_info(std::span<const std::byte> info);

}  // namespace vmm::vfio
