#pragma once
/// @file
/// @brief What this machine's KVM can trap for a debugger, found by trying it in a scratch VM.
///
/// KVM_CAP_SET_GUEST_DEBUG says the ioctl exists, not that the CPU underneath delivers every event. Nested and
/// emulated CPUs differ: vmmlab's host KVM emulates ring-0 code and fails on int3 there, and the rig's emulated SVM
/// (QEMU TCG) neither intercepts int3 nor fires debug-register breakpoints inside its guests. Single-stepping works
/// on both. The stub asks before it promises gdb anything, and emulates by single-stepping what cannot be trapped.

#include "vmm/error.hpp"

namespace vmm::gdb {

/// @brief Which debug events reach the VMM as KVM_EXIT_DEBUG.
struct GuestDebugSupport {
  bool single_step = false;          ///< KVM_GUESTDBG_SINGLESTEP: an exit after each instruction.
  bool software_breakpoint = false;  ///< KVM_GUESTDBG_USE_SW_BP: an int3 in guest code exits instead of running.
  bool hardware_breakpoint = false;  ///< KVM_GUESTDBG_USE_HW_BP with an execution breakpoint in DR0.
  bool hardware_watchpoint = false;  ///< KVM_GUESTDBG_USE_HW_BP with a write watchpoint in DR0.
};

/// @brief Runs four tiny real-mode programs in a scratch VM, one per event, each with the event armed: an event is
///        supported when the program stops with the KVM_EXIT_DEBUG it should. Takes a few milliseconds.
[[nodiscard]] Result<GuestDebugSupport> probe_guest_debug();

}  // namespace vmm::gdb
