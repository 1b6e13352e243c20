#pragma once
/// @file
/// @brief The CPUID each vCPU of a multi-processor guest sees: what KVM supports, minus what final-vmm does not
///        offer, with the vCPU's APIC ID and the machine's topology filled in.

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

namespace vmm::x86 {

/// @brief CPUID leaves and bits `cpuid_for_vcpu` edits (Intel SDM vol. 2A "CPUID"; AMD APM vol. 3, appendix E).
namespace cpuid {
inline constexpr std::uint32_t kLeafFeatures = 0x1;                     ///< Family/model, APIC ID, feature flags.
inline constexpr std::uint32_t kLeafTopology = 0xb;                     ///< Extended topology enumeration.
inline constexpr std::uint32_t kLeafTopologyV2 = 0x1f;                  ///< V2 extended topology (same format as 0xb).
inline constexpr std::uint32_t kLeafXsave = 0xd;                        ///< XSAVE state components and sizes.
inline constexpr std::uint32_t kEcxAvx = 1u << 28;                      ///< Leaf 1 ECX: AVX.
inline constexpr std::uint32_t kXcr0AvxStates = (1u << 2) | (7u << 5);  ///< YMM, and AVX-512's three components.
inline constexpr std::uint32_t kXsaveLegacySize = 576;          ///< The x87/SSE legacy area plus the XSAVE header.
inline constexpr std::uint32_t kLeafExtFeatures = 0x80000001;   ///< AMD extended features (SVM, TOPOEXT).
inline constexpr std::uint32_t kLeafAddressSizes = 0x80000008;  ///< Address sizes; AMD: core count in ECX.
inline constexpr std::uint32_t kLeafAmdTopology = 0x8000001e;   ///< AMD topology (needs TOPOEXT).
inline constexpr std::uint32_t kEcxVmx = 1u << 5;               ///< Leaf 1 ECX: Intel VT-x (not offered: no nesting).
inline constexpr std::uint32_t kEcxHypervisor = 1u << 31;       ///< Leaf 1 ECX: "running under a hypervisor".
inline constexpr std::uint32_t kEdxHtt = 1u << 28;              ///< Leaf 1 EDX: EBX[23:16] counts logical CPUs.
inline constexpr std::uint32_t kExtEcxSvm = 1u << 2;            ///< 0x80000001 ECX: AMD-V (not offered).
inline constexpr std::uint32_t kExtEcxTopoext = 1u << 22;       ///< 0x80000001 ECX: leaf 0x8000001e exists.
inline constexpr std::uint32_t kLevelSmt = 1;                   ///< Leaf 0xb ECX[15:8]: the SMT level.
inline constexpr std::uint32_t kLevelCore = 2;                  ///< Leaf 0xb ECX[15:8]: the core level.
}  // namespace cpuid

/// @brief The CPUID of vCPU `index` of `count`, from KVM_GET_SUPPORTED_CPUID's `supported`:
/// - leaf 1: the initial APIC ID (EBX[31:24] = index), the logical CPU count (EBX[23:16], with HTT), the
///   hypervisor bit set and VMX cleared;
/// - leaves 0xb and 0x1f: one thread per core, `count` cores in one package, x2APIC ID = index in EDX of every
///   subleaf;
/// - AMD: SVM and TOPOEXT cleared (so Linux does not read leaf 0x8000001e, which would describe the host), leaf
///   0x8000001e removed, and 0x80000008 ECX with `count` cores;
/// - leaf 0xd: without AVX in leaf 1, the AVX and AVX-512 state components are removed and the sizes recomputed
///   (a nested KVM may list them anyway, and Linux then warns "XSAVE consistency problem");
/// every other leaf as KVM supports it (the KVM paravirtual leaves at 0x40000000 included: kvmclock).
[[nodiscard]] std::vector<kvm_cpuid_entry2> cpuid_for_vcpu(std::span<const kvm_cpuid_entry2> supported,
                                                           std::uint32_t index, std::uint32_t count);

}  // namespace vmm::x86
