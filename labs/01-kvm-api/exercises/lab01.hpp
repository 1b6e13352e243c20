#pragma once
/// @file
/// @brief Lab 01's exercise interface: the functions you write (exercises/) and the reference (solutions/) share it.

#include <cstdint>

#include "vmm/error.hpp"
#include "vmm/kvm/exit.hpp"
#include "vmm/kvm/vcpu.hpp"

namespace lab01 {

/// @brief Exercise 2: answer the guest's IN from the "switch" port 0x3f9 with `switch_value`.
///
/// Return true if `io` was a read of port 0x3f9 and you filled in the answer; false for anything else, so the default
/// handling (serial output on 0x3f8) still happens.
bool answer_switch_read(vmm::kvm::IoExit& io, std::uint8_t switch_value);

/// @brief Exercise 3: point `vcpu` at code loaded at any `physical_address` below 1 MiB, in real mode, with the two
///        operands in RAX and RBX.
vmm::Result<void> enter_real_mode_at(vmm::kvm::Vcpu& vcpu, std::uint32_t physical_address, std::uint64_t rax,
                                     std::uint64_t rbx);

}  // namespace lab01
