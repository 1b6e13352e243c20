#pragma once
/// @file
/// @brief Tables for `--stats`: the VMM's userspace exits (`ExitCounters`) next to KVM's own vCPU counters
/// (`KvmStats`), so the exits ioeventfds and irqfds took away show as a gap between the two columns.

#include <array>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "vmm/machine/exit_counters.hpp"
#include "vmm/machine/kvm_stats.hpp"

namespace vmm::machine {

/// @brief KVM's x86 vCPU statistics worth showing next to the VMM's exits, in display order. `exits` counts every
/// VM exit, most of which KVM handles without returning to userspace; `io_exits`/`mmio_exits` are those that did
/// reach userspace; `halt_exits` are HLTs KVM handled itself (in-kernel irqchip); `irq_injections` are interrupts
/// delivered (irqfds included). A kernel without one of them simply has no row for it.
inline constexpr std::array<std::string_view, 10> kKvmExitStatNames{
    "exits",        "io_exits",       "mmio_exits",     "halt_exits",    "irq_exits", "irq_window_exits",
    "signal_exits", "insn_emulation", "irq_injections", "nmi_injections"};

/// @brief The VMM's exits by reason, one line per reason that happened, then the total:
/// ```
/// VMM userspace exits
///   io out              12
///   mmio write           3
///   total               15
/// ```
[[nodiscard]] std::string format_exit_reasons(const ExitCountersSnapshot& snapshot);

/// @brief The `limit` busiest MMIO addresses and I/O ports, with reads and writes:
/// ```
/// busiest exit addresses
///   mmio 0xc0003000       reads 0       writes 120
///   pio  0x3f8            reads 0       writes 40
/// ```
[[nodiscard]] std::string format_exit_addresses(const ExitCountersSnapshot& snapshot, std::size_t limit = 8);

/// @brief The VMM's exits by reason and KVM's vCPU counters (those of `kKvmExitStatNames` present in `kvm`, first
/// value of each) side by side, then `format_exit_addresses`. `kvm` may be empty (no stats fd): the right column is
/// then left out.
[[nodiscard]] std::string format_exit_stats(const ExitCountersSnapshot& snapshot, std::span<const Stat> kvm,
                                            std::size_t address_limit = 8);

}  // namespace vmm::machine
