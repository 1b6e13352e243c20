#include "vmm/vfio/sysfs.hpp"

#include <algorithm>
#include <charconv>
#include <system_error>

namespace vmm::vfio {

namespace fs = std::filesystem;

std::optional<std::string> pci_driver(const fs::path& sysfs, std::string_view bdf) {
  std::error_code ec;
  const fs::path target = fs::read_symlink(sysfs / "bus/pci/devices" / bdf / "driver", ec);
  if (ec) {
    return std::nullopt;
  }
  return target.filename().string();
}

Result<std::uint32_t> iommu_group_of(const fs::path& sysfs, std::string_view bdf) {
  const fs::path device = sysfs / "bus/pci/devices" / bdf;
  std::error_code ec;
  if (!fs::exists(device, ec)) {
    return logic_error("IOMMU group", fmt::format("no PCI device {} ({} does not exist)", bdf, device.string()));
  }
  const fs::path target = fs::read_symlink(device / "iommu_group", ec);
  if (ec) {
    return sys_error(
        "IOMMU group", ec.value(),
        fmt::format("{} has no iommu_group link: is an IOMMU enabled (intel_iommu=on, amd_iommu=on)?", bdf));
  }
  const std::string name = target.filename().string();
  std::uint32_t group = 0;
  const auto [end, err] = std::from_chars(name.data(), name.data() + name.size(), group);
  if (err != std::errc{} || end != name.data() + name.size()) {
    return logic_error("IOMMU group",
                       fmt::format("{}'s iommu_group link points at '{}', not a group number", bdf, target.string()));
  }
  return group;
}

Result<std::vector<GroupMember>> group_members(const fs::path& sysfs, std::uint32_t group) {
  const fs::path dir = sysfs / "kernel/iommu_groups" / std::to_string(group) / "devices";
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    return sys_error("IOMMU group", ec.value(), fmt::format("group {}: cannot list {}", group, dir.string()));
  }
  std::vector<GroupMember> members;
  for (const auto& entry : it) {
    GroupMember member{entry.path().filename().string(), std::nullopt};
    // Each entry is a link to the device's directory, which has the driver link.
    const fs::path driver = fs::read_symlink(entry.path() / "driver", ec);
    if (!ec) {
      member.driver = driver.filename().string();
    }
    members.push_back(std::move(member));
  }
  std::ranges::sort(members, {}, &GroupMember::device);
  return members;
}

std::string describe_non_vfio_members(const std::vector<GroupMember>& members) {
  std::string out;
  for (const GroupMember& member : members) {
    if (!member.driver || *member.driver == "vfio-pci") {
      continue;
    }
    out += fmt::format("{}{} is bound to {}", out.empty() ? "" : ", ", member.device, *member.driver);
  }
  return out;
}

std::string bind_hint(std::string_view bdf) {
  return fmt::format(
      "echo vfio-pci > /sys/bus/pci/devices/{0}/driver_override; "
      "echo {0} > /sys/bus/pci/devices/{0}/driver/unbind; echo {0} > /sys/bus/pci/drivers_probe",
      bdf);
}

}  // namespace vmm::vfio
