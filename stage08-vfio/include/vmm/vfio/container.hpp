#pragma once
/// @file
/// @brief `Container`: /dev/vfio/vfio, the IOMMU context that VFIO groups join and that holds the DMA mappings.
///
/// The VFIO model has three levels. A *container* (this class) is an IOMMU address space: the IOVAs the devices in
/// it may use and the host memory behind them. A *group* (`Group`) is the smallest set of devices the IOMMU can
/// isolate from the rest of the system; it is the unit of ownership, and it joins a container. A *device* (`Device`)
/// is obtained from a group and gives access to the device's regions and interrupts. The order is fixed: open the
/// container, open the group, attach the group to the container, choose the IOMMU type, then map memory and open
/// devices.

#include <cstdint>
#include <string>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/vfio/caps.hpp"
#include "vmm/vfio/dma_mappings.hpp"
#include "vmm/vfio/guest_ram_dma.hpp"

namespace vmm::vfio {

class Group;

/// @brief The path of the VFIO container device.
inline constexpr const char* kContainerPath = "/dev/vfio/vfio";

/// @brief An open VFIO container: an IOMMU address space and its DMA mappings. Move-only (owns its `Fd`).
class Container final : public DmaMapper {
 public:
  /// @brief Opens the container device and checks VFIO_GET_API_VERSION == VFIO_API_VERSION.
  ///
  /// Without the device the error says "this host has no VFIO: load vfio-pci, see stage08-vfio/README.md". `path` is
  /// a parameter only so that tests can aim at a path that is not there.
  [[nodiscard]] static Result<Container> open(const char* path = kContainerPath);

  /// @brief VFIO_GET_API_VERSION (open() has already checked it equals VFIO_API_VERSION).
  [[nodiscard]] Result<int> api_version() const;
  /// @brief VFIO_CHECK_EXTENSION: whether the kernel supports `extension`, e.g. VFIO_TYPE1v2_IOMMU.
  [[nodiscard]] Result<bool> has_extension(unsigned long extension) const;

  /// @brief VFIO_SET_IOMMU: chooses the IOMMU backend, normally VFIO_TYPE1v2_IOMMU.
  ///
  /// Only possible once a group is attached (Group::set_container): the backend is set up for the groups' IOMMU
  /// domain. Type1v2 rather than type1: v2 refuses to unmap part of a mapping (type1 would silently unmap the whole
  /// of it) and reports unmapped sizes precisely, so the bookkeeping here and the kernel's always agree.
  [[nodiscard]] Result<void> set_iommu(unsigned long type);
  /// @brief VFIO_IOMMU_GET_INFO: page sizes, usable IOVA ranges, DMA mappings left (after set_iommu).
  ///
  /// The kernel's answer has a capability chain of variable length; the first call reports in `argsz` how big a
  /// buffer the whole answer needs, so the call is repeated with a buffer that large.
  [[nodiscard]] Result<IommuInfo> iommu_info() const;

  /// @brief VFIO_IOMMU_MAP_DMA: lets the devices of this container access host memory [host_va, host_va + size) at
  /// [iova, iova + size).
  ///
  /// A device's DMA goes through the IOMMU, which faults on any IOVA not mapped here: memory must be mapped before the
  /// device is told to use it. The kernel pins the pages (they cannot be swapped or moved while a device might be
  /// writing them), so the memory must stay allocated until unmap_dma. Overlaps, misalignment and wrap-around are
  /// refused before the ioctl, with a message naming the conflicting mapping.
  [[nodiscard]] Result<void> map_dma(std::uint64_t iova, std::uint64_t size, const void* host_va, bool readable = true,
                                     bool writable = true) override;
  /// @brief VFIO_IOMMU_UNMAP_DMA of exactly one earlier mapping [iova, iova + size); anything else is refused.
  [[nodiscard]] Result<void> unmap_dma(std::uint64_t iova, std::uint64_t size) override;
  /// @brief The current DMA mappings, by IOVA.
  [[nodiscard]] std::vector<DmaMapping> mappings() const { return mappings_.list(); }

  /// @brief The container's descriptor (for VFIO_GROUP_SET_CONTAINER).
  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }
  /// @brief The IOMMU type set by set_iommu, 0 before.
  [[nodiscard]] unsigned long iommu_type() const noexcept { return iommu_type_; }
  /// @brief How many groups are attached to it.
  [[nodiscard]] unsigned groups_attached() const noexcept { return groups_attached_; }

 private:
  friend class Group;  // counts attachments, so that set_iommu can explain its failure
  explicit Container(Fd fd) : fd_(std::move(fd)) {}

  Fd fd_;
  unsigned long iommu_type_ = 0;
  unsigned groups_attached_ = 0;
  DmaMappings mappings_;
};

}  // namespace vmm::vfio
