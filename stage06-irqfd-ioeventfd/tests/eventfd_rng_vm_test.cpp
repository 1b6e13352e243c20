// The stage06 machine on a real KVM: the stage05 guest, unchanged, with ioeventfd kicks, a device worker thread and
// irqfd interrupts. Kicks must cost no userspace exit, interrupts must come through the irqfds, and the console (its
// IRQ 4 now an irqfd line) must still work.
#include <gtest/gtest.h>

#include <guest/virtio_rng.hpp>
#include <string>
#include <vector>

#include "eventfd_rng_vm.hpp"
#include "vmm/testing/guest_console.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::stage06 {
namespace {

struct EventfdRun {
  std::string output;
  std::uint32_t exit_status = 0xffff'ffff;
  std::uint64_t requests = 0;
  std::uint64_t guest_kicks = 0;
  std::uint64_t guest_interrupts = 0;
  std::uint64_t notify_exits = 0;          // userspace MMIO exits at the notify area
  std::uint64_t device_notifications = 0;  // kicks the device received (ioeventfd or MMIO)
  std::uint64_t device_interrupts = 0;     // used-buffer interrupts the transport sent
  std::uint64_t irqfd_signals = 0;         // writes to the MSI-X irqfds
  std::uint64_t worker_wakeups = 0;
  std::uint64_t uart_irqfd_asserts = 0;
  std::size_t ioeventfds_while_running = 0;
};

EventfdRun run_guest(bool ioeventfd) {
  vmm::testing::GuestConsole console;
  EventfdRngVmConfig config;
  config.rng.options = stage05::default_rng_options();
  config.rng.options->flags |= VMMLAB_RNG_QUIET;
  config.ioeventfd = ioeventfd;
  auto vm = EventfdRngVm::create(
      guest::virtio_rng(), console.sink(), [&console](std::uint32_t s) { console.exited(s); }, config);
  EXPECT_TRUE(vm) << vm.error().message();
  if (!vm) {
    return {};
  }
  auto& machine = **vm;
  EXPECT_TRUE(machine.start([](const Result<machine::VcpuOutcome>&) {}));
  // While the guest runs its first phase the device is active and BAR0 placed: the registrations exist.
  EventfdRun run;
  console.wait([](vmm::testing::GuestConsole& c) { return c.output.find("phase 1:") != std::string::npos; });
  if (machine.ioeventfds() != nullptr) {
    run.ioeventfds_while_running = machine.ioeventfds()->registered().size();
  }
  EXPECT_TRUE(console.wait_for_exit()) << "no exit; output so far:\n" << console.text();
  machine.stop();

  run.output = console.text();
  run.exit_status = console.exit_status.value_or(0xffff'ffff);
  const auto reports = machine.rng_vm().pci().serial().report().values();
  for (std::size_t i = 0; i + 3 < reports.size(); i += 4) {
    run.requests += reports[i + 1];
    run.guest_kicks += reports[i + 2];
    run.guest_interrupts += reports[i + 3];
  }
  const auto exits = machine.exits().snapshot();
  run.notify_exits = notify_exits(exits, machine.rng_vm());
  for (const auto& record : machine.rng_vm().transport().history()) {
    for (const auto& queue : record.queues) {
      run.device_notifications += queue.notifications;
      run.device_interrupts += queue.interrupts;
    }
  }
  run.irqfd_signals = machine.msix_routes().signals();
  run.worker_wakeups = machine.threaded().wakeups();
  run.uart_irqfd_asserts = machine.uart_line() != nullptr ? machine.uart_line()->asserts() : 0;
  return run;
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
  EXPECT_EQ(run.device_notifications, run.guest_kicks);
  EXPECT_GT(run.worker_wakeups, 0u);
  EXPECT_EQ(run.ioeventfds_while_running, 1u) << "one registration for the one queue while the device is active";
}

TEST(EventfdRngGuest, WithoutIoeventfdsEveryKickExitsAgain) {
  VMMLAB_REQUIRE_KVM();
  const EventfdRun run = run_guest(false);
  ASSERT_EQ(run.exit_status, 0u) << run.output;
  EXPECT_GT(run.guest_kicks, 0u);
  EXPECT_EQ(run.notify_exits, run.guest_kicks);
  EXPECT_EQ(run.device_notifications, run.guest_kicks);
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
