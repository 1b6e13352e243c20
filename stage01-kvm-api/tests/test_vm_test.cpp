// test_vm and friends on the real /dev/kvm: output bytes, the exact exit sequence, final registers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>

#include <guest/string_io.hpp>
#include <guest/test_vm.hpp>

#include "test_vm.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::stage01 {
namespace {

TEST(TestVm, PrintsTheSumAndHalts) {
  VMMLAB_REQUIRE_KVM();
  auto vm = TestVm::create(guest::test_vm());
  ASSERT_TRUE(vm) << vm.error().message();
  auto outcome = vm->run();
  ASSERT_TRUE(outcome) << outcome.error().message();
  EXPECT_EQ(outcome->reason, StopReason::Halted) << outcome->detail;
  EXPECT_EQ(outcome->serial_output, "5\n");
}

TEST(TestVm, ExitSequenceIsOutOutHlt) {
  VMMLAB_REQUIRE_KVM();
  auto vm = TestVm::create(guest::test_vm(), {.record_trace = true});
  ASSERT_TRUE(vm);
  auto outcome = vm->run();
  ASSERT_TRUE(outcome);
  const std::vector<std::uint32_t> expected{KVM_EXIT_IO, KVM_EXIT_IO, KVM_EXIT_HLT};
  EXPECT_EQ(outcome->exits, expected);
  ASSERT_EQ(outcome->trace.size(), 3u);
  EXPECT_EQ(outcome->trace[0], "KVM_EXIT_IO out port 0x3f8 size 1 count 1 data 35");
  EXPECT_EQ(outcome->trace[1], "KVM_EXIT_IO out port 0x3f8 size 1 count 1 data 0a");
  EXPECT_EQ(outcome->trace[2], "KVM_EXIT_HLT");
}

TEST(TestVm, FinalRegistersShowWhatTheGuestDid) {
  VMMLAB_REQUIRE_KVM();
  const GuestImage image = guest::test_vm();
  auto vm = TestVm::create(image);
  ASSERT_TRUE(vm);
  ASSERT_TRUE(vm->run());
  auto regs = vm->vcpu().get_regs();
  ASSERT_TRUE(regs);
  EXPECT_EQ(regs->rax & 0xff, static_cast<std::uint64_t>('\n')) << "AL holds the last byte written";
  EXPECT_EQ(regs->rbx, 3u) << "BX is untouched";
  EXPECT_EQ(regs->rdx & 0xffff, 0x3f8u) << "DX is the port";
  // HLT leaves RIP after itself: the image is exactly the code, so RIP ends at the image's end.
  EXPECT_EQ(regs->rip, image.load_address + image.bytes.size());
}

TEST(TestVm, OperandsComeFromTheVmm) {
  VMMLAB_REQUIRE_KVM();
  auto vm = TestVm::create(guest::test_vm(), {.rax = 1, .rbx = 7});
  ASSERT_TRUE(vm);
  auto outcome = vm->run();
  ASSERT_TRUE(outcome);
  EXPECT_EQ(outcome->serial_output, "8\n");
}

TEST(TestVm, StringIoAnswersAndDeliversEveryItem) {
  VMMLAB_REQUIRE_KVM();
  auto vm = TestVm::create(guest::string_io());
  ASSERT_TRUE(vm);
  const std::string message = "0123456789abcdef";
  std::size_t next = 0;
  std::uint32_t largest_in_batch = 0;
  auto outcome = vm->run([&](kvm::IoExit& io) {
    if (io.direction != kvm::IoDirection::In || io.port != 0x3f9) {
      return false;
    }
    largest_in_batch = std::max(largest_in_batch, io.count);
    for (std::uint32_t i = 0; i < io.count; ++i) {  // answer every item, not just the first
      io.item(i)[0] = static_cast<std::uint8_t>(message.at(next++));
    }
    return true;
  });
  ASSERT_TRUE(outcome) << outcome.error().message();
  EXPECT_EQ(outcome->reason, StopReason::Halted) << outcome->detail;
  EXPECT_EQ(next, message.size()) << "REP INSB asked for exactly 16 bytes";
  EXPECT_EQ(outcome->serial_output, message) << "REP OUTSB wrote back what REP INSB read";
  if (std::getenv("VMMLAB_IN_RIG") != nullptr) {
    // A standard KVM batches INS items into one exit; the host's nested KVM emulates one per exit.
    EXPECT_GT(largest_in_batch, 1u) << "expected string I/O with count > 1 on a standard KVM";
  }
}

TEST(TestVm, IoHookSeesExitsBeforeTheDefaultHandling) {
  VMMLAB_REQUIRE_KVM();
  auto vm = TestVm::create(guest::test_vm());
  ASSERT_TRUE(vm);
  std::string hooked;
  auto outcome = vm->run([&](kvm::IoExit& io) {
    hooked.push_back(static_cast<char>(io.data[0]));
    return io.data[0] == '5';  // swallow the digit, let the newline through
  });
  ASSERT_TRUE(outcome);
  EXPECT_EQ(hooked, "5\n");
  EXPECT_EQ(outcome->serial_output, "\n");
}

TEST(TestVm, ExitLimitStopsARunawayGuest) {
  VMMLAB_REQUIRE_KVM();
  auto vm = TestVm::create(guest::string_io());
  ASSERT_TRUE(vm);
  auto outcome = vm->run({}, 2);
  ASSERT_TRUE(outcome);
  EXPECT_EQ(outcome->reason, StopReason::ExitLimit);
  EXPECT_EQ(outcome->exits.size(), 2u);
}

}  // namespace
}  // namespace vmm::stage01
