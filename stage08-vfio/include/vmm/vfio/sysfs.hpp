#pragma once
/// @file
/// @brief What sysfs says about a PCI device and its IOMMU group: the facts the VFIO wrappers put into their error
/// messages (which group a device is in, which driver holds it, which devices make a group not viable).
///
/// Every function takes the sysfs root ("/sys" normally) so that the tests can point it at a fake tree.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/error.hpp"

namespace vmm::vfio {

/// @brief The driver bound to PCI device `bdf` (the last component of .../devices/BDF/driver), or nothing if no
/// driver holds it.
[[nodiscard]] std::optional<std::string> pci_driver(const std::filesystem::path& sysfs, std::string_view bdf);

/// @brief The IOMMU group number of PCI device `bdf` (its .../devices/BDF/iommu_group symlink points at
/// /sys/kernel/iommu_groups/N). Errors: no such device, or no IOMMU group (no IOMMU enabled).
[[nodiscard]] Result<std::uint32_t> iommu_group_of(const std::filesystem::path& sysfs, std::string_view bdf);

/// @brief One device of an IOMMU group and the driver holding it.
struct GroupMember {
  std::string device;                 ///< Its name in sysfs, for PCI the BDF ("0000:00:03.0").
  std::optional<std::string> driver;  ///< Its driver, or nothing if unbound.
};

/// @brief The devices of IOMMU group `group` (/sys/kernel/iommu_groups/GROUP/devices), sorted by name.
[[nodiscard]] Result<std::vector<GroupMember>> group_members(const std::filesystem::path& sysfs, std::uint32_t group);

/// @brief Why a group is not viable, for an error message: the members held by a driver other than vfio-pci, e.g.
/// "0000:00:1f.2 is bound to ahci, 0000:00:1f.3 is bound to i801_smbus". A group is viable only when every member
/// is bound to vfio-pci or to no driver (the IOMMU isolates a group, not a device, so one device the host still
/// drives would let the user's device DMA into that driver's memory).
[[nodiscard]] std::string describe_non_vfio_members(const std::vector<GroupMember>& members);

/// @brief The commands that hand PCI device `bdf` to vfio-pci, for error messages.
[[nodiscard]] std::string bind_hint(std::string_view bdf);

}  // namespace vmm::vfio
