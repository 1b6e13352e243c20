// The stage02 machine on a real KVM: a 64-bit guest started by the VMM reports PASS, and the dirty log holds exactly
// the pages it wrote.
#include <gtest/gtest.h>

#include <cstring>
#include <guest/checksum.hpp>
#include <string>
#include <vector>

#include "long_mode_vm.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::stage02 {
namespace {

using memory::GuestAddress;

std::string read_message(const LongModeVm& vm) {
  std::string message(layout::kMessageSize, '\0');
  EXPECT_TRUE(vm.memory().read(GuestAddress(layout::kMessage), std::as_writable_bytes(std::span(message))));
  message.resize(std::strlen(message.c_str()));
  return message;
}

TEST(LongModeVm, GuestChecksumsTheBufferAndReportsPass) {
  VMMLAB_REQUIRE_KVM();
  auto vm = LongModeVm::create(guest::checksum());
  ASSERT_TRUE(vm) << vm.error().message();
  const auto input = vmm::stage02::input_pattern(4096, 7);
  ASSERT_TRUE(vm->set_input(input));
  auto outcome = vm->run();
  ASSERT_TRUE(outcome) << outcome.error().message();
  ASSERT_EQ(outcome->reason, stage01::StopReason::Halted) << outcome->detail;
  EXPECT_EQ(vm->report().exit_status, 0u) << "PASS";
  auto result = vm->memory().read_obj<std::uint64_t>(GuestAddress(layout::kResult));
  ASSERT_TRUE(result);
  EXPECT_EQ(*result, fnv1a64(input)) << "the guest computed the same FNV-1a as the VMM";
  ASSERT_EQ(vm->report().values.size(), 1u);
  EXPECT_EQ(vm->report().values[0], static_cast<std::uint32_t>(*result));
  EXPECT_EQ(read_message(*vm), "checksummed 0x1000 bytes at 0x200000");
  EXPECT_EQ(outcome->serial_output, fmt::format("checksum guest: in long mode, result {:#x}\n", *result));
}

TEST(LongModeVm, DirtyLogHoldsExactlyThePagesTheGuestWrote) {
  VMMLAB_REQUIRE_KVM();
  auto vm = LongModeVm::create(guest::checksum());
  ASSERT_TRUE(vm) << vm.error().message();
  ASSERT_TRUE(vm->set_input(vmm::stage02::input_pattern(1000, 3)));
  // Host writes are not logged: KVM logs what the guest writes through its mappings.
  ASSERT_TRUE(vm->memory().write_obj(GuestAddress(layout::kOutput), std::uint64_t{42}));
  auto before = vm->dirty_pages();
  ASSERT_TRUE(before) << before.error().message();
  EXPECT_TRUE(before->dirty_pages().empty());

  auto outcome = vm->run();
  ASSERT_TRUE(outcome) << outcome.error().message();
  ASSERT_EQ(vm->report().exit_status, 0u) << outcome->detail;
  auto dirty = vm->dirty_pages();
  ASSERT_TRUE(dirty) << dirty.error().message();
  const std::vector<GuestAddress> expected{
      GuestAddress(layout::kStackTop - 0x1000),  // the stack: `call main` pushed the return address below the top
      GuestAddress(layout::kResult),
      GuestAddress(layout::kMessage),
  };
  EXPECT_EQ(dirty->dirty_pages(), expected);

  auto again = vm->dirty_pages();
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->dirty_pages().empty()) << "reading the log clears it";
}

TEST(LongModeVm, MemfdBackedRamRunsTheSameGuest) {
  VMMLAB_REQUIRE_KVM();
  auto vm = LongModeVm::create(guest::checksum(), {.ram_size = 8ull << 20, .memfd = true});
  ASSERT_TRUE(vm) << vm.error().message();
  for (const auto& region : vm->memory().regions()) {
    EXPECT_TRUE(region.fd().valid()) << "every region is a memfd a vhost-user backend could map";
  }
  const auto input =
      vmm::stage02::input_pattern(layout::kMaxInput, 11);  // the largest input: 1 MiB, the guest loops a million times
  ASSERT_TRUE(vm->set_input(std::span(input).first(65536)));
  auto outcome = vm->run();
  ASSERT_TRUE(outcome) << outcome.error().message();
  EXPECT_EQ(vm->report().exit_status, 0u) << outcome->detail;
  auto result = vm->memory().read_obj<std::uint64_t>(GuestAddress(layout::kResult));
  ASSERT_TRUE(result);
  EXPECT_EQ(*result, fnv1a64(std::span(input).first(65536)));
}

TEST(LongModeVm, TheVcpuReallyIsInLongMode) {
  VMMLAB_REQUIRE_KVM();
  auto vm = LongModeVm::create(guest::checksum());
  ASSERT_TRUE(vm);
  ASSERT_TRUE(vm->run());
  auto sregs = vm->vcpu().get_sregs();
  ASSERT_TRUE(sregs);
  EXPECT_EQ(sregs->efer & x86::kEferLma, x86::kEferLma) << "EFER.LMA: long mode active";
  EXPECT_EQ(sregs->cs.l, 1) << "executing 64-bit code";
  EXPECT_EQ(sregs->cr3, layout::kPageTables);
  auto regs = vm->vcpu().get_regs();
  ASSERT_TRUE(regs);
  EXPECT_GT(regs->rip, 0x100000u) << "halted inside the program, linked at 1 MiB";
}

TEST(LongModeVm, OversizedInputAndRamAreRefused) {
  VMMLAB_REQUIRE_KVM();
  auto vm = LongModeVm::create(guest::checksum());
  ASSERT_TRUE(vm);
  EXPECT_FALSE(vm->set_input(vmm::stage02::input_pattern(layout::kMaxInput + 1, 0)));
  auto big = LongModeVm::create(guest::checksum(), {.ram_size = layout::kMaxRam + (2ull << 20)});
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message().find("would overlap the output region"), std::string::npos);
}

}  // namespace
}  // namespace vmm::stage02
