#include "vmm/kvm/kvm.hpp"

#include "vmm/flex_array.hpp"

#include <fcntl.h>

#include <fmt/format.h>

namespace vmm::kvm {

Result<Kvm> Kvm::open(const char* path) {
  auto fd = Fd::open(path, O_RDWR);
  if (!fd) {
    return std::unexpected(fd.error().with_context("is KVM enabled, and may this user open the device?"));
  }
  Kvm kvm(std::move(*fd));
  auto version = kvm.api_version();
  if (!version) {
    return std::unexpected(version.error());
  }
  if (*version != KVM_API_VERSION) {
    return logic_error("KVM_GET_API_VERSION",
                       fmt::format("{} reports API version {}, expected {}", path, *version, KVM_API_VERSION));
  }
  return kvm;
}

Result<int> Kvm::api_version() const {
  return VMM_IOCTL(fd_, KVM_GET_API_VERSION);
}

Result<int> Kvm::check_extension(int capability) const {
  auto value = VMM_IOCTL(fd_, KVM_CHECK_EXTENSION, capability);
  if (!value) {
    return std::unexpected(value.error().with_context(capability_name(capability)));
  }
  return value;
}

Result<void> Kvm::require_extension(int capability) const {
  auto value = check_extension(capability);
  if (!value) {
    return std::unexpected(value.error());
  }
  if (*value <= 0) {
    return logic_error("KVM_CHECK_EXTENSION", fmt::format("this host's KVM lacks {}", capability_name(capability)));
  }
  return {};
}

Result<std::size_t> Kvm::vcpu_mmap_size() const {
  auto size = VMM_IOCTL(fd_, KVM_GET_VCPU_MMAP_SIZE);
  if (!size) {
    return std::unexpected(size.error());
  }
  return static_cast<std::size_t>(*size);
}

Result<std::vector<kvm_cpuid_entry2>> Kvm::supported_cpuid() const {
  // kvm_cpuid2 is {u32 nent; u32 padding; kvm_cpuid_entry2 entries[];}: 8 bytes of header in C. See flex_array.hpp
  // for why C++ must not use sizeof(kvm_cpuid2) or the header's KVM_GET_SUPPORTED_CPUID as they stand.
  constexpr std::size_t kHeaderSize = 2 * sizeof(std::uint32_t);
  constexpr unsigned long kGetSupportedCpuid = with_ioctl_size(KVM_GET_SUPPORTED_CPUID, kHeaderSize);
  // The caller cannot know the number of leaves in advance: start with a guess and grow on E2BIG, as QEMU does.
  for (std::uint32_t capacity = 64; capacity <= 4096; capacity *= 2) {
    FlexArrayBuffer<kvm_cpuid2, kvm_cpuid_entry2> buffer(kHeaderSize, capacity);
    buffer.header()->nent = capacity;
    auto rc = ioctl(fd_, kGetSupportedCpuid, "KVM_GET_SUPPORTED_CPUID", buffer.header());
    if (rc) {
      auto entries = buffer.first(buffer.header()->nent);
      return std::vector<kvm_cpuid_entry2>(entries.begin(), entries.end());
    }
    if (rc.error().errno_value != E2BIG) {
      return std::unexpected(rc.error().with_context(fmt::format("{} entries", capacity)));
    }
  }
  return logic_error("KVM_GET_SUPPORTED_CPUID", "more than 4096 CPUID entries");
}

Result<Vm> Kvm::create_vm() const {
  auto mmap_size = vcpu_mmap_size();
  if (!mmap_size) {
    return std::unexpected(mmap_size.error());
  }
  auto fd = VMM_IOCTL(fd_, KVM_CREATE_VM, 0);
  if (!fd) {
    return std::unexpected(fd.error());
  }
  return Vm(Fd(*fd), *mmap_size);
}

std::string capability_name(int capability) {
  switch (capability) {
#define VMM_CAP_NAME(name) \
  case name:               \
    return #name;
    VMM_CAP_NAME(KVM_CAP_IRQCHIP)
    VMM_CAP_NAME(KVM_CAP_HLT)
    VMM_CAP_NAME(KVM_CAP_USER_MEMORY)
    VMM_CAP_NAME(KVM_CAP_SET_TSS_ADDR)
    VMM_CAP_NAME(KVM_CAP_EXT_CPUID)
    VMM_CAP_NAME(KVM_CAP_NR_VCPUS)
    VMM_CAP_NAME(KVM_CAP_NR_MEMSLOTS)
    VMM_CAP_NAME(KVM_CAP_PIT)
    VMM_CAP_NAME(KVM_CAP_NOP_IO_DELAY)
    VMM_CAP_NAME(KVM_CAP_SYNC_MMU)
    VMM_CAP_NAME(KVM_CAP_IOMMU)
    VMM_CAP_NAME(KVM_CAP_COALESCED_MMIO)
    VMM_CAP_NAME(KVM_CAP_IRQ_ROUTING)
    VMM_CAP_NAME(KVM_CAP_IRQ_INJECT_STATUS)
    VMM_CAP_NAME(KVM_CAP_SET_GUEST_DEBUG)
    VMM_CAP_NAME(KVM_CAP_IRQFD)
    VMM_CAP_NAME(KVM_CAP_PIT2)
    VMM_CAP_NAME(KVM_CAP_SET_BOOT_CPU_ID)
    VMM_CAP_NAME(KVM_CAP_IOEVENTFD)
    VMM_CAP_NAME(KVM_CAP_ADJUST_CLOCK)
    VMM_CAP_NAME(KVM_CAP_VCPU_EVENTS)
    VMM_CAP_NAME(KVM_CAP_XSAVE)
    VMM_CAP_NAME(KVM_CAP_XCRS)
    VMM_CAP_NAME(KVM_CAP_TSC_CONTROL)
    VMM_CAP_NAME(KVM_CAP_MAX_VCPUS)
    VMM_CAP_NAME(KVM_CAP_SIGNAL_MSI)
    VMM_CAP_NAME(KVM_CAP_READONLY_MEM)
    VMM_CAP_NAME(KVM_CAP_IRQFD_RESAMPLE)
    VMM_CAP_NAME(KVM_CAP_DEVICE_CTRL)
    VMM_CAP_NAME(KVM_CAP_IMMEDIATE_EXIT)
    VMM_CAP_NAME(KVM_CAP_SPLIT_IRQCHIP)
    VMM_CAP_NAME(KVM_CAP_X2APIC_API)
    VMM_CAP_NAME(KVM_CAP_MAX_VCPU_ID)
    VMM_CAP_NAME(KVM_CAP_GET_MSR_FEATURES)
    VMM_CAP_NAME(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)
    VMM_CAP_NAME(KVM_CAP_DIRTY_LOG_RING)
    VMM_CAP_NAME(KVM_CAP_BINARY_STATS_FD)
    VMM_CAP_NAME(KVM_CAP_IOEVENTFD_ANY_LENGTH)
#undef VMM_CAP_NAME
    default:
      return fmt::format("KVM_CAP_{}", capability);
  }
}

}  // namespace vmm::kvm
