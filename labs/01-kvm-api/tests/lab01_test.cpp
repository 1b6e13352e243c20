// Lab 01's checks. Built twice: against your code in exercises/ (lab01_tests_exercises) and against the reference
// in solutions/ (lab01_tests_solutions). See labs/01-kvm-api/README.md.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include <guest/read_switch.hpp>
#include <guest/test_vm.hpp>
#include LAB01_SUM_GUEST_HEADER

#include "lab01.hpp"
#include "test_vm.hpp"
#include "vmm/testing/kvm.hpp"

namespace {

using vmm::stage01::StopReason;
using vmm::stage01::TestVm;

// ---- Exercise 1: the guest prints AL + BL in decimal ------------------------------------------------------------

struct SumCase {
  std::uint64_t a, b;
  std::string expected;
};

TEST(Exercise1, PrintsEverySumInDecimal) {
  VMMLAB_REQUIRE_KVM();
  const std::vector<SumCase> cases{{2, 3, "5\n"},    {0, 0, "0\n"},      {17, 25, "42\n"},
                                   {99, 1, "100\n"}, {200, 55, "255\n"}, {255, 255, "510\n"}};
  for (const auto& c : cases) {
    auto vm = TestVm::create(LAB01_SUM_GUEST(), {.rax = c.a, .rbx = c.b});
    ASSERT_TRUE(vm) << vm.error().message();
    auto outcome = vm->run();
    ASSERT_TRUE(outcome) << outcome.error().message();
    EXPECT_EQ(outcome->reason, StopReason::Halted) << c.a << " + " << c.b << ": " << outcome->detail;
    EXPECT_EQ(outcome->serial_output, c.expected) << c.a << " + " << c.b;
  }
}

TEST(Exercise1, OneExitPerCharacterThenHlt) {
  VMMLAB_REQUIRE_KVM();
  auto vm = TestVm::create(LAB01_SUM_GUEST(), {.rax = 200, .rbx = 55});
  ASSERT_TRUE(vm);
  auto outcome = vm->run();
  ASSERT_TRUE(outcome);
  // "255\n" is four OUTs of one byte each, then HLT: the exit count is part of the contract.
  const std::vector<std::uint32_t> expected{KVM_EXIT_IO, KVM_EXIT_IO, KVM_EXIT_IO, KVM_EXIT_IO, KVM_EXIT_HLT};
  EXPECT_EQ(outcome->exits, expected);
}

// ---- Exercise 2: answer IN from port 0x3f9 ----------------------------------------------------------------------

TEST(Exercise2, TheGuestReadsTheSwitchValue) {
  VMMLAB_REQUIRE_KVM();
  for (std::uint8_t value : {std::uint8_t{'K'}, std::uint8_t{'z'}}) {
    auto vm = TestVm::create(vmm::guest::read_switch());
    ASSERT_TRUE(vm) << vm.error().message();
    std::uint32_t answered = 0;
    auto outcome = vm->run([&](vmm::kvm::IoExit& io) {
      bool handled = lab01::answer_switch_read(io, value);
      if (handled) {
        answered += io.count;
      }
      return handled;
    });
    ASSERT_TRUE(outcome) << outcome.error().message();
    EXPECT_EQ(outcome->reason, StopReason::Halted) << outcome->detail;
    EXPECT_EQ(outcome->serial_output, std::string(4, static_cast<char>(value)) + "\n")
        << "every byte the guest read from port 0x3f9 should be the switch value";
    EXPECT_EQ(answered, 4u) << "one IN plus three REP INSB items";
  }
}

TEST(Exercise2, OtherExitsAreLeftAlone) {
  std::uint8_t page[64] = {};
  vmm::kvm::IoExit out{
      .port = 0x3f9, .direction = vmm::kvm::IoDirection::Out, .size = 1, .count = 1, .data = {page, 1}};
  EXPECT_FALSE(lab01::answer_switch_read(out, 'K')) << "an OUT to 0x3f9 is not a read";
  vmm::kvm::IoExit other{
      .port = 0x3f8, .direction = vmm::kvm::IoDirection::In, .size = 1, .count = 1, .data = {page, 1}};
  EXPECT_FALSE(lab01::answer_switch_read(other, 'K')) << "port 0x3f8 is not the switch";
  EXPECT_EQ(page[0], 0) << "and nothing was written for them";
}

TEST(Exercise2, StringReadsGetEveryItem) {
  // What a standard KVM hands over for REP INSW with CX=3: one exit, count 3, size 2.
  std::uint8_t page[64];
  std::memset(page, 0xee, sizeof(page));
  vmm::kvm::IoExit in{.port = 0x3f9, .direction = vmm::kvm::IoDirection::In, .size = 2, .count = 3, .data = {page, 6}};
  ASSERT_TRUE(lab01::answer_switch_read(in, 'K'));
  for (std::uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(page[2 * i], 'K') << "item " << i;
    EXPECT_EQ(page[2 * i + 1], 0) << "item " << i << ": the switch is 8 bits wide";
  }
  EXPECT_EQ(page[6], 0xee) << "nothing past the last item is touched";
}

// ---- Exercise 3: start anywhere below 1 MiB ---------------------------------------------------------------------

TEST(Exercise3, RunsTestVmLoadedAtAnOddAddress) {
  VMMLAB_REQUIRE_KVM();
  const vmm::GuestImage image = vmm::guest::test_vm();
  auto vm = TestVm::create(image);
  ASSERT_TRUE(vm);
  // Replace the copy at the link address with HLTs, so jumping there instead proves nothing.
  const std::vector<std::byte> hlts(image.bytes.size(), std::byte{0xf4});
  ASSERT_TRUE(vm->write_memory(image.load_address, hlts));
  constexpr std::uint32_t kAddress = 0x12345;
  ASSERT_TRUE(vm->write_memory(kAddress, image.bytes));

  auto rc = lab01::enter_real_mode_at(vm->vcpu(), kAddress, 4, 4);
  ASSERT_TRUE(rc) << rc.error().message();
  auto outcome = vm->run();
  ASSERT_TRUE(outcome) << outcome.error().message();
  EXPECT_EQ(outcome->reason, StopReason::Halted) << outcome->detail;
  EXPECT_EQ(outcome->serial_output, "8\n");

  auto regs = vm->vcpu().get_regs();
  auto sregs = vm->vcpu().get_sregs();
  ASSERT_TRUE(regs && sregs);
  EXPECT_EQ(sregs->cs.base, std::uint64_t{sregs->cs.selector} << 4) << "real mode: CS.base must be selector * 16";
  EXPECT_EQ(sregs->cs.base + regs->rip, kAddress + image.bytes.size()) << "HLT leaves RIP just past the image";
}

TEST(Exercise3, AddressesAboveOneMegabyteAreRefused) {
  VMMLAB_REQUIRE_KVM();
  auto vm = TestVm::create(vmm::guest::test_vm());
  ASSERT_TRUE(vm);
  EXPECT_FALSE(lab01::enter_real_mode_at(vm->vcpu(), 0x100000, 0, 0));
  EXPECT_TRUE(lab01::enter_real_mode_at(vm->vcpu(), 0xfffff, 0, 0)) << "the last byte below 1 MiB is reachable";
}

}  // namespace
