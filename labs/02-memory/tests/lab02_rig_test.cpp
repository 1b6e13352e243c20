// Lab 02, exercise 3 on a running guest: the checksum guest on the learner's 1 GiB-page tables.
//
// Runs in the rig only (tests/CMakeLists: RIG_ONLY). The host's nested KVM (kvm_pvm) leaves PDPE1GB out of
// KVM_GET_SUPPORTED_CPUID although the CPU has it, and without PDPE1GB a PS bit in a PDPTE is a reserved-bit page
// fault. The rig's EPYC CPU offers it, so there the test runs for real and nothing is skipped.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <vector>

#include <guest/checksum.hpp>

#include "lab02.hpp"
#include "long_mode_vm.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/testing/kvm.hpp"

namespace {

using vmm::memory::GuestAddress;
using vmm::stage02::LongModeVm;
namespace layout = vmm::stage02::layout;

bool host_has_1g_pages() {
  auto kvm = vmm::kvm::Kvm::open();
  if (!kvm) {
    return false;
  }
  auto cpuid = kvm->supported_cpuid();
  if (!cpuid) {
    return false;
  }
  return std::ranges::any_of(*cpuid, [](const kvm_cpuid_entry2& e) {
    return e.function == 0x80000001 && (e.edx & (1u << 26)) != 0;  // PDPE1GB
  });
}

TEST(Exercise3, TheChecksumGuestRunsOnThem) {
  VMMLAB_REQUIRE_KVM();
  auto vm = LongModeVm::create(vmm::guest::checksum());
  ASSERT_TRUE(vm) << vm.error().message();
  const auto input = vmm::stage02::input_pattern(4096, 5);
  ASSERT_TRUE(vm->set_input(input));

  constexpr GuestAddress kTables(0x20000);  // free: between the stage02 tables (0x9000..0xefff) and the guest (1 MiB)
  auto tables = lab02::write_identity_page_tables_1g(vm->memory(), kTables, 4ull << 30);
  ASSERT_TRUE(tables) << tables.error().message();
  ASSERT_EQ(tables->pages.size(), 2u);
  ASSERT_TRUE(host_has_1g_pages()) << "this KVM offers no 1 GiB pages (CPUID 0x80000001 EDX bit 26, PDPE1GB): "
                                      "run this test in the rig (tools/rig), whose CPU has them";
  // Wipe stage02's 2 MiB tables, so a guest that still walked them could not run, and point CR3 at the new ones.
  for (auto page : vm->page_tables().pages) {
    ASSERT_TRUE(vm->memory().write(page, std::vector<std::byte>(4096)));
  }
  auto sregs = vm->vcpu().get_sregs();
  ASSERT_TRUE(sregs);
  sregs->cr3 = tables->pml4.raw();
  ASSERT_TRUE(vm->vcpu().set_sregs(*sregs));

  auto outcome = vm->run();
  ASSERT_TRUE(outcome) << outcome.error().message();
  ASSERT_EQ(outcome->reason, vmm::stage01::StopReason::Halted) << outcome->detail;
  EXPECT_EQ(vm->report().exit_status, 0u);
  auto result = vm->memory().read_obj<std::uint64_t>(GuestAddress(layout::kResult));
  ASSERT_TRUE(result);
  EXPECT_EQ(*result, vmm::stage02::fnv1a64(input));
  auto after = vm->vcpu().get_sregs();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->cr3, kTables.raw()) << "the guest ran on the 1 GiB tables";
}

}  // namespace
