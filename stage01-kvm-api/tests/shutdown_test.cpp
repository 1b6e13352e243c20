// A guest that triple-faults: KVM_EXIT_SHUTDOWN, and the VMM stops with the state reported. Runs in the rig only
// (see CMakeLists.txt): the host's nested KVM never reports the shutdown.
#include <gtest/gtest.h>

#include <guest/triple_fault.hpp>

#include "test_vm.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::stage01 {
namespace {

TEST(GuestDeath, TripleFaultEndsInShutdownWithTheStateReported) {
  VMMLAB_REQUIRE_KVM();
  auto vm = TestVm::create(guest::triple_fault());
  ASSERT_TRUE(vm) << vm.error().message();
  auto outcome = vm->run();
  ASSERT_TRUE(outcome) << outcome.error().message();
  EXPECT_EQ(outcome->reason, StopReason::Shutdown) << outcome->detail;
  ASSERT_EQ(outcome->exits.size(), 1u) << "the guest does no I/O before it dies";
  EXPECT_EQ(outcome->exits.back(), static_cast<std::uint32_t>(KVM_EXIT_SHUTDOWN));
  EXPECT_EQ(outcome->detail.rfind("KVM_EXIT_SHUTDOWN (triple fault)\nvCPU 0 registers:\nrip ", 0), 0u)
      << outcome->detail;
  EXPECT_NE(outcome->detail.find("cr0 "), std::string::npos) << "control registers are part of the report";
}

}  // namespace
}  // namespace vmm::stage01
