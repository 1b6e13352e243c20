// The stage06 machine on a real KVM: the stage05 guest, unchanged, with ioeventfd kicks, a device worker thread and
// irqfd interrupts. Kicks must cost no userspace exit, interrupts must come through the irqfds, and the console (its
// IRQ 4 now an irqfd line) must still work.
#include <gtest/gtest.h>

#include <guest/virtio_rng.hpp>
#include <string>
#include <vector>

#include "eventfd_guest_run.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::stage06 {
namespace {

using testing::EventfdRun;

EventfdRun run_guest(bool ioeventfd) {
  EventfdRngVmConfig config;
  config.rng.options = stage05::default_rng_options();
  config.rng.options->flags |= VMMLAB_RNG_QUIET;
  config.ioeventfd = ioeventfd;
  return testing::run_guest(config);
}

TEST(EventfdRngGuest, KicksCostNoUserspaceExit) {
  VMMLAB_REQUIRE_KVM();
  const EventfdRun run = run_guest(true);
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  const auto options = stage05::default_rng_options();
  EXPECT_EQ(run.requests, 2u * options.batches * options.per_batch);
  EXPECT_GT(run.guest_kicks, 0u);
  EXPECT_EQ(run.notify_exits, 0u) << "a kick reached the VMM's run loop";
  // Every kick the guest made reached the device through its ioeventfd, and was served on the worker thread.
  EXPECT_EQ(run.notifications, run.guest_kicks);
  EXPECT_GT(run.worker_wakeups, 0u);
  EXPECT_EQ(run.ioeventfds_while_running, 1u) << "one registration for the one queue while the device is active";
}

TEST(EventfdRngGuest, WithoutIoeventfdsEveryKickExitsAgain) {
  VMMLAB_REQUIRE_KVM();
  const EventfdRun run = run_guest(false);
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  EXPECT_GT(run.guest_kicks, 0u);
  EXPECT_EQ(run.notify_exits, run.guest_kicks);
  EXPECT_EQ(run.notifications, run.guest_kicks);
}

TEST(EventfdRngGuest, InterruptsArriveThroughIrqfds) {
  VMMLAB_REQUIRE_KVM();
  const EventfdRun run = run_guest(true);
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  // The transport sent every used-buffer interrupt as a write to the queue vector's irqfd (and nothing else wrote
  // them: no configuration interrupt happens in a clean run).
  EXPECT_GT(run.device_interrupts, 0u);
  EXPECT_EQ(run.irqfd_signals, run.device_interrupts);
  // The guest cannot take more interrupts than were sent; it may take fewer (two writes before it runs are one
  // interrupt), and it needs at least one per batch to finish.
  EXPECT_GE(run.guest_interrupts, 1u);
  EXPECT_LE(run.guest_interrupts, run.irqfd_signals);
}

TEST(EventfdRngGuest, TheConsoleWorksThroughItsIrqfdLine) {
  VMMLAB_REQUIRE_KVM();
  const EventfdRun run = run_guest(true);
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  EXPECT_NE(run.output.find("vmmlab stage05: virtio-rng driver"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("PASS"), std::string::npos) << run.output;
  // The guest's UART driver is interrupt-driven (transmitter-empty interrupts): its output got out, so IRQ 4 came
  // through the irqfd line.
  EXPECT_GT(run.uart_irqfd_asserts, 0u);
}

}  // namespace
}  // namespace vmm::stage06
