#pragma once
/// @file
/// @brief Register dumps for error reports and --trace.

#include <linux/kvm.h>

#include <string>

#include "vmm/error.hpp"
#include "vmm/kvm/vcpu.hpp"

namespace vmm::kvm {

/// @brief A multi-line dump of general-purpose registers (RIP, RFLAGS, RAX..R15).
[[nodiscard]] std::string format_regs(const kvm_regs& regs);
/// @brief A multi-line dump of segment registers, descriptor tables, CR0/2/3/4/8 and EFER.
[[nodiscard]] std::string format_sregs(const kvm_sregs& sregs);
/// @brief Reads both register sets of `vcpu` and formats them; what a VMM prints when a guest dies.
[[nodiscard]] Result<std::string> dump_vcpu(const Vcpu& vcpu);

}  // namespace vmm::kvm
