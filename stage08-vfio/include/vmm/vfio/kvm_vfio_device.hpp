#pragma once
/// @file
/// @brief `KvmVfioDevice`: KVM's VFIO pseudo-device (KVM_DEV_TYPE_VFIO), which tells KVM which VFIO groups the VM
/// uses.

#include <cstdint>
#include <set>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm::vfio {

/// @brief The KVM-VFIO device of one VM (KVM_CREATE_DEVICE with KVM_DEV_TYPE_VFIO). Move-only (owns its `Fd`).
///
/// A VM with an assigned device must tell KVM so, through this pseudo-device: KVM then knows the guest can do
/// non-coherent DMA (on hosts where the IOMMU does not snoop caches, KVM must honour the guest's WBINVD and memory
/// types instead of forcing write-back), and the kernel can link the VFIO group to the VM (what vfio-pci's mediated
/// devices and some platform features need). Passthrough works without it on most x86 hosts, which is why it is
/// easy to forget: QEMU, Cloud Hypervisor and Firecracker-style VMMs all create it.
///
/// Each group is added with KVM_SET_DEVICE_ATTR (group KVM_DEV_VFIO_GROUP, attribute KVM_DEV_VFIO_GROUP_ADD, the
/// group's descriptor as the value) and removed with KVM_DEV_VFIO_GROUP_DEL. Errors name the ioctl, the attribute
/// and the group.
class KvmVfioDevice {
 public:
  /// @brief KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO) on `vm` (which the device must not outlive).
  [[nodiscard]] static Result<KvmVfioDevice> create(const kvm::Vm& vm);
  /// @brief Whether `vm`'s KVM supports the VFIO pseudo-device (KVM_CREATE_DEVICE with KVM_CREATE_DEVICE_TEST).
  [[nodiscard]] static Result<bool> supported(const kvm::Vm& vm);

  /// @brief KVM_DEV_VFIO_GROUP_ADD for the group open on `group_fd` (named `group_number` in errors and `groups()`).
  [[nodiscard]] Result<void> add_group(const Fd& group_fd, std::uint32_t group_number);
  /// @brief KVM_DEV_VFIO_GROUP_DEL for it.
  [[nodiscard]] Result<void> remove_group(const Fd& group_fd, std::uint32_t group_number);

  /// @brief The groups added and not removed.
  [[nodiscard]] const std::set<std::uint32_t>& groups() const noexcept { return groups_; }
  /// @brief The pseudo-device's descriptor.
  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }

 private:
  explicit KvmVfioDevice(Fd fd) : fd_(std::move(fd)) {}

  Fd fd_;
  std::set<std::uint32_t> groups_;
};

}  // namespace vmm::vfio
