#pragma once
/// @file
/// @brief The Intel MultiProcessor Specification 1.4 table: how a guest without ACPI learns its CPUs (their local
///        APIC IDs), its IOAPIC and how the ISA interrupts reach it.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace vmm::boot {

/// @brief The most vCPUs the MP table (and final-vmm) describes.
inline constexpr std::uint32_t kMaxCpus = 32;

/// @brief What the table describes. The IOAPIC gets the first ID after the CPUs' (APIC IDs share one space).
struct MpTableConfig {
  std::uint32_t cpus = 1;                     ///< vCPUs, APIC IDs 0..cpus-1; CPU 0 is the bootstrap processor.
  std::uint32_t ioapic_address = 0xfec00000;  ///< The IOAPIC's MMIO page (KVM's in-kernel IOAPIC).
  std::uint32_t lapic_address = 0xfee00000;   ///< The local APICs' MMIO page.
  std::uint8_t ioapic_pins = 24;              ///< Input pins of KVM's IOAPIC.
  std::uint32_t cpu_signature = 0x600;        ///< CPUID.1:EAX for the processor entries (family 6).
  std::uint32_t cpu_features = 0x201;         ///< CPUID.1:EDX for the processor entries (FPU, APIC).
};

/// @brief Sizes of the MP structures (MP spec 1.4, chapter 4).
namespace mp {
inline constexpr std::size_t kFloatingPointerSize = 16;  ///< "_MP_" structure.
inline constexpr std::size_t kHeaderSize = 44;           ///< "PCMP" configuration table header.
inline constexpr std::size_t kProcessorEntrySize = 20;   ///< Entry type 0.
inline constexpr std::size_t kSmallEntrySize = 8;        ///< Entry types 1 (bus), 2 (IOAPIC), 3 and 4 (interrupts).
inline constexpr std::uint8_t kEntryProcessor = 0;       ///< Entry type: processor.
inline constexpr std::uint8_t kEntryBus = 1;             ///< Entry type: bus.
inline constexpr std::uint8_t kEntryIoapic = 2;          ///< Entry type: I/O APIC.
inline constexpr std::uint8_t kEntryIoInterrupt = 3;     ///< Entry type: I/O interrupt assignment.
inline constexpr std::uint8_t kEntryLocalInterrupt = 4;  ///< Entry type: local interrupt assignment.
}  // namespace mp

/// @brief The floating pointer followed by the configuration table, as bytes for guest-physical `base` (the
///        pointer's PHYSPTR field points just after itself). Each structure's checksum makes its bytes sum to 0.
///        Refused for 0 or more than `kMaxCpus` CPUs.
[[nodiscard]] Result<std::vector<std::byte>> build_mptable(std::uint64_t base, const MpTableConfig& config);

/// @brief `build_mptable` for `base`, written to guest memory.
[[nodiscard]] Result<std::size_t> write_mptable(const memory::GuestMemory& memory, memory::GuestAddress base,
                                                const MpTableConfig& config);

/// @brief The byte that makes `bytes` sum to 0 modulo 256 (what every MP, ACPI and SMBIOS checksum is).
[[nodiscard]] std::uint8_t checksum_byte(std::span<const std::byte> bytes);

}  // namespace vmm::boot
