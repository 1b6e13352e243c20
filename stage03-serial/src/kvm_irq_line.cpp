#include "vmm/devices/kvm_irq_line.hpp"

#include <linux/kvm.h>

#include <fmt/format.h>

namespace vmm::devices {

Result<void> create_irqchip(kvm::Vm& vm) {
  if (auto rc = VMM_IOCTL(vm.fd(), KVM_CREATE_IRQCHIP); !rc) {
    return std::unexpected(rc.error().with_context("must come before the first KVM_CREATE_VCPU"));
  }
  return {};
}

Result<void> KvmIrqLine::set(std::uint32_t level) {
  kvm_irq_level irq_level{};
  irq_level.irq = gsi_;
  irq_level.level = level;
  if (auto rc = VMM_IOCTL(vm_.fd(), KVM_IRQ_LINE, &irq_level); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("GSI {} level {}", gsi_, level)));
  }
  return {};
}

}  // namespace vmm::devices
