// The CPUID each vCPU sees, from a made-up KVM_GET_SUPPORTED_CPUID list: the fields are checked against the Intel
// SDM (vol. 2A, "CPUID") and the AMD APM (vol. 3, appendix E), not against what the code happens to produce.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "vmm/x86/cpuid.hpp"

namespace vmm::x86 {
namespace {

kvm_cpuid_entry2 leaf(std::uint32_t function, std::uint32_t index, std::uint32_t eax, std::uint32_t ebx,
                      std::uint32_t ecx, std::uint32_t edx) {
  kvm_cpuid_entry2 e{};
  e.function = function;
  e.index = index;
  // Leaves 0xb and 0xd have subleaves: KVM marks them so the index matters.
  e.flags = (function == 0xb || function == 0xd || function == 0x1f) ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
  e.eax = eax;
  e.ebx = ebx;
  e.ecx = ecx;
  e.edx = edx;
  return e;
}

auto fields(const kvm_cpuid_entry2& e) {
  return std::make_tuple(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx);
}

// Bits used below, named as in the SDM and APM.
constexpr std::uint32_t kSse3 = 1u << 0;         // leaf 1 ECX
constexpr std::uint32_t kVmx = 1u << 5;          // leaf 1 ECX
constexpr std::uint32_t kXsave = 1u << 26;       // leaf 1 ECX
constexpr std::uint32_t kAvx = 1u << 28;         // leaf 1 ECX
constexpr std::uint32_t kHypervisor = 1u << 31;  // leaf 1 ECX
constexpr std::uint32_t kHtt = 1u << 28;         // leaf 1 EDX
constexpr std::uint32_t kLahf = 1u << 0;         // 0x80000001 ECX
constexpr std::uint32_t kSvm = 1u << 2;          // 0x80000001 ECX
constexpr std::uint32_t kAbm = 1u << 5;          // 0x80000001 ECX
constexpr std::uint32_t kTopoext = 1u << 22;     // 0x80000001 ECX

// XSAVE state components (SDM vol. 1, 13.2): x87, SSE, AVX (YMM), AVX-512 (opmask, ZMM_Hi256, Hi16_ZMM), PKRU;
// their sizes and standard-format offsets are those of a real AVX-512 CPU.
constexpr std::uint32_t kXcr0 = 0x3 | 0x4 | 0xe0 | 0x200;
constexpr std::uint32_t kXsaveAll = 2688 + 8;  // PKRU, the last component, ends at 2696

// What KVM might report on an Intel host with 16 logical CPUs (host APIC ID 0xab) that also lists AMD leaves, as a
// nested KVM can.
std::vector<kvm_cpuid_entry2> supported(bool avx, bool pkru = true) {
  const std::uint32_t xcr0 = pkru ? kXcr0 : kXcr0 & ~0x200u;
  const std::uint32_t size = pkru ? kXsaveAll : 1664 + 1024;
  std::vector<kvm_cpuid_entry2> s{
      leaf(0x0, 0, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69),  // "GenuineIntel"
      leaf(0x1, 0, 0x000806ec, 0xab100800, kSse3 | kVmx | kXsave | (avx ? kAvx : 0), 0x078bfbff),
      leaf(0xb, 0, 1, 2, 0x0100, 0xab),
      leaf(0xb, 1, 4, 16, 0x0201, 0xab),
      leaf(0xb, 2, 0, 0, 0x0002, 0xab),
      leaf(0xd, 0, xcr0, size, size, 0),
      leaf(0xd, 1, 0xf, 0, 0, 0),
      leaf(0xd, 2, 256, 576, 0, 0),                                   // YMM_Hi128
      leaf(0xd, 5, 64, 1088, 0, 0),                                   // opmask
      leaf(0xd, 6, 512, 1152, 0, 0),                                  // ZMM_Hi256
      leaf(0xd, 7, 1024, 1664, 0, 0),                                 // Hi16_ZMM
      leaf(0x40000000, 0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d),  // "KVMKVMKVM"
      leaf(0x80000000, 0, 0x8000001e, 0, 0, 0),
      leaf(0x80000001, 0, 0, 0, kLahf | kSvm | kAbm | kTopoext, 0x2c100800),
      leaf(0x80000008, 0, 0x3030, 0, 0x0001700f, 0),
      leaf(0x8000001e, 0, 0xab, 0x0100, 0, 0),
  };
  if (pkru) {
    s.push_back(leaf(0xd, 9, 8, 2688, 0, 0));
  }
  return s;
}

std::optional<kvm_cpuid_entry2> find(const std::vector<kvm_cpuid_entry2>& entries, std::uint32_t function,
                                     std::uint32_t index = 0) {
  const auto it = std::find_if(entries.begin(), entries.end(),
                               [&](const auto& e) { return e.function == function && e.index == index; });
  return it == entries.end() ? std::nullopt : std::optional(*it);
}

TEST(Cpuid, Leaf1CarriesTheApicIdAndCpuCountAndSaysHypervisor) {
  const auto out = cpuid_for_vcpu(supported(true), 3, 4);
  const auto l1 = find(out, 0x1);
  ASSERT_TRUE(l1);
  EXPECT_EQ(l1->ebx >> 24, 3u) << "EBX[31:24]: initial APIC ID";
  EXPECT_EQ((l1->ebx >> 16) & 0xff, 4u) << "EBX[23:16]: logical processors in the package";
  EXPECT_EQ(l1->ebx & 0xffff, 0x0800u) << "CLFLUSH line size and brand index as the host's";
  EXPECT_NE(l1->edx & kHtt, 0u) << "HTT: EBX[23:16] is valid";
  EXPECT_NE(l1->ecx & kHypervisor, 0u);
  EXPECT_EQ(l1->ecx & kVmx, 0u) << "no nested virtualization";
  EXPECT_EQ(l1->ecx & (kSse3 | kXsave | kAvx), kSse3 | kXsave | kAvx) << "other features untouched";
  EXPECT_EQ(l1->eax, 0x000806ecu) << "family/model/stepping untouched";
  EXPECT_EQ(l1->edx & ~kHtt, 0x078bfbffu);
}

TEST(Cpuid, Leaf0xbDescribesOneThreadPerCoreAndAllCoresInOnePackage) {
  const auto out = cpuid_for_vcpu(supported(true), 3, 4);
  const auto smt = find(out, 0xb, 0);
  const auto core = find(out, 0xb, 1);
  const auto end = find(out, 0xb, 2);
  ASSERT_TRUE(smt && core && end);
  for (const auto& e : {*smt, *core, *end}) {
    EXPECT_EQ(e.edx, 3u) << "EDX: x2APIC ID of this vCPU, on every subleaf " << e.index;
    EXPECT_EQ(e.ecx & 0xff, e.index) << "ECX[7:0]: the subleaf number";
  }
  EXPECT_EQ((smt->ecx >> 8) & 0xff, 1u) << "level type SMT";
  EXPECT_EQ(smt->ebx & 0xffff, 1u) << "one logical processor per core";
  EXPECT_EQ(smt->eax & 0x1f, 0u) << "no APIC ID bits for threads";
  EXPECT_EQ((core->ecx >> 8) & 0xff, 2u) << "level type Core";
  EXPECT_EQ(core->ebx & 0xffff, 4u) << "four logical processors in the package";
  EXPECT_EQ(core->eax & 0x1f, 2u) << "APIC ID >> 2 is the package ID: 2 bits number 4 cores";
  EXPECT_EQ((end->ecx >> 8) & 0xff, 0u) << "level type invalid: the enumeration ends";
  EXPECT_EQ(end->ebx & 0xffff, 0u);
}

TEST(Cpuid, ANonPowerOfTwoCountRoundsTheApicIdBitsUp) {
  // Five cores need 3 bits of APIC ID (ceil(log2 5)); a single vCPU needs none.
  const auto five = cpuid_for_vcpu(supported(true), 4, 5);
  EXPECT_EQ(find(five, 0xb, 1)->eax & 0x1f, 3u);
  EXPECT_EQ(find(five, 0xb, 1)->ebx & 0xffff, 5u);
  EXPECT_EQ((find(five, 0x80000008)->ecx >> 12) & 0xf, 3u);
  EXPECT_EQ(find(five, 0x80000008)->ecx & 0xff, 4u);
  const auto one = cpuid_for_vcpu(supported(true), 0, 1);
  EXPECT_EQ(find(one, 0xb, 1)->eax & 0x1f, 0u);
  EXPECT_EQ(find(one, 0xb, 1)->ebx & 0xffff, 1u);
  EXPECT_EQ(find(one, 0x80000008)->ecx & 0xff, 0u) << "NC = cores - 1";
  EXPECT_EQ((find(one, 0x1)->ebx >> 24), 0u);
}

TEST(Cpuid, AmdLeavesHideTheHostsTopologyAndSvm) {
  const auto out = cpuid_for_vcpu(supported(true), 3, 4);
  const auto ext = find(out, 0x80000001);
  ASSERT_TRUE(ext);
  EXPECT_EQ(ext->ecx & (kSvm | kTopoext), 0u) << "no AMD-V; no TOPOEXT, so Linux does not read 0x8000001e";
  EXPECT_EQ(ext->ecx & (kLahf | kAbm), kLahf | kAbm) << "other features untouched";
  EXPECT_EQ(ext->edx, 0x2c100800u);
  EXPECT_FALSE(find(out, 0x8000001e).has_value()) << "the host's core/node IDs are not the guest's";
  const auto sizes = find(out, 0x80000008);
  ASSERT_TRUE(sizes);
  EXPECT_EQ(sizes->ecx & 0xff, 3u) << "ECX[7:0] NC: number of cores - 1";
  EXPECT_EQ((sizes->ecx >> 12) & 0xf, 2u) << "ECX[15:12] ApicIdSize: 2 bits for 4 cores";
  EXPECT_EQ(sizes->eax, 0x3030u) << "address sizes untouched";
}

TEST(Cpuid, OtherLeavesPassThroughUnchanged) {
  const auto in = supported(true);
  const auto out = cpuid_for_vcpu(in, 3, 4);
  for (const std::uint32_t function : {0x0u, 0x40000000u, 0x80000000u}) {
    ASSERT_TRUE(find(out, function)) << std::hex << function;
    EXPECT_EQ(fields(*find(out, function)), fields(*find(in, function))) << std::hex << function;
  }
  EXPECT_EQ(out.size(), in.size() - 1) << "only 0x8000001e removed";
}

TEST(Cpuid, WithAvxTheXsaveLeafIsUnchanged) {
  const auto in = supported(true);
  const auto out = cpuid_for_vcpu(in, 3, 4);
  for (const std::uint32_t index : {0u, 1u, 2u, 5u, 6u, 7u, 9u}) {
    const auto e = find(out, 0xd, index);
    ASSERT_TRUE(e) << "subleaf " << index;
    EXPECT_EQ(fields(*e), fields(*find(in, 0xd, index))) << "subleaf " << index;
  }
}

TEST(Cpuid, WithoutAvxTheAvxStateComponentsGoAndTheSizesShrink) {
  // A CPU without AVX cannot have YMM or AVX-512 state: subleaves 2 and 5-7 go, and XCR0's mask with them. PKRU
  // stays at its standard-format offset 2688, so the area still ends at 2688 + 8.
  const auto in = supported(false);
  const auto out = cpuid_for_vcpu(in, 3, 4);
  for (const std::uint32_t index : {2u, 5u, 6u, 7u}) {
    EXPECT_FALSE(find(out, 0xd, index).has_value()) << "subleaf " << index;
  }
  const auto xsave = find(out, 0xd, 0);
  ASSERT_TRUE(xsave);
  EXPECT_EQ(xsave->eax, 0x3u | 0x200u) << "EAX: the XCR0 bits the guest may set: x87, SSE, PKRU";
  EXPECT_EQ(xsave->ebx, 2696u) << "EBX: size for those components";
  EXPECT_EQ(xsave->ecx, 2696u) << "ECX: size for all supported components";
  EXPECT_EQ(fields(*find(out, 0xd, 1)), fields(*find(in, 0xd, 1)));
  EXPECT_EQ(fields(*find(out, 0xd, 9)), fields(*find(in, 0xd, 9)));
}

TEST(Cpuid, WithoutAvxOrPkruTheXsaveAreaIsTheLegacyAreaAndHeader) {
  // 512 bytes of x87/SSE state and the 64-byte XSAVE header.
  const auto out = cpuid_for_vcpu(supported(false, false), 0, 1);
  const auto xsave = find(out, 0xd, 0);
  ASSERT_TRUE(xsave);
  EXPECT_EQ(xsave->eax, 0x3u);
  EXPECT_EQ(xsave->ebx, 512u + 64u);
  EXPECT_EQ(xsave->ecx, 512u + 64u);
}

TEST(Cpuid, ATopologyLeafWithOnlyItsSmtSubleafGainsTheCoreLevel) {
  // Leaf 0x1f (V2 topology, same format as 0xb) listed with subleaf 0 only.
  auto in = supported(true);
  in.push_back(leaf(0x1f, 0, 1, 2, 0x0100, 0xab));
  const auto out = cpuid_for_vcpu(in, 2, 4);
  const auto core = find(out, 0x1f, 1);
  ASSERT_TRUE(core) << "the core level must exist, or the guest sees SMT siblings and no cores";
  EXPECT_EQ((core->ecx >> 8) & 0xff, 2u);
  EXPECT_EQ(core->ecx & 0xff, 1u);
  EXPECT_EQ(core->ebx & 0xffff, 4u);
  EXPECT_EQ(core->eax & 0x1f, 2u);
  EXPECT_EQ(core->edx, 2u);
  EXPECT_NE(core->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0u);
  EXPECT_EQ(find(out, 0x1f, 0)->edx, 2u);
}

}  // namespace
}  // namespace vmm::x86
