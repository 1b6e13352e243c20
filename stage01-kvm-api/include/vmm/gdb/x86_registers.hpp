#pragma once
/// @file
/// @brief x86-64 registers as gdb sees them: the target description the stub sends (qXfer:features:read), and the
///        layout of the 'g'/'G' and 'p'/'P' packets, converted from and to KVM's register structs.
///
/// gdb learns the register set from the stub's target description; the 'g' packet is then every register in that
/// order, each in target byte order (little-endian), at the offsets the description implies. The description uses
/// gdb's standard x86-64 features (core, sse, segments, whose register names gdb's amd64 support requires) and one of
/// vmmlab's own for the control registers a kernel debugger wants (cr0, cr2, cr3, cr4, cr8, efer).

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/error.hpp"

namespace vmm::gdb {

/// @brief One register of the description.
struct RegisterInfo {
  std::string_view name;     ///< gdb's name ("rip").
  std::size_t bits = 0;      ///< Width.
  std::string_view type;     ///< gdb type ("int64", "code_ptr", "i387_ext", "vec128", ...).
  std::string_view feature;  ///< The feature it belongs to ("org.gnu.gdb.i386.core").
  std::size_t offset = 0;    ///< Byte offset in the 'g' packet's data.
};

/// @brief Every register, in 'g' packet order (register number = index).
[[nodiscard]] std::span<const RegisterInfo> x86_64_registers();
/// @brief Bytes of the 'g' packet's data (before hex encoding).
[[nodiscard]] std::size_t x86_64_g_bytes();
/// @brief The target description (an XML document, features inline) that declares exactly `x86_64_registers()`.
[[nodiscard]] std::string x86_64_target_xml();

/// @brief A vCPU's registers as KVM hands them out.
struct X86Registers {
  kvm_regs regs{};    ///< General-purpose registers, RIP, RFLAGS (KVM_GET_REGS).
  kvm_sregs sregs{};  ///< Segments, control registers, EFER (KVM_GET_SREGS).
  kvm_fpu fpu{};      ///< x87 and SSE state (KVM_GET_FPU).
};

/// @brief The 'g' reply's data: every register at its offset.
[[nodiscard]] std::vector<std::uint8_t> encode_registers(const X86Registers& state);
/// @brief Register `number` alone (a 'p' reply); refused for a number the description does not have.
[[nodiscard]] Result<std::vector<std::uint8_t>> read_register(const X86Registers& state, std::size_t number);
/// @brief A 'P' packet: register `number` from `bytes` (exactly its width). Segment registers change only their
///        selector (the hidden descriptor state stays as KVM has it); the x87 tag word is kept in KVM's abridged
///        form (empty or not).
[[nodiscard]] Result<void> write_register(X86Registers& state, std::size_t number, std::span<const std::uint8_t> bytes);
/// @brief A 'G' packet: every register from `bytes` (exactly `x86_64_g_bytes()`).
[[nodiscard]] Result<void> decode_registers(X86Registers& state, std::span<const std::uint8_t> bytes);

}  // namespace vmm::gdb
