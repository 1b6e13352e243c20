#include "vmm/vfio/caps.hpp"

#include <cstring>
#include <type_traits>

namespace vmm::vfio {

namespace {

// Copies a T out of `bytes` at `offset` (the caller has checked the bounds). memcpy, because nothing guarantees the
// buffer is aligned for T and the kernel's structs must not be type-punned in place.
template <typename T>
T load(std::span<const std::byte> bytes, std::size_t offset) {
  static_assert(std::is_trivially_copyable_v<T>);
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// True when [offset, offset + size) lies within a buffer of `total` bytes (no overflow).
bool fits(std::size_t total, std::size_t offset, std::size_t size) {
  return offset <= total && size <= total - offset;
}

}  // namespace

Result<std::vector<CapHeader>> walk_cap_chain(std::span<const std::byte> info, std::uint32_t first_offset,
                                              std::size_t fixed_size) {
  std::vector<CapHeader> caps;
  std::size_t min_offset = fixed_size;  // the next capability must start at or after this
  std::uint32_t offset = first_offset;
  while (offset != 0) {
    if (offset < min_offset) {
      return logic_error("VFIO capability chain",
                         caps.empty()
                             ? fmt::format("the first capability at offset {} lies inside the {}-byte fixed struct",
                                           offset, fixed_size)
                             : fmt::format("capability {} at offset {} points back to offset {} (a loop)", caps.size(),
                                           caps.back().offset, offset));
    }
    if (!fits(info.size(), offset, sizeof(vfio_info_cap_header))) {
      return logic_error(
          "VFIO capability chain",
          fmt::format("capability header at offset {} lies outside the {}-byte buffer", offset, info.size()));
    }
    const auto header = load<vfio_info_cap_header>(info, offset);
    caps.push_back(CapHeader{header.id, header.version, offset});
    min_offset = std::size_t{offset} + sizeof(vfio_info_cap_header);
    offset = header.next;
  }
  return caps;
}

Result<std::vector<SparseMmapArea>> parse_sparse_mmap(std::span<const std::byte> info, CapHeader cap) {
  constexpr std::size_t kFixed = sizeof(vfio_region_info_cap_sparse_mmap);  // header, nr_areas, reserved
  if (!fits(info.size(), cap.offset, kFixed)) {
    return logic_error("VFIO_REGION_INFO_CAP_SPARSE_MMAP",
                       fmt::format("capability at offset {} runs past the {}-byte buffer", cap.offset, info.size()));
  }
  const auto nr_areas = load<std::uint32_t>(info, cap.offset + offsetof(vfio_region_info_cap_sparse_mmap, nr_areas));
  const std::size_t areas_offset = cap.offset + kFixed;
  // nr_areas is at most 2^32-1 and the area size 16: the product fits in 64 bits.
  const std::size_t areas_size = std::size_t{nr_areas} * sizeof(vfio_region_sparse_mmap_area);
  if (!fits(info.size(), areas_offset, areas_size)) {
    return logic_error(
        "VFIO_REGION_INFO_CAP_SPARSE_MMAP",
        fmt::format("{} areas at offset {} run past the {}-byte buffer", nr_areas, areas_offset, info.size()));
  }
  std::vector<SparseMmapArea> areas;
  areas.reserve(nr_areas);
  for (std::size_t i = 0; i < nr_areas; ++i) {
    const auto area = load<vfio_region_sparse_mmap_area>(info, areas_offset + i * sizeof(vfio_region_sparse_mmap_area));
    areas.push_back(SparseMmapArea{area.offset, area.size});
  }
  return areas;
}

Result<RegionCaps> parse_region_caps(std::span<const std::byte> info) {
  if (info.size() < sizeof(vfio_region_info)) {
    return logic_error("VFIO_DEVICE_GET_REGION_INFO",
                       fmt::format("{}-byte buffer is shorter than vfio_region_info", info.size()));
  }
  const auto region = load<vfio_region_info>(info, 0);
  RegionCaps result;
  if ((region.flags & VFIO_REGION_INFO_FLAG_CAPS) == 0) {
    return result;
  }
  auto chain = walk_cap_chain(info, region.cap_offset, sizeof(vfio_region_info));
  if (!chain) {
    return std::unexpected(std::move(chain.error()));
  }
  for (const CapHeader& cap : *chain) {
    switch (cap.id) {
      case VFIO_REGION_INFO_CAP_SPARSE_MMAP: {
        auto areas = parse_sparse_mmap(info, cap);
        if (!areas) {
          return std::unexpected(std::move(areas.error()));
        }
        result.sparse_mmap = std::move(*areas);
        break;
      }
      case VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
        result.msix_mappable = true;  // a bare header: its presence is the information
        break;
      case VFIO_REGION_INFO_CAP_TYPE: {
        if (!fits(info.size(), cap.offset, sizeof(vfio_region_info_cap_type))) {
          return logic_error(
              "VFIO_REGION_INFO_CAP_TYPE",
              fmt::format("capability at offset {} runs past the {}-byte buffer", cap.offset, info.size()));
        }
        const auto type = load<vfio_region_info_cap_type>(info, cap.offset);
        result.type = RegionType{type.type, type.subtype};
        break;
      }
      default:
        break;  // newer kernels add capabilities; what we do not know we do not need
    }
  }
  return result;
}

Result<std::vector<IovaRange>> parse_iova_ranges(std::span<const std::byte> info, CapHeader cap) {
  constexpr std::size_t kFixed = sizeof(vfio_iommu_type1_info_cap_iova_range);  // header, nr_iovas, reserved
  if (!fits(info.size(), cap.offset, kFixed)) {
    return logic_error("VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE",
                       fmt::format("capability at offset {} runs past the {}-byte buffer", cap.offset, info.size()));
  }
  const auto nr_iovas =
      load<std::uint32_t>(info, cap.offset + offsetof(vfio_iommu_type1_info_cap_iova_range, nr_iovas));
  const std::size_t ranges_offset = cap.offset + kFixed;
  const std::size_t ranges_size = std::size_t{nr_iovas} * sizeof(vfio_iova_range);
  if (!fits(info.size(), ranges_offset, ranges_size)) {
    return logic_error(
        "VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE",
        fmt::format("{} ranges at offset {} run past the {}-byte buffer", nr_iovas, ranges_offset, info.size()));
  }
  std::vector<IovaRange> ranges;
  ranges.reserve(nr_iovas);
  for (std::size_t i = 0; i < nr_iovas; ++i) {
    const auto range = load<vfio_iova_range>(info, ranges_offset + i * sizeof(vfio_iova_range));
    if (range.end < range.start) {
      return logic_error("VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE",
                         fmt::format("range {} ends (0x{:x}) before it starts (0x{:x})", i, range.end, range.start));
    }
    ranges.push_back(IovaRange{range.start, range.end});
  }
  return ranges;
}

Result<IommuInfo> parse_iommu_info(std::span<const std::byte> info) {
  if (info.size() < sizeof(vfio_iommu_type1_info)) {
    return logic_error("VFIO_IOMMU_GET_INFO",
                       fmt::format("{}-byte buffer is shorter than vfio_iommu_type1_info", info.size()));
  }
  const auto fixed = load<vfio_iommu_type1_info>(info, 0);
  IommuInfo result;
  result.flags = fixed.flags;
  if ((fixed.flags & VFIO_IOMMU_INFO_PGSIZES) != 0) {
    result.page_sizes = fixed.iova_pgsizes;
  }
  if ((fixed.flags & VFIO_IOMMU_INFO_CAPS) == 0) {
    return result;
  }
  auto chain = walk_cap_chain(info, fixed.cap_offset, sizeof(vfio_iommu_type1_info));
  if (!chain) {
    return std::unexpected(std::move(chain.error()));
  }
  for (const CapHeader& cap : *chain) {
    if (cap.id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
      auto ranges = parse_iova_ranges(info, cap);
      if (!ranges) {
        return std::unexpected(std::move(ranges.error()));
      }
      result.iova_ranges = std::move(*ranges);
    } else if (cap.id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
      if (!fits(info.size(), cap.offset, sizeof(vfio_iommu_type1_info_dma_avail))) {
        return logic_error(
            "VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL",
            fmt::format("capability at offset {} runs past the {}-byte buffer", cap.offset, info.size()));
      }
      result.dma_available = load<vfio_iommu_type1_info_dma_avail>(info, cap.offset).avail;
    }
  }
  return result;
}

}  // namespace vmm::vfio
