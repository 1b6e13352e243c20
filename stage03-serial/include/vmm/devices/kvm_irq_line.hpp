#pragma once
/// @file
/// @brief The in-kernel interrupt controllers, and `KvmIrqLine`: an `IrqLine` driven with KVM_IRQ_LINE.

#include <cstdint>

#include "vmm/devices/irq_line.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm::devices {

/// @brief KVM_CREATE_IRQCHIP: KVM emulates the two 8259 PICs, the IOAPIC and a local APIC per vCPU in the kernel.
///
/// Must be called before the first vCPU is created. Afterwards HLT no longer exits to userspace (KVM waits for an
/// interrupt itself), and vCPU 0's LAPIC starts in "virtual wire" mode, so PIC interrupts reach it as on a PC.
[[nodiscard]] Result<void> create_irqchip(kvm::Vm& vm);

/// @brief An interrupt line into the in-kernel PIC and IOAPIC: KVM_IRQ_LINE with level 1 or 0.
///
/// With the default routing, GSI n is PIC input n (for n < 16) and IOAPIC pin n, so IRQ 4 (COM1) reaches whichever
/// controller the guest uses. Each call is an ioctl on the VM descriptor from the calling thread.
class KvmIrqLine final : public IrqLine {
 public:
  /// @brief The line for `gsi` of `vm` (which must outlive it).
  KvmIrqLine(const kvm::Vm& vm, std::uint32_t gsi) : vm_(vm), gsi_(gsi) {}
  Result<void> raise() override { return set(1); }
  Result<void> lower() override { return set(0); }
  /// @brief The GSI this line drives.
  [[nodiscard]] std::uint32_t gsi() const noexcept { return gsi_; }

 private:
  Result<void> set(std::uint32_t level);
  const kvm::Vm& vm_;
  std::uint32_t gsi_;
};

}  // namespace vmm::devices
