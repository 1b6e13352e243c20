// Lab 09, exercise 3: CPUID leaf 1 per vCPU. See labs/09-final-vmm/README.md.
#include "lab09.hpp"

namespace lab09 {

kvm_cpuid_entry2 cpuid_leaf1(const kvm_cpuid_entry2& supported, std::uint32_t index, std::uint32_t count) {
  // TODO: which bits of EBX hold the APIC ID and the processor count? Which bit of EDX says the count is valid?
  (void)index;
  (void)count;
  return supported;
}

}  // namespace lab09
