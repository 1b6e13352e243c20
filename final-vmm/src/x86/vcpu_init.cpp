#include "vmm/x86/vcpu_init.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "vmm/boot/layout.hpp"
#include "vmm/fd.hpp"
#include "vmm/flex_array.hpp"
#include "vmm/x86/long_mode.hpp"

namespace vmm::x86 {

std::vector<kvm_msr_entry> boot_msrs() {
  auto entry = [](std::uint32_t index, std::uint64_t data) {
    kvm_msr_entry e{};
    e.index = index;
    e.data = data;
    return e;
  };
  return {
      entry(msr::kSysenterCs, 0),
      entry(msr::kSysenterEsp, 0),
      entry(msr::kSysenterEip, 0),
      entry(msr::kStar, 0),
      entry(msr::kCstar, 0),
      entry(msr::kKernelGsBase, 0),
      entry(msr::kSyscallMask, 0),
      entry(msr::kLstar, 0),
      entry(msr::kTsc, 0),
      entry(msr::kMiscEnable, msr::kMiscEnableFastString),
      entry(msr::kMtrrDefType, msr::kMtrrEnable | msr::kMtrrTypeWriteBack),
  };
}

Result<void> set_msrs(kvm::Vcpu& vcpu, std::span<const kvm_msr_entry> msrs) {
  // kvm_msrs ends in a flexible array: see vmm/flex_array.hpp.
  constexpr std::size_t kHeaderSize = 2 * sizeof(std::uint32_t);
  constexpr unsigned long kSetMsrs = with_ioctl_size(KVM_SET_MSRS, kHeaderSize);
  FlexArrayBuffer<kvm_msrs, kvm_msr_entry> buffer(kHeaderSize, msrs.size());
  buffer.header()->nmsrs = static_cast<std::uint32_t>(msrs.size());
  std::ranges::copy(msrs, buffer.entries());
  auto set = ioctl(vcpu.fd(), kSetMsrs, "KVM_SET_MSRS", buffer.header());
  if (!set) {
    return std::unexpected(set.error());
  }
  // KVM_SET_MSRS returns how many it set, stopping at the first it refused.
  const auto done = static_cast<std::size_t>(*set);
  if (done < msrs.size()) {
    return logic_error("KVM_SET_MSRS",
                       fmt::format("KVM refused MSR {:#x} (set {} of {})", msrs[done].index, done, msrs.size()));
  }
  return {};
}

Result<void> set_boot_fpu(kvm::Vcpu& vcpu) {
  kvm_fpu fpu{};
  fpu.fcw = 0x37f;     // FNINIT: all x87 exceptions masked, 64-bit precision, round to nearest
  fpu.mxcsr = 0x1f80;  // all SSE exceptions masked
  if (auto rc = VMM_IOCTL(vcpu.fd(), KVM_SET_FPU, &fpu); !rc) {
    return std::unexpected(rc.error());
  }
  return {};
}

Result<void> set_lapic_lints(kvm::Vcpu& vcpu) {
  kvm_lapic_state state{};
  if (auto rc = VMM_IOCTL(vcpu.fd(), KVM_GET_LAPIC, &state); !rc) {
    return std::unexpected(rc.error().with_context("needs the in-kernel irqchip"));
  }
  auto set_mode = [&](std::size_t offset, std::uint32_t mode) {
    std::uint32_t value = 0;
    std::memcpy(&value, state.regs + offset, sizeof(value));
    value = (value & ~lapic::kDeliveryModeMask) | mode;
    std::memcpy(state.regs + offset, &value, sizeof(value));
  };
  set_mode(lapic::kLvtLint0, lapic::kDeliveryExtInt);
  set_mode(lapic::kLvtLint1, lapic::kDeliveryNmi);
  if (auto rc = VMM_IOCTL(vcpu.fd(), KVM_SET_LAPIC, &state); !rc) {
    return std::unexpected(rc.error());
  }
  return {};
}

Result<void> set_boot_registers(kvm::Vcpu& vcpu, const BootEntry& entry) {
  auto sregs = vcpu.get_sregs();
  if (!sregs) {
    return std::unexpected(sregs.error());
  }
  // stage02's long-mode state (CR0/CR3/CR4/EFER and flat segments), with the selectors and GDT limit of the boot
  // protocol's GDT: null, null, __BOOT_CS, __BOOT_DS.
  kvm_sregs s = long_mode_sregs(*sregs, entry.gdt, entry.page_tables);
  s.cs.selector = boot::layout::kBootCs;
  for (kvm_segment* seg : {&s.ds, &s.es, &s.fs, &s.gs, &s.ss}) {
    seg->selector = boot::layout::kBootDs;
  }
  s.gdt.limit = 4 * 8 - 1;
  if (auto rc = vcpu.set_sregs(s); !rc) {
    return std::unexpected(rc.error().with_context("entering long mode"));
  }
  kvm_regs regs{};
  regs.rip = entry.rip;
  regs.rsi = entry.boot_params;
  regs.rsp = entry.stack_top;
  regs.rbp = entry.stack_top;
  regs.rflags = 0x2;  // bit 1 is reserved and always 1; IF = 0
  return vcpu.set_regs(regs);
}

}  // namespace vmm::x86
