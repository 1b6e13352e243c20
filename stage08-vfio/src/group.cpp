#include "vmm/vfio/group.hpp"

#include <fcntl.h>

#include <system_error>

#include "vmm/vfio/sysfs.hpp"

namespace vmm::vfio {

namespace fs = std::filesystem;

namespace {

// "0000:00:03.0 (vfio-pci), 0000:00:03.1 (no driver)", or why the list is unavailable.
std::string list_members(const fs::path& sysfs, std::uint32_t group) {
  auto members = group_members(sysfs, group);
  if (!members) {
    return members.error().message();
  }
  std::string out;
  for (const GroupMember& member : *members) {
    out += fmt::format("{}{} ({})", out.empty() ? "" : ", ", member.device, member.driver.value_or("no driver"));
  }
  return out;
}

}  // namespace

Result<Group> Group::open(std::uint32_t number, const fs::path& sysfs) {
  const std::string path = fmt::format("/dev/vfio/{}", number);
  auto fd = Fd::open(path.c_str(), O_RDWR);
  if (!fd) {
    const int err = fd.error().errno_value;
    std::error_code ec;
    if (err == ENOENT && !fs::exists(kContainerPath, ec)) {
      return sys_error(fmt::format("open {}", path), err,
                       "this host has no VFIO: load vfio-pci, see stage08-vfio/README.md");
    }
    if (err == ENOENT) {
      return sys_error(fmt::format("open {}", path), err,
                       fmt::format("group {} has no VFIO device node: none of its devices is bound to vfio-pci "
                                   "(devices: {})",
                                   number, list_members(sysfs, number)));
    }
    if (err == EBUSY) {
      return sys_error(fmt::format("open {}", path), err,
                       fmt::format("group {} is already open (a group has one owner at a time)", number));
    }
    return sys_error(fmt::format("open {}", path), err, fmt::format("group {}", number));
  }
  Group group(std::move(*fd), number, sysfs);
  auto status = group.status();
  if (!status) {
    return std::unexpected(status.error());
  }
  if (!status->viable) {
    auto members = group_members(sysfs, number);
    const std::string culprits = members ? describe_non_vfio_members(*members) : members.error().message();
    return logic_error("VFIO_GROUP_GET_STATUS",
                       fmt::format("group {} is not viable: {}; every device of the group must be bound to vfio-pci "
                                   "or to no driver (devices: {})",
                                   number, culprits.empty() ? "a device is held by a host driver" : culprits,
                                   list_members(sysfs, number)));
  }
  return group;
}

Result<Group> Group::open_for_device(std::string_view bdf, const fs::path& sysfs) {
  auto number = iommu_group_of(sysfs, bdf);
  if (!number) {
    return std::unexpected(number.error());
  }
  const auto driver = pci_driver(sysfs, bdf);
  if (!driver) {
    return logic_error("VFIO group", fmt::format("{} (group {}) is not bound to any driver, not vfio-pci: {}", bdf,
                                                 *number, bind_hint(bdf)));
  }
  if (*driver != "vfio-pci") {
    return logic_error("VFIO group", fmt::format("{} (group {}) is bound to {}, not vfio-pci: {}", bdf, *number,
                                                 *driver, bind_hint(bdf)));
  }
  return open(*number, sysfs);
}

Result<GroupStatus> Group::status() const {
  vfio_group_status status{};
  status.argsz = sizeof(status);
  if (auto rc = VMM_IOCTL(fd_, VFIO_GROUP_GET_STATUS, &status); !rc) {
    return std::unexpected(rc.error().with_context(name()));
  }
  return GroupStatus{(status.flags & VFIO_GROUP_FLAGS_VIABLE) != 0,
                     (status.flags & VFIO_GROUP_FLAGS_CONTAINER_SET) != 0};
}

Result<void> Group::set_container(Container& container) {
  const int container_fd = container.fd().get();
  if (auto rc = VMM_IOCTL(fd_, VFIO_GROUP_SET_CONTAINER, &container_fd); !rc) {
    return std::unexpected(rc.error().with_context(name()));
  }
  ++container.groups_attached_;
  return {};
}

Result<Device> Group::device(std::string_view bdf) const {
  const std::string name_z(bdf);
  auto rc = VMM_IOCTL(fd_, VFIO_GROUP_GET_DEVICE_FD, name_z.c_str());
  if (!rc) {
    const auto driver = pci_driver(sysfs_, bdf);
    return std::unexpected(rc.error().with_context(fmt::format(
        "{}, {}: {}", name(), bdf,
        driver ? fmt::format("bound to {}; is it in this group, and is the container's IOMMU type set?", *driver)
               : std::string("no such device bound to vfio-pci"))));
  }
  return Device(Fd(*rc), name_z);
}

}  // namespace vmm::vfio
