// The stage03 machine on a real KVM: the echo guest's banner, echoed lines and clean exit, all through the UART's
// interrupt (the guest reports how many interrupts it took).
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <guest/echo.hpp>
#include <mutex>
#include <string>
#include <thread>

#include "serial_vm.hpp"
#include "vmm/testing/guest_console.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::stage03 {
namespace {

using namespace std::chrono_literals;

using Console = vmm::testing::GuestConsole;

// Types `text` into the UART as a terminal would, never overrunning its FIFO.
void type(SerialVm& vm, std::string_view text) {
  while (!text.empty()) {
    const std::size_t room = std::min(vm.uart().rx_free(), text.size());
    if (room == 0) {
      std::this_thread::sleep_for(1ms);
      continue;
    }
    const auto taken = vm.uart().enqueue_input(std::span(reinterpret_cast<const std::uint8_t*>(text.data()), room));
    text.remove_prefix(taken);
  }
}

class EchoGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    VMMLAB_REQUIRE_KVM();
    auto vm = SerialVm::create(
        guest::echo(), [this](std::span<const std::uint8_t> b) { console_.append(b); },
        [this](std::uint32_t status) { console_.exited(status); });
    ASSERT_TRUE(vm) << vm.error().message();
    vm_ = std::move(*vm);
    ASSERT_TRUE(vm_->start([this](const Result<machine::VcpuOutcome>& outcome) {
      std::lock_guard lock(vcpu_mutex_);
      vcpu_outcome_ = outcome;
    }));
  }
  void TearDown() override {
    if (vm_) {
      vm_->stop();
    }
  }
  // The driver clears the FIFO while it initialises: type only once it listens (IER.ERBFI set).
  void wait_until_listening() {
    ASSERT_TRUE(console_.wait([&](Console&) { return (vm_->uart().state().ier & 0x01) != 0; }))
        << "the guest never enabled receive interrupts; output so far: " << console_.output;
  }

  Console console_;
  std::unique_ptr<SerialVm> vm_;
  std::mutex vcpu_mutex_;
  std::optional<Result<machine::VcpuOutcome>> vcpu_outcome_;
};

const std::string kBanner =
    "vmmlab stage03: an interrupt-driven UART in a 64-bit guest. Type a line; \"quit\" ends.\n> ";

TEST_F(EchoGuest, PrintsTheBannerThroughTheUart) {
  ASSERT_TRUE(console_.wait([](Console& c) { return c.output.size() >= kBanner.size(); }))
      << "output so far: " << console_.output;
  EXPECT_EQ(console_.output.substr(0, kBanner.size()), kBanner);
  EXPECT_EQ(vm_->uart().state().mcr & 0x08, 0x08) << "the driver set OUT2, which gates the IRQ on a PC";
}

TEST_F(EchoGuest, EchoesLinesAndExitsCleanlyAtQuit) {
  wait_until_listening();
  type(*vm_, "hello\rsecond line\nquit\r");
  ASSERT_TRUE(console_.wait([](Console& c) { return c.exit_status.has_value(); }))
      << "no exit; output so far: " << console_.output;
  EXPECT_EQ(console_.exit_status, 0u);
  EXPECT_EQ(console_.output, kBanner + "hello\nyou said: hello\n> second line\nyou said: second line\n> quit\nbye\n");
  // The guest's own counters: every byte in and out went through its interrupt handler.
  const auto reports = vm_->report().values();
  ASSERT_EQ(reports.size(), 3u) << "interrupts, bytes received, bytes sent";
  EXPECT_GT(reports[0], 0u) << "the UART interrupted the guest";
  EXPECT_EQ(reports[1], 23u) << "every byte typed was received";
  EXPECT_EQ(reports[2], console_.output.size()) << "every byte sent left through the THRE interrupt";
  EXPECT_EQ(vm_->uart().state().rx_overruns, 0u);
}

TEST_F(EchoGuest, StopKicksTheVcpuOutOfKvmRun) {
  wait_until_listening();  // the guest now sits in HLT inside KVM_RUN, waiting for an interrupt
  vm_->stop();
  std::lock_guard lock(vcpu_mutex_);
  ASSERT_TRUE(vcpu_outcome_.has_value());
  ASSERT_TRUE(*vcpu_outcome_) << vcpu_outcome_->error().message();
  EXPECT_EQ((*vcpu_outcome_)->reason, machine::VcpuStop::Requested);
}

TEST_F(EchoGuest, UnclaimedPortsAreCountedNotFatal) {
  wait_until_listening();
  // The PIC and the UART are the guest's only ports: the PIC is in the kernel, the UART on our bus. Nothing else
  // should have reached the bus unclaimed.
  EXPECT_EQ(vm_->buses().io.unclaimed().reads, 0u);
  EXPECT_EQ(vm_->buses().io.unclaimed().writes, 0u);
}

}  // namespace
}  // namespace vmm::stage03
