// Lab 09, exercise 3: reference solution.
#include "lab09.hpp"

namespace lab09 {

kvm_cpuid_entry2 cpuid_leaf1(const kvm_cpuid_entry2& supported, std::uint32_t index, std::uint32_t count) {
  kvm_cpuid_entry2 entry = supported;
  entry.ebx = (entry.ebx & 0xffffu) | (index << 24) | ((count & 0xffu) << 16);
  entry.edx = count > 1 ? entry.edx | (1u << 28) : entry.edx & ~(1u << 28);
  entry.ecx |= 1u << 31;
  return entry;
}

}  // namespace lab09
