// The state vcpu_init gives a vCPU, read back from KVM with the GET ioctls: MSRs, FPU, the local APIC's LINT
// pins and the registers of the 64-bit boot protocol (Documentation/x86/boot.rst; Intel SDM vol. 3A and 4).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "vmm/boot/layout.hpp"
#include "vmm/devices/kvm_irq_line.hpp"
#include "vmm/fd.hpp"
#include "vmm/flex_array.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/testing/kvm.hpp"
#include "vmm/testing/result.hpp"
#include "vmm/x86/cpuid.hpp"
#include "vmm/x86/long_mode.hpp"
#include "vmm/x86/vcpu_init.hpp"

namespace vmm::x86 {
namespace {

using ::testing::HasSubstr;
using vmm::testing::error_of;

TEST(BootMsrs, CoverTheSyscallMsrsTheTscMiscEnableAndMtrrs) {
  // No KVM needed: the list itself.
  std::vector<std::uint32_t> indices;
  for (const auto& e : boot_msrs()) {
    indices.push_back(e.index);
  }
  std::sort(indices.begin(), indices.end());
  // msr-index.h: TSC, SYSENTER_CS/ESP/EIP, MISC_ENABLE, MTRRdefType, STAR, LSTAR, CSTAR, SYSCALL_MASK,
  // KERNEL_GS_BASE.
  const std::vector<std::uint32_t> expected{0x10,       0x174,      0x175,      0x176,      0x1a0,     0x2ff,
                                            0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102};
  EXPECT_EQ(indices, expected);
}

// A VM with the in-kernel irqchip and vCPU 1, an application processor: KVM resets an AP's local APIC with LINT0
// and LINT1 masked and in fixed delivery mode, unlike the BSP's LINT0, so set_lapic_lints has something to change.
class VcpuInit : public ::testing::Test {
 protected:
  static constexpr std::uint32_t kVcpu = 1;

  void SetUp() override {
    VMMLAB_REQUIRE_KVM();
    auto kvm = kvm::Kvm::open();
    ASSERT_TRUE(kvm) << kvm.error().message();
    kvm_.emplace(std::move(*kvm));
    auto vm = kvm_->create_vm();
    ASSERT_TRUE(vm) << vm.error().message();
    vm_.emplace(std::move(*vm));
    ASSERT_TRUE(vm_->set_tss_address(boot::layout::kTss));
    auto irqchip = devices::create_irqchip(*vm_);
    ASSERT_TRUE(irqchip) << irqchip.error().message();
    auto vcpu = vm_->create_vcpu(kVcpu);
    ASSERT_TRUE(vcpu) << vcpu.error().message();
    vcpu_.emplace(std::move(*vcpu));
    // KVM refuses long mode to a CPU whose CPUID lacks it; the filtered CPUID must be acceptable to KVM anyway.
    auto supported = kvm_->supported_cpuid();
    ASSERT_TRUE(supported) << supported.error().message();
    auto cpuid = set_cpuid(*vcpu_, cpuid_for_vcpu(*supported, kVcpu, 2));
    ASSERT_TRUE(cpuid) << cpuid.error().message();
  }

  // KVM_GET_MSRS for one MSR. kvm_msrs ends in a flexible array (vmm/flex_array.hpp): an 8-byte header, the
  // entries right after it, and an ioctl number that encodes those 8 bytes.
  std::optional<std::uint64_t> get_msr(std::uint32_t index) {
    constexpr std::size_t kHeader = 2 * sizeof(std::uint32_t);
    FlexArrayBuffer<kvm_msrs, kvm_msr_entry> buffer(kHeader, 1);
    buffer.header()->nmsrs = 1;
    buffer.entries()[0].index = index;
    auto read = ioctl(vcpu_->fd(), with_ioctl_size(KVM_GET_MSRS, kHeader), "KVM_GET_MSRS", buffer.header());
    EXPECT_TRUE(read) << read.error().message();
    if (!read || *read != 1) {
      return std::nullopt;
    }
    return buffer.entries()[0].data;
  }

  std::uint32_t lapic_register(std::size_t offset) {
    kvm_lapic_state state{};
    EXPECT_TRUE(VMM_IOCTL(vcpu_->fd(), KVM_GET_LAPIC, &state));
    std::uint32_t value = 0;
    std::memcpy(&value, state.regs + offset, sizeof value);
    return value;
  }

  std::optional<kvm::Kvm> kvm_;
  std::optional<kvm::Vm> vm_;
  std::optional<kvm::Vcpu> vcpu_;
};

TEST_F(VcpuInit, BootMsrsReadBackWithWriteBackMtrrsAndFastStrings) {
  // Before: KVM's reset values (MTRRs off, fast strings off), so the checks below see set_msrs' work.
  EXPECT_EQ(get_msr(msr::kMtrrDefType).value_or(~0ull) & (1u << 11), 0u);
  auto rc = set_msrs(*vcpu_, boot_msrs());
  ASSERT_TRUE(rc) << rc.error().message();
  const auto mtrr = get_msr(0x2ff);
  ASSERT_TRUE(mtrr);
  EXPECT_NE(*mtrr & (1u << 11), 0u) << "MTRRdefType.E: MTRRs enabled";
  EXPECT_EQ(*mtrr & 0xff, 6u) << "MTRRdefType.Type: write-back by default";
  const auto misc = get_msr(0x1a0);
  ASSERT_TRUE(misc);
  EXPECT_NE(*misc & 1, 0u) << "MISC_ENABLE bit 0: fast strings";
  EXPECT_EQ(get_msr(0xc0000082).value_or(~0ull), 0u) << "LSTAR: Linux programs it";
  EXPECT_EQ(get_msr(0x174).value_or(~0ull), 0u) << "SYSENTER_CS";
}

TEST_F(VcpuInit, AnMsrKvmRefusesIsNamed) {
  // With kvm.ignore_msrs=1 KVM accepts (and ignores) any MSR: nothing to refuse.
  std::ifstream ignore("/sys/module/kvm/parameters/ignore_msrs");
  std::string value;
  if (ignore >> value && value == "Y") {
    GTEST_SKIP() << "kvm.ignore_msrs=Y: KVM accepts every MSR";
  }
  // The first is fine, the second does not exist: KVM_SET_MSRS stops there and returns 1.
  std::vector<kvm_msr_entry> msrs(2);
  msrs[0].index = msr::kStar;
  msrs[1].index = 0xdeadbeef;
  msrs[1].data = 1;
  EXPECT_THAT(error_of(set_msrs(*vcpu_, msrs)), HasSubstr("KVM refused MSR 0xdeadbeef (set 1 of 2)"));
}

TEST_F(VcpuInit, BootFpuIsTheStateAfterFninitWithMxcsrAtReset) {
  // Start from another control word, so the result is set_boot_fpu's and not KVM's reset state.
  kvm_fpu other{};
  other.fcw = 0x27f;
  ASSERT_TRUE(VMM_IOCTL(vcpu_->fd(), KVM_SET_FPU, &other));
  auto rc = set_boot_fpu(*vcpu_);
  ASSERT_TRUE(rc) << rc.error().message();
  kvm_fpu fpu{};
  ASSERT_TRUE(VMM_IOCTL(vcpu_->fd(), KVM_GET_FPU, &fpu));
  EXPECT_EQ(fpu.fcw, 0x37f) << "SDM: FNINIT sets FCW to 0x37f (all exceptions masked, 64-bit precision)";
  // KVM_GET_FPU and KVM_SET_FPU do not carry MXCSR (arch/x86/kvm/x86.c copies every field of struct kvm_fpu but
  // that one): the guest's MXCSR is in the legacy region of its XSAVE area, at byte 24 (SDM vol. 1, 10.5.1).
  constexpr std::size_t kXsaveBytes = sizeof(kvm_xsave::region);
  std::vector<std::uint32_t> xsave(kXsaveBytes / 4);
  ASSERT_TRUE(ioctl(vcpu_->fd(), with_ioctl_size(KVM_GET_XSAVE, kXsaveBytes), "KVM_GET_XSAVE", xsave.data()));
  EXPECT_EQ(xsave[24 / 4], 0x1f80u) << "SDM: MXCSR's power-up value, all SSE exceptions masked";
}

TEST_F(VcpuInit, LapicLint0DeliversExtIntAndLint1Nmi) {
  constexpr std::uint32_t kMode = 0x700;  // LVT bits 10:8, delivery mode
  const auto lint0_before = lapic_register(0x350);
  const auto lint1_before = lapic_register(0x360);
  auto rc = set_lapic_lints(*vcpu_);
  ASSERT_TRUE(rc) << rc.error().message();
  const auto lint0 = lapic_register(0x350);
  const auto lint1 = lapic_register(0x360);
  EXPECT_EQ(lint0 & kMode, 0x700u) << "ExtINT: the 8259's output, as the MP table's local interrupt entry says";
  EXPECT_EQ(lint1 & kMode, 0x400u) << "NMI";
  EXPECT_EQ(lint0 & ~kMode, lint0_before & ~kMode) << "only the delivery mode changes";
  EXPECT_EQ(lint1 & ~kMode, lint1_before & ~kMode);
}

TEST_F(VcpuInit, BootRegistersAreThe64BitBootProtocols) {
  const BootEntry entry{.rip = 0x100200,
                        .boot_params = boot::layout::kZeroPage,
                        .stack_top = boot::layout::kStackTop,
                        .gdt = memory::GuestAddress{boot::layout::kGdt},
                        .page_tables = memory::GuestAddress{boot::layout::kPageTables}};
  auto rc = set_boot_registers(*vcpu_, entry);
  ASSERT_TRUE(rc) << rc.error().message();
  auto sregs = vcpu_->get_sregs();
  ASSERT_TRUE(sregs) << sregs.error().message();
  // boot.rst: "__BOOT_CS(0x10) ... __BOOT_DS(0x18)", long mode with paging, identity-mapped.
  EXPECT_EQ(sregs->cs.selector, 0x10);
  EXPECT_EQ(sregs->cs.l, 1) << "64-bit code segment";
  EXPECT_EQ(sregs->cs.db, 0);
  for (const auto* seg : {&sregs->ds, &sregs->es, &sregs->ss}) {
    EXPECT_EQ(seg->selector, 0x18);
  }
  constexpr std::uint64_t kLme = 1u << 8, kLma = 1u << 10;
  EXPECT_EQ(sregs->efer & (kLme | kLma), kLme | kLma);
  constexpr std::uint64_t kPe = 1u << 0, kPg = 1u << 31;
  EXPECT_EQ(sregs->cr0 & (kPe | kPg), kPe | kPg);
  EXPECT_NE(sregs->cr4 & (1u << 5), 0u) << "PAE";
  EXPECT_EQ(sregs->cr3, boot::layout::kPageTables);
  EXPECT_EQ(sregs->gdt.base, boot::layout::kGdt);
  EXPECT_EQ(sregs->gdt.limit, 4 * 8 - 1) << "null, null, __BOOT_CS, __BOOT_DS";

  auto regs = vcpu_->get_regs();
  ASSERT_TRUE(regs) << regs.error().message();
  EXPECT_EQ(regs->rip, 0x100200u);
  EXPECT_EQ(regs->rsi, boot::layout::kZeroPage) << "RSI: the zero page";
  EXPECT_EQ(regs->rsp, boot::layout::kStackTop);
  EXPECT_EQ(regs->rflags & (1u << 9), 0u) << "interrupts disabled";
  EXPECT_NE(regs->rflags & (1u << 1), 0u) << "bit 1 is always 1";
}

TEST_F(VcpuInit, LapicLintsNeedTheInKernelIrqchip) {
  // Another VM, this one without KVM_CREATE_IRQCHIP: its vCPUs have no local APIC in the kernel to program.
  auto bare = kvm_->create_vm();
  ASSERT_TRUE(bare) << bare.error().message();
  auto vcpu = bare->create_vcpu(0);
  ASSERT_TRUE(vcpu) << vcpu.error().message();
  EXPECT_THAT(error_of(set_lapic_lints(*vcpu)), HasSubstr("needs the in-kernel irqchip"));
}

}  // namespace
}  // namespace vmm::x86
