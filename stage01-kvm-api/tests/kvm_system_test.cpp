// The system and VM descriptors against the real /dev/kvm.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>

#include "vmm/kvm/kvm.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::kvm {
namespace {

TEST(KvmSystem, ApiVersionIsTwelve) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = Kvm::open();
  ASSERT_TRUE(kvm) << kvm.error().message();
  auto version = kvm->api_version();
  ASSERT_TRUE(version);
  EXPECT_EQ(*version, 12);
}

TEST(KvmSystem, CapabilitiesThisProjectNeedsArePresent) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = Kvm::open();
  ASSERT_TRUE(kvm);
  for (int cap : {KVM_CAP_USER_MEMORY, KVM_CAP_IRQCHIP, KVM_CAP_IOEVENTFD, KVM_CAP_IRQFD, KVM_CAP_SET_TSS_ADDR}) {
    EXPECT_TRUE(kvm->require_extension(cap)) << capability_name(cap);
  }
  auto memslots = kvm->check_extension(KVM_CAP_NR_MEMSLOTS);
  ASSERT_TRUE(memslots);
  EXPECT_GE(*memslots, 32) << "KVM_CAP_NR_MEMSLOTS answers with the number of slots";
}

TEST(KvmSystem, MissingCapabilityIsNamed) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = Kvm::open();
  ASSERT_TRUE(kvm);
  // Capability numbers are small; no kernel will ever have 0x7fffffff.
  auto rc = kvm->require_extension(0x7fffffff);
  ASSERT_FALSE(rc);
  EXPECT_EQ(rc.error().message(), "KVM_CHECK_EXTENSION: this host's KVM lacks KVM_CAP_2147483647");
}

TEST(KvmSystem, VcpuMmapSizeCoversRunPageAndPioPage) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = Kvm::open();
  ASSERT_TRUE(kvm);
  auto size = kvm->vcpu_mmap_size();
  ASSERT_TRUE(size);
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  EXPECT_GE(*size, 2 * page) << "kvm_run page plus the PIO data page at KVM_PIO_PAGE_OFFSET";
  EXPECT_EQ(*size % page, 0u);
}

TEST(KvmSystem, SupportedCpuidHasVendorLeaf) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = Kvm::open();
  ASSERT_TRUE(kvm);
  auto cpuid = kvm->supported_cpuid();
  ASSERT_TRUE(cpuid) << cpuid.error().message();
  auto leaf0 = std::ranges::find(*cpuid, 0u, &kvm_cpuid_entry2::function);
  ASSERT_NE(leaf0, cpuid->end());
  EXPECT_GE(leaf0->eax, 1u) << "leaf 0 EAX is the highest basic leaf";
  EXPECT_TRUE(std::ranges::any_of(*cpuid, [](const auto& e) { return e.function == 1; }));
}

TEST(KvmVm, CreatesVcpusWithDistinctIds) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = Kvm::open();
  ASSERT_TRUE(kvm);
  auto vm = kvm->create_vm();
  ASSERT_TRUE(vm) << vm.error().message();
  auto v0 = vm->create_vcpu(0);
  auto v1 = vm->create_vcpu(1);
  ASSERT_TRUE(v0 && v1);
  EXPECT_EQ(v1->id(), 1u);
  auto again = vm->create_vcpu(0);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().message(), "KVM_CREATE_VCPU: EEXIST (vCPU 0)");
}

TEST(KvmVm, NewVcpuStartsAtTheResetVector) {
  VMMLAB_REQUIRE_KVM();
  auto kvm = Kvm::open();
  ASSERT_TRUE(kvm);
  auto vm = kvm->create_vm();
  ASSERT_TRUE(vm);
  auto vcpu = vm->create_vcpu(0);
  ASSERT_TRUE(vcpu);
  auto regs = vcpu->get_regs();
  auto sregs = vcpu->get_sregs();
  ASSERT_TRUE(regs && sregs);
  // The architectural reset state: CS.base 0xffff0000 + IP 0xfff0 = 0xfffffff0, 16 bytes below 4 GiB.
  EXPECT_EQ(regs->rip, 0xfff0u);
  EXPECT_EQ(sregs->cs.selector, 0xf000);
  EXPECT_EQ(sregs->cs.base, 0xffff0000u);
  EXPECT_EQ(regs->rflags, 0x2u);
  EXPECT_EQ(sregs->cr0 & 1, 0u) << "protection disabled: real mode";
}

}  // namespace
}  // namespace vmm::kvm
