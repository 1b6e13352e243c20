// Lab 01, exercise 3, reference solution.
#include <fmt/format.h>

#include "lab01.hpp"

namespace lab01 {

vmm::Result<void> enter_real_mode_at(vmm::kvm::Vcpu& vcpu, std::uint32_t physical_address, std::uint64_t rax,
                                     std::uint64_t rbx) {
  if (physical_address >= 0x100000) {
    return vmm::logic_error("enter_real_mode_at",
                            fmt::format("{:#x} is above 1 MiB: real mode cannot reach it", physical_address));
  }
  // Real mode: linear address = CS.selector * 16 + IP. Any split works; the canonical one keeps IP below 16.
  // KVM uses the cached CS.base directly, so base and selector must agree (base = selector << 4).
  auto sregs = vcpu.get_sregs();
  if (!sregs) {
    return std::unexpected(sregs.error());
  }
  sregs->cs.selector = static_cast<std::uint16_t>(physical_address >> 4);
  sregs->cs.base = physical_address & ~0xfu;
  if (auto rc = vcpu.set_sregs(*sregs); !rc) {
    return rc;
  }
  kvm_regs regs{};
  regs.rip = physical_address & 0xf;
  regs.rax = rax;
  regs.rbx = rbx;
  regs.rflags = 0x2;
  return vcpu.set_regs(regs);
}

}  // namespace lab01
