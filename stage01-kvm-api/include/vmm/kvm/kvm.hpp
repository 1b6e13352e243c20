#pragma once
/// @file
/// @brief `Kvm`: the system file descriptor, /dev/kvm.

#include <linux/kvm.h>

#include <cstddef>
#include <string>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm::kvm {

/// @brief The first of KVM's three descriptors: /dev/kvm answers questions about the host and creates VMs.
///
/// KVM's API is three levels of file descriptors: system (this), VM (`Vm`), vCPU (`Vcpu`). Each ioctl belongs to
/// one level; see Documentation/virt/kvm/api.rst in the kernel.
class Kvm {
 public:
  /// @brief Opens the device and checks the API version is 12, the only stable version there has ever been.
  [[nodiscard]] static Result<Kvm> open(const char* path = "/dev/kvm");

  /// @brief KVM_GET_API_VERSION.
  [[nodiscard]] Result<int> api_version() const;
  /// @brief KVM_CHECK_EXTENSION: 0 if the capability is missing, else a positive (sometimes meaningful) value.
  [[nodiscard]] Result<int> check_extension(int capability) const;
  /// @brief Fails, naming the capability ("KVM_CAP_USER_MEMORY"), when it is missing.
  [[nodiscard]] Result<void> require_extension(int capability) const;
  /// @brief KVM_GET_VCPU_MMAP_SIZE: how much of a vCPU fd to mmap (the `kvm_run` page plus the PIO data page, ...).
  [[nodiscard]] Result<std::size_t> vcpu_mmap_size() const;
  /// @brief KVM_GET_SUPPORTED_CPUID: every CPUID leaf KVM can present to a guest.
  [[nodiscard]] Result<std::vector<kvm_cpuid_entry2>> supported_cpuid() const;
  /// @brief KVM_CREATE_VM (default machine type).
  [[nodiscard]] Result<Vm> create_vm() const;

  /// @brief The system descriptor, for ioctls this class does not wrap.
  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }

 private:
  explicit Kvm(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

/// @brief "KVM_CAP_IRQCHIP" for a capability number, or "KVM_CAP_<n>" when unknown.
[[nodiscard]] std::string capability_name(int capability);

}  // namespace vmm::kvm
