#pragma once
// Test support: one run of stage05's virtio-rng guest driver on stage06's EventfdRngVm, to its exit, and what every
// side counted (stage06's machine tests and lab 06 use it).

#include <gtest/gtest.h>

#include <cstdint>
#include <guest/virtio_rng.hpp>
#include <string>
#include <vector>

#include "eventfd_rng_vm.hpp"
#include "vmm/testing/guest_console.hpp"

namespace vmm::stage06::testing {

/// What one run produced.
struct EventfdRun {
  std::string output;
  std::uint32_t exit_status = 0xffff'ffff;
  std::uint64_t requests = 0;           // the guest's reports, summed over its phases
  std::uint64_t guest_kicks = 0;        // notify writes the guest made
  std::uint64_t guest_interrupts = 0;   // queue interrupts the guest took
  machine::ExitCountersSnapshot exits;  // what the vCPU loop counted
  std::vector<pci::BarMapping> mappings;
  std::uint64_t notify_exits = 0;            // userspace MMIO exits at the notify area (`notify_exits`)
  bool ioeventfds = false;                   // the machine had NotifyIoeventfds
  std::size_t ioeventfds_while_running = 0;  // registrations during the first phase
  std::uint64_t ioeventfd_kicks = 0;         // ThreadedDevice: kicks read from the queue eventfd
  std::uint64_t notifications = 0;           // the queue's notifications over all activations (MMIO + eventfd)
  std::uint64_t device_interrupts = 0;       // used-buffer interrupts the transport sent
  std::uint64_t irqfd_signals = 0;           // writes to the MSI-X irqfds
  std::uint64_t worker_wakeups = 0;
  std::uint64_t uart_irqfd_asserts = 0;
};

/// Runs the guest to its exit on a machine built with `config` (a failure to build or to exit fails the test and
/// returns what there is).
inline EventfdRun run_guest(const EventfdRngVmConfig& config) {
  vmm::testing::GuestConsole console;
  auto vm = EventfdRngVm::create(
      guest::virtio_rng(), console.sink(), [&console](std::uint32_t s) { console.exited(s); }, config);
  EXPECT_TRUE(vm) << vm.error().message();
  if (!vm) {
    return {};
  }
  auto& machine = **vm;
  EXPECT_TRUE(machine.start([](const Result<machine::VcpuOutcome>&) {}));
  EventfdRun run;
  // While the guest runs its first phase the device is active and BAR0 placed: the registrations exist.
  console.wait([](vmm::testing::GuestConsole& c) { return c.output.find("phase 1:") != std::string::npos; });
  if (machine.ioeventfds() != nullptr) {
    run.ioeventfds = true;
    run.ioeventfds_while_running = machine.ioeventfds()->registered().size();
  }
  EXPECT_TRUE(console.wait_for_exit()) << "no exit; output so far:\n" << console.text();
  machine.stop();

  run.output = console.text();
  run.exit_status = console.exit_status.value_or(0xffff'ffff);
  const auto reports = machine.rng_vm().pci().serial().report().values();  // four per phase
  for (std::size_t i = 0; i + 3 < reports.size(); i += 4) {
    run.requests += reports[i + 1];
    run.guest_kicks += reports[i + 2];
    run.guest_interrupts += reports[i + 3];
  }
  run.exits = machine.exits().snapshot();
  run.mappings = machine.rng_vm().pci().root().mappings();
  run.notify_exits = notify_exits(run.exits, machine.rng_vm());
  for (const auto& record : machine.rng_vm().transport().history()) {
    for (const auto& queue : record.queues) {
      run.notifications += queue.notifications;
      run.device_interrupts += queue.interrupts;
    }
  }
  run.ioeventfd_kicks = machine.threaded().ioeventfd_kicks();
  run.irqfd_signals = machine.msix_routes().signals();
  run.worker_wakeups = machine.threaded().wakeups();
  run.uart_irqfd_asserts = machine.uart_line() != nullptr ? machine.uart_line()->asserts() : 0;
  return run;
}

}  // namespace vmm::stage06::testing
