// The stage04 machine on a real KVM: the enumerator guest lists bus 0, assigns BARs the VMM then maps on its buses,
// and takes an MSI-X interrupt from the test device.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <guest/enumerate.hpp>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "guest_listing.hpp"
#include "pci_vm.hpp"
#include "vmm/testing/guest_console.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::stage04 {
namespace {

using namespace std::chrono_literals;

using Console = vmm::testing::GuestConsole;

using pci::testing::guest_bars;

class EnumerateGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    VMMLAB_REQUIRE_KVM();
    auto vm = PciVm::create(
        guest::enumerate(), [this](std::span<const std::uint8_t> b) { console_.append(b); },
        [this](std::uint32_t status) { console_.exited(status); });
    ASSERT_TRUE(vm) << vm.error().message();
    vm_ = std::move(*vm);
    ASSERT_TRUE(vm_->start([](const Result<machine::VcpuOutcome>&) {}));
    ASSERT_TRUE(console_.wait_for_exit()) << "no exit; output so far: " << console_.output;
    vm_->stop();
  }
  void TearDown() override {
    if (vm_) {
      vm_->stop();
    }
  }

  Console console_;
  std::unique_ptr<PciVm> vm_;
};

TEST_F(EnumerateGuest, PassesAndListsBothDevices) {
  EXPECT_EQ(console_.exit_status, 0u) << console_.output;
  EXPECT_NE(console_.output.find("00:00.0 1b36:0008 class 060000\n"), std::string::npos) << console_.output;
  EXPECT_NE(console_.output.find("00:03.0 1af4:10f1 class ff0000\n"), std::string::npos) << console_.output;
  EXPECT_NE(console_.output.find("capabilities: 11 (MSI-X)\n"), std::string::npos) << console_.output;
  EXPECT_NE(console_.output.find("MSI-X vector 0x50 received\n"), std::string::npos) << console_.output;
}

TEST_F(EnumerateGuest, TheBarsTheGuestAssignedAreTheOnesOnTheBuses) {
  const auto bars = guest_bars(console_.output);
  ASSERT_EQ(bars.size(), 3u) << console_.output;
  EXPECT_EQ(bars, vm_->root().mappings()) << console_.output;
  EXPECT_TRUE(vm_->root().mapping_errors().empty());
  // The allocator's rules: memory from 0xC000_0000 and I/O from 0xC000, naturally aligned, in BAR order.
  EXPECT_EQ(bars[0], (pci::BarMapping{kTestDeviceSlot, 0, pci::BarSpace::Memory, 0xc000'0000, 0x1000}));
  EXPECT_EQ(bars[1], (pci::BarMapping{kTestDeviceSlot, 1, pci::BarSpace::Io, 0xc000, 0x10}));
  EXPECT_EQ(bars[2], (pci::BarMapping{kTestDeviceSlot, 2, pci::BarSpace::Memory, 0xc000'1000, 0x1000}));
}

TEST_F(EnumerateGuest, TheMsiXInterruptWasDeliveredOnce) {
  EXPECT_EQ(vm_->test_device().fired(), 1u);
  const auto reports = vm_->serial().report().values();
  ASSERT_EQ(reports.size(), 2u) << "devices found, interrupts taken";
  EXPECT_EQ(reports[0], 2u) << "the host bridge and the test device";
  EXPECT_EQ(reports[1], 1u) << "one MSI-X interrupt on vector 0x50";
  auto& msix = vm_->test_device().msix();
  EXPECT_TRUE(msix.enabled());
  EXPECT_FALSE(msix.function_masked());
  EXPECT_EQ(msix.entry(0), (pci::MsixEntry{.address = 0xfee0'0000, .data = 0x50, .control = 0}));
  EXPECT_FALSE(msix.last_error().has_value());
}

}  // namespace
}  // namespace vmm::stage04
