#include "vmm/kvm/vcpu.hpp"

#include <fmt/format.h>

namespace vmm::kvm {

Result<VcpuExit> Vcpu::run() {
  if (auto rc = VMM_IOCTL(fd_, KVM_RUN); !rc) {
    // A signal aimed at this thread (how a VMM kicks a vCPU out of the guest) makes KVM_RUN fail with EINTR and set
    // exit_reason to KVM_EXIT_INTR. That is an exit like any other, not an error. EAGAIN is its sibling on SMP
    // guests: a secondary CPU waiting for its startup IPI returns EAGAIN when the INIT/SIPI arrives, and the next
    // KVM_RUN starts it (final-vmm's application processors; see final-vmm/README.md, "What changed").
    if (rc.error().errno_value != EINTR && rc.error().errno_value != EAGAIN) {
      return std::unexpected(rc.error().with_context(fmt::format("vCPU {}", id_)));
    }
    return InterruptedExit{};
  }
  return decode_exit(run_page(), run_.size());
}

Result<kvm_regs> Vcpu::get_regs() const {
  kvm_regs regs{};
  if (auto rc = VMM_IOCTL(fd_, KVM_GET_REGS, &regs); !rc) {
    return std::unexpected(rc.error());
  }
  return regs;
}

Result<void> Vcpu::set_regs(const kvm_regs& regs) {
  if (auto rc = VMM_IOCTL(fd_, KVM_SET_REGS, &regs); !rc) {
    return std::unexpected(rc.error());
  }
  return {};
}

Result<kvm_sregs> Vcpu::get_sregs() const {
  kvm_sregs sregs{};
  if (auto rc = VMM_IOCTL(fd_, KVM_GET_SREGS, &sregs); !rc) {
    return std::unexpected(rc.error());
  }
  return sregs;
}

Result<void> Vcpu::set_sregs(const kvm_sregs& sregs) {
  if (auto rc = VMM_IOCTL(fd_, KVM_SET_SREGS, &sregs); !rc) {
    return std::unexpected(rc.error());
  }
  return {};
}

}  // namespace vmm::kvm
