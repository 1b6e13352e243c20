#pragma once
/// @file
/// @brief The state every vCPU needs before Linux runs on it (MSRs, FPU, local APIC), and the registers of the
///        bootstrap processor at the kernel's 64-bit entry.

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/kvm/vcpu.hpp"
#include "vmm/memory/guest_address.hpp"

namespace vmm::x86 {

/// @brief Model-specific registers `boot_msrs` sets (Intel SDM vol. 4; Linux's msr-index.h names).
namespace msr {
inline constexpr std::uint32_t kSysenterCs = 0x174;         ///< MSR_IA32_SYSENTER_CS.
inline constexpr std::uint32_t kSysenterEsp = 0x175;        ///< MSR_IA32_SYSENTER_ESP.
inline constexpr std::uint32_t kSysenterEip = 0x176;        ///< MSR_IA32_SYSENTER_EIP.
inline constexpr std::uint32_t kStar = 0xc0000081;          ///< MSR_STAR: SYSCALL segments.
inline constexpr std::uint32_t kLstar = 0xc0000082;         ///< MSR_LSTAR: 64-bit SYSCALL entry.
inline constexpr std::uint32_t kCstar = 0xc0000083;         ///< MSR_CSTAR: compatibility-mode SYSCALL entry.
inline constexpr std::uint32_t kSyscallMask = 0xc0000084;   ///< MSR_SYSCALL_MASK: RFLAGS bits SYSCALL clears.
inline constexpr std::uint32_t kKernelGsBase = 0xc0000102;  ///< MSR_KERNEL_GS_BASE: SWAPGS's other GS.
inline constexpr std::uint32_t kTsc = 0x10;                 ///< MSR_IA32_TSC.
inline constexpr std::uint32_t kMiscEnable = 0x1a0;         ///< MSR_IA32_MISC_ENABLE.
inline constexpr std::uint32_t kMtrrDefType = 0x2ff;        ///< MSR_MTRRdefType.
inline constexpr std::uint64_t kMiscEnableFastString = 1;   ///< MISC_ENABLE bit 0: fast REP MOVS/STOS.
inline constexpr std::uint64_t kMtrrEnable = 1u << 11;      ///< MTRRdefType.E: MTRRs on.
inline constexpr std::uint64_t kMtrrTypeWriteBack = 6;      ///< Default memory type: write-back.
}  // namespace msr

/// @brief The MSR values a vCPU starts Linux with: the SYSCALL/SYSENTER MSRs and the TSC at 0 (Linux programs
/// them), fast strings on, and MTRRs enabled with write-back as the default type (otherwise all memory would be
/// uncached, and Linux would warn about it and run slowly).
[[nodiscard]] std::vector<kvm_msr_entry> boot_msrs();

/// @brief KVM_SET_MSRS; fails naming the first MSR KVM did not accept.
[[nodiscard]] Result<void> set_msrs(kvm::Vcpu& vcpu, std::span<const kvm_msr_entry> msrs);

/// @brief KVM_SET_FPU with the x87 state a CPU has after FNINIT. (KVM_SET_FPU does not take MXCSR; KVM gives a new
///        vCPU MXCSR's reset value, 0x1f80, which is what Linux expects.)
[[nodiscard]] Result<void> set_boot_fpu(kvm::Vcpu& vcpu);

/// @brief Local APIC register offsets (Intel SDM vol. 3A, 11.4.1) and LVT delivery modes `set_lapic_lints` uses.
namespace lapic {
inline constexpr std::size_t kLvtLint0 = 0x350;            ///< LVT LINT0.
inline constexpr std::size_t kLvtLint1 = 0x360;            ///< LVT LINT1.
inline constexpr std::uint32_t kDeliveryModeMask = 0x700;  ///< LVT bits 10:8.
inline constexpr std::uint32_t kDeliveryExtInt = 0x700;    ///< Ask the 8259 PIC for the vector.
inline constexpr std::uint32_t kDeliveryNmi = 0x400;       ///< Non-maskable interrupt.
}  // namespace lapic

/// @brief KVM_GET_LAPIC / KVM_SET_LAPIC: LINT0 delivers ExtINT (the 8259 PIC's output) and LINT1 NMI, the wiring
/// the MP table announces and firmware would program (virtual wire mode).
[[nodiscard]] Result<void> set_lapic_lints(kvm::Vcpu& vcpu);

/// @brief Where the bootstrap processor starts the kernel.
struct BootEntry {
  std::uint64_t rip = 0;                ///< The kernel's 64-bit entry.
  std::uint64_t boot_params = 0;        ///< RSI: the zero page.
  std::uint64_t stack_top = 0;          ///< RSP.
  memory::GuestAddress gdt{0};          ///< The four-entry boot GDT.
  memory::GuestAddress page_tables{0};  ///< CR3.
};

/// @brief Registers and segments of the 64-bit boot protocol: long mode with paging, CS = __BOOT_CS (0x10),
/// DS/ES/SS = __BOOT_DS (0x18), interrupts off, RSI = the zero page.
[[nodiscard]] Result<void> set_boot_registers(kvm::Vcpu& vcpu, const BootEntry& entry);

}  // namespace vmm::x86
