#pragma once
// Test support: one run of stage05's virtio-rng guest driver on a fresh VirtioRngVm, to its exit, and what both sides
// recorded (stage05's machine tests and lab 05 use it).

#include <gtest/gtest.h>

#include <cstdint>
#include <guest/virtio_rng.hpp>
#include <optional>
#include <string>
#include <vector>

#include "virtio_rng_vm.hpp"
#include "vmm/testing/guest_console.hpp"

namespace vmm::stage05::testing {

/// What one run produced: the guest's listing and reports, the device's records.
struct GuestRun {
  std::string output;
  std::uint32_t exit_status = 0xffff'ffff;
  std::vector<std::uint32_t> reports;             // four per phase: EVENT_IDX negotiated, requests, kicks, interrupts
  std::vector<virtio::ActivationRecord> history;  // one per phase (the guest resets the device after each)
  std::uint64_t bytes_served = 0;
  std::uint64_t throttled = 0;
  std::optional<Error> transport_error;
};

/// Runs the guest to its exit on a machine built with `config` (a failure to build or to exit fails the test and
/// returns what there is).
inline GuestRun run_guest(const VirtioRngVmConfig& config) {
  vmm::testing::GuestConsole console;
  auto vm = VirtioRngVm::create(
      guest::virtio_rng(), console.sink(), [&console](std::uint32_t s) { console.exited(s); }, config);
  EXPECT_TRUE(vm) << vm.error().message();
  if (!vm) {
    return {};
  }
  EXPECT_TRUE(vm.value()->start([](const Result<machine::VcpuOutcome>&) {}));
  EXPECT_TRUE(console.wait_for_exit()) << "no exit; output so far:\n" << console.text();
  vm.value()->stop();
  return {.output = console.text(),
          .exit_status = console.exit_status.value_or(0xffff'ffff),
          .reports = vm.value()->pci().serial().report().values(),
          .history = vm.value()->transport().history(),
          .bytes_served = vm.value()->rng().bytes_served(),
          .throttled = vm.value()->rng().throttled(),
          .transport_error = vm.value()->transport().last_error()};
}

}  // namespace vmm::stage05::testing
