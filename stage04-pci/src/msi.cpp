#include "vmm/pci/msi.hpp"

#include <linux/kvm.h>

#include <fmt/format.h>

namespace vmm::pci {

Result<int> KvmSignalMsi::send(const MsiMessage& message) const {
  kvm_msi msi{};
  msi.address_lo = static_cast<std::uint32_t>(message.address);
  msi.address_hi = static_cast<std::uint32_t>(message.address >> 32);
  msi.data = message.data;
  auto rc = VMM_IOCTL(vm_.fd(), KVM_SIGNAL_MSI, &msi);
  if (!rc) {
    return std::unexpected(
        std::move(rc).error().with_context(fmt::format("address {:#x} data {:#x}", message.address, message.data)));
  }
  return *rc;
}

Result<void> KvmSignalMsi::signal(const MsiMessage& message, std::uint16_t vector_index) {
  auto rc = send(message);
  if (!rc) {
    return std::unexpected(std::move(rc).error().with_context(fmt::format("MSI-X vector {}", vector_index)));
  }
  return {};
}

}  // namespace vmm::pci
