#pragma once
/// @file
/// @brief `VcpuExit`: why KVM_RUN returned, decoded from the shared `kvm_run` page into a type per reason.

#include <linux/kvm.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <variant>

#include "vmm/error.hpp"

namespace vmm::kvm {

/// @brief Direction of a port I/O exit, from the guest's point of view.
enum class IoDirection : std::uint8_t { In, Out };

/// @brief KVM_EXIT_IO: the guest executed IN/OUT/INS/OUTS on a port.
///
/// `data` points into the `kvm_run` page: `size * count` bytes. For OUT the guest's bytes are there; for IN the VMM
/// must fill them before the next KVM_RUN. `count > 1` is string I/O (`rep outsb`, `rep insw`, ...): item `i` is at
/// `data[i * size]`. Never assume count is 1.
struct IoExit {
  std::uint16_t port = 0;                    ///< The I/O port the guest accessed.
  IoDirection direction = IoDirection::Out;  ///< In: the VMM supplies the bytes; Out: the guest did.
  std::uint8_t size = 1;                     ///< Bytes per item: 1, 2 or 4.
  std::uint32_t count = 1;                   ///< Number of items.
  std::span<std::uint8_t> data;              ///< The `size * count` bytes, inside the `kvm_run` page.

  /// @brief The bytes of item `i` (precondition: i < count).
  [[nodiscard]] std::span<std::uint8_t> item(std::uint32_t i) const { return data.subspan(i * size, size); }
};

/// @brief KVM_EXIT_MMIO: the guest accessed guest-physical memory that no memory slot backs.
///
/// For a write, `data` holds the `length` bytes written; for a read the VMM fills `data` before the next KVM_RUN.
struct MmioExit {
  std::uint64_t address = 0;     ///< Guest-physical address of the access.
  std::uint32_t length = 0;      ///< 1..8 bytes.
  bool is_write = false;         ///< True for a write (the guest's bytes are in `data`), false for a read.
  std::span<std::uint8_t> data;  ///< The `length` bytes, inside the `kvm_run` page.
};

/// @brief KVM_EXIT_HLT: the guest executed HLT with interrupts that KVM could not deliver (no in-kernel irqchip).
struct HltExit {};

/// @brief KVM_EXIT_SHUTDOWN: a triple fault (or another reset-class event); the vCPU state is dead.
struct ShutdownExit {};

/// @brief KVM_EXIT_FAIL_ENTRY: the hardware refused to enter the guest, usually because the register state is invalid.
struct FailEntryExit {
  std::uint64_t hardware_entry_failure_reason = 0;  ///< VMX/SVM-specific code.
  std::uint32_t cpu = 0;                            ///< Host CPU that failed the entry.
};

/// @brief KVM_EXIT_INTERNAL_ERROR: KVM itself could not continue, e.g. its instruction emulator failed.
struct InternalErrorExit {
  std::uint32_t suberror = 0;            ///< KVM_INTERNAL_ERROR_* (1 = EMULATION, 2 = SIMUL_EX, 3 = DELIVERY_EV, ...).
  std::array<std::uint64_t, 16> data{};  ///< Diagnostic words; only the first `ndata` are meaningful.
  std::uint32_t ndata = 0;               ///< How many words of `data` KVM filled in.

  /// @brief The meaningful diagnostic words.
  [[nodiscard]] std::span<const std::uint64_t> words() const { return {data.data(), ndata}; }
};

/// @brief KVM_EXIT_SYSTEM_EVENT: the guest asked for shutdown, reset or crash (e.g. through PSCI or a hypercall).
struct SystemEventExit {
  std::uint32_t type = 0;                ///< KVM_SYSTEM_EVENT_SHUTDOWN, _RESET, _CRASH, ...
  std::array<std::uint64_t, 16> data{};  ///< Event-specific words; only the first `ndata` are meaningful.
  std::uint32_t ndata = 0;               ///< How many words of `data` KVM filled in.
};

/// @brief KVM_EXIT_DEBUG: a guest debug event (breakpoint, single-step, watchpoint) set with KVM_SET_GUEST_DEBUG.
struct DebugExit {
  std::uint32_t exception = 0;  ///< 1 (\#DB) or 3 (\#BP).
  std::uint64_t pc = 0;         ///< Guest address of the instruction that caused the event.
  std::uint64_t dr6 = 0;        ///< Debug status register: which condition fired.
  std::uint64_t dr7 = 0;        ///< Debug control register: which breakpoints were enabled.
};

/// @brief KVM_EXIT_INTR: KVM_RUN was interrupted by a signal (or `immediate_exit`) before or while running the guest.
struct InterruptedExit {};

/// @brief Any other exit reason: the raw number, for reporting. The `kvm_run` page still holds the details.
struct UnknownExit {
  std::uint32_t reason = 0;  ///< The KVM_EXIT_* number from the `kvm_run` page.
};

/// @brief Why KVM_RUN returned. `std::visit` it, or `std::get_if<IoExit>(&exit)`.
using VcpuExit = std::variant<IoExit, MmioExit, HltExit, ShutdownExit, FailEntryExit, InternalErrorExit,
                              SystemEventExit, DebugExit, InterruptedExit, UnknownExit>;

/// @brief Decodes the exit described by `run`, a `kvm_run` page of `run_size` bytes (KVM_GET_VCPU_MMAP_SIZE).
///
/// The result's spans point into `run`. Fields are validated before they are trusted: an I/O exit whose data would
/// lie outside the page, an I/O size other than 1/2/4, or an MMIO length above 8 is an error, not a wild pointer.
[[nodiscard]] Result<VcpuExit> decode_exit(kvm_run& run, std::size_t run_size);

/// @brief "KVM_EXIT_IO", "KVM_EXIT_HLT", ... or "KVM_EXIT_<number>" for a reason this code does not know.
[[nodiscard]] std::string exit_reason_name(std::uint32_t reason);

/// @brief The KVM_EXIT_* reason a decoded exit came from.
[[nodiscard]] std::uint32_t exit_reason(const VcpuExit& exit);

/// @brief One line for --trace: "KVM_EXIT_IO out port 0x3f8 size 1 count 1 data 35".
[[nodiscard]] std::string describe(const VcpuExit& exit);

/// @brief "KVM_INTERNAL_ERROR_EMULATION" etc. for an internal error's suberror.
[[nodiscard]] std::string internal_error_name(std::uint32_t suberror);

}  // namespace vmm::kvm
