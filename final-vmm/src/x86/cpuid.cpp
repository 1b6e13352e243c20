#include "vmm/x86/cpuid.hpp"

#include <algorithm>
#include <bit>

namespace vmm::x86 {

std::vector<kvm_cpuid_entry2> cpuid_for_vcpu(std::span<const kvm_cpuid_entry2> supported, std::uint32_t index,
                                             std::uint32_t count) {
  using namespace cpuid;
  // Bits of the APIC ID that number the cores: enough for `count` of them (leaf 0xb EAX, AMD 0x80000008 ECX[15:12]).
  const std::uint32_t core_bits = count <= 1 ? 0 : static_cast<std::uint32_t>(std::bit_width(count - 1));
  std::vector<kvm_cpuid_entry2> out;
  out.reserve(supported.size());
  for (kvm_cpuid_entry2 entry : supported) {
    switch (entry.function) {
      case kLeafFeatures:
        entry.ebx = (entry.ebx & 0x0000ffffu) | (index << 24) | ((count & 0xffu) << 16);
        entry.ecx = (entry.ecx & ~kEcxVmx) | kEcxHypervisor;
        entry.edx = count > 1 ? entry.edx | kEdxHtt : entry.edx & ~kEdxHtt;
        break;
      case kLeafTopology:
      case kLeafTopologyV2:
        // Subleaf 0: the SMT level (one thread per core, so shift 0); 1: the core level (all CPUs in one package);
        // others: invalid level (ECX[15:8] = 0), which ends the enumeration.
        entry.edx = index;
        if (entry.index == 0) {
          entry.eax = 0;
          entry.ebx = 1;
          entry.ecx = (kLevelSmt << 8) | 0;
        } else if (entry.index == 1) {
          entry.eax = core_bits;
          entry.ebx = count;
          entry.ecx = (kLevelCore << 8) | 1;
        } else {
          entry.eax = 0;
          entry.ebx = 0;
          entry.ecx = entry.index & 0xffu;
        }
        break;
      case kLeafExtFeatures:
        entry.ecx &= ~(kExtEcxSvm | kExtEcxTopoext);
        break;
      case kLeafAddressSizes:
        // AMD: ECX[7:0] = cores - 1, ECX[15:12] = APIC ID bits for them. Intel reserves ECX (reads 0), which the
        // AMD meaning of 0 ("one core") also fits.
        entry.ecx = (entry.ecx & ~0xf0ffu) | (core_bits << 12) | ((count - 1) & 0xffu);
        break;
      case kLeafAmdTopology:
        continue;  // describes the host's cores; hidden along with TOPOEXT
      default:
        break;
    }
    out.push_back(entry);
  }
  // KVM reports leaves 0xb/0x1f with a fixed number of subleaves; make sure the two levels exist even when KVM
  // listed fewer (only subleaf 0, say) so the guest never sees a core level without its subleaf.
  for (const std::uint32_t leaf : {kLeafTopology, kLeafTopologyV2}) {
    const bool present = std::any_of(out.begin(), out.end(), [&](const auto& e) { return e.function == leaf; });
    const bool has_core =
        std::any_of(out.begin(), out.end(), [&](const auto& e) { return e.function == leaf && e.index == 1; });
    if (present && !has_core) {
      kvm_cpuid_entry2 core{};
      core.function = leaf;
      core.index = 1;
      core.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
      core.eax = core_bits;
      core.ebx = count;
      core.ecx = (kLevelCore << 8) | 1;
      core.edx = index;
      out.push_back(core);
    }
  }
  // XSAVE components the CPU cannot use without AVX must not be announced.
  const auto leaf1 = std::find_if(out.begin(), out.end(), [](const auto& e) { return e.function == kLeafFeatures; });
  if (leaf1 != out.end() && (leaf1->ecx & kEcxAvx) == 0) {
    std::erase_if(out, [](const auto& e) {
      return e.function == kLeafXsave && e.index >= 2 && e.index < 32 && ((kXcr0AvxStates >> e.index) & 1) != 0;
    });
    std::uint32_t size = kXsaveLegacySize;
    for (const auto& e : out) {
      if (e.function == kLeafXsave && e.index >= 2 && e.eax != 0) {
        size = std::max(size, e.ebx + e.eax);  // offset + size of each remaining component
      }
    }
    for (auto& e : out) {
      if (e.function == kLeafXsave && e.index == 0) {
        e.eax &= ~kXcr0AvxStates;
        e.ebx = size;
        e.ecx = size;
      }
    }
  }
  return out;
}

}  // namespace vmm::x86
