#pragma once
/// @file
/// @brief `Group`: /dev/vfio/N, one IOMMU group, the unit of device ownership in VFIO.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/vfio/container.hpp"
#include "vmm/vfio/device.hpp"

namespace vmm::vfio {

/// @brief What VFIO_GROUP_GET_STATUS says.
struct GroupStatus {
  bool viable = false;         ///< Every device of the group is bound to vfio-pci (or to no driver).
  bool container_set = false;  ///< The group is attached to a container.
};

/// @brief An open IOMMU group. Move-only (owns its `Fd`).
///
/// The IOMMU cannot tell apart the devices of one group (they may share a requester id or talk to each other without
/// going through it), so VFIO hands out whole groups: a group is usable ("viable") only when no host driver holds
/// any of its devices. Errors name the group ("group 12") and, when it is not viable, the devices that make it so.
class Group {
 public:
  /// @brief Opens /dev/vfio/NUMBER and checks that the group is viable. `sysfs` is read to explain failures.
  [[nodiscard]] static Result<Group> open(std::uint32_t number, const std::filesystem::path& sysfs = "/sys");
  /// @brief Opens the group of PCI device `bdf` ("0000:00:03.0"), found through its iommu_group link in sysfs;
  /// refuses a device bound to a driver other than vfio-pci, saying which and how to rebind it.
  [[nodiscard]] static Result<Group> open_for_device(std::string_view bdf, const std::filesystem::path& sysfs = "/sys");

  /// @brief VFIO_GROUP_GET_STATUS.
  [[nodiscard]] Result<GroupStatus> status() const;
  /// @brief VFIO_GROUP_SET_CONTAINER: attaches this group to `container` (which must outlive it).
  [[nodiscard]] Result<void> set_container(Container& container);
  /// @brief VFIO_GROUP_GET_DEVICE_FD for device `bdf`; needs the container's IOMMU type set.
  [[nodiscard]] Result<Device> device(std::string_view bdf) const;

  /// @brief The group number.
  [[nodiscard]] std::uint32_t number() const noexcept { return number_; }
  /// @brief "group N", as errors name it.
  [[nodiscard]] std::string name() const { return fmt::format("group {}", number_); }
  /// @brief The group's descriptor.
  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }

 private:
  Group(Fd fd, std::uint32_t number, std::filesystem::path sysfs)
      : fd_(std::move(fd)), number_(number), sysfs_(std::move(sysfs)) {}

  Fd fd_;
  std::uint32_t number_;
  std::filesystem::path sysfs_;
};

}  // namespace vmm::vfio
