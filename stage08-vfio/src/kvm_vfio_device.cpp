#include "vmm/vfio/kvm_vfio_device.hpp"

#include <linux/kvm.h>

#include <fmt/format.h>

namespace vmm::vfio {

Result<KvmVfioDevice> KvmVfioDevice::create(const kvm::Vm& vm) {
  kvm_create_device request{};
  request.type = KVM_DEV_TYPE_VFIO;
  if (auto rc = VMM_IOCTL(vm.fd(), KVM_CREATE_DEVICE, &request); !rc) {
    return std::unexpected(rc.error().with_context("KVM_DEV_TYPE_VFIO (is the kernel built with CONFIG_KVM_VFIO?)"));
  }
  return KvmVfioDevice(Fd(static_cast<int>(request.fd)));
}

Result<bool> KvmVfioDevice::supported(const kvm::Vm& vm) {
  kvm_create_device request{};
  request.type = KVM_DEV_TYPE_VFIO;
  request.flags = KVM_CREATE_DEVICE_TEST;
  auto rc = VMM_IOCTL(vm.fd(), KVM_CREATE_DEVICE, &request);
  if (!rc) {
    if (rc.error().errno_value == ENODEV) {
      return false;
    }
    return std::unexpected(rc.error().with_context("KVM_DEV_TYPE_VFIO (test)"));
  }
  return true;
}

namespace {

Result<void> group_attr(const Fd& device, const Fd& group_fd, std::uint32_t group_number, std::uint64_t attribute,
                        const char* attribute_name) {
  // The attribute's value is a pointer to an int32 holding the group's descriptor (virt/kvm/vfio.c reads 4 bytes).
  std::int32_t fd = group_fd.get();
  kvm_device_attr attr{};
  attr.group = KVM_DEV_VFIO_GROUP;
  attr.attr = attribute;
  attr.addr = reinterpret_cast<std::uint64_t>(&fd);
  if (auto rc = VMM_IOCTL(device, KVM_SET_DEVICE_ATTR, &attr); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("{}, group {}", attribute_name, group_number)));
  }
  return {};
}

}  // namespace

Result<void> KvmVfioDevice::add_group(const Fd& group_fd, std::uint32_t group_number) {
  if (auto rc = group_attr(fd_, group_fd, group_number, KVM_DEV_VFIO_GROUP_ADD, "KVM_DEV_VFIO_GROUP_ADD"); !rc) {
    return rc;
  }
  groups_.insert(group_number);
  return {};
}

Result<void> KvmVfioDevice::remove_group(const Fd& group_fd, std::uint32_t group_number) {
  if (auto rc = group_attr(fd_, group_fd, group_number, KVM_DEV_VFIO_GROUP_DEL, "KVM_DEV_VFIO_GROUP_DEL"); !rc) {
    return rc;
  }
  groups_.erase(group_number);
  return {};
}

}  // namespace vmm::vfio
