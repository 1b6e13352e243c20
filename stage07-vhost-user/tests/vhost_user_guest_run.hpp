#pragma once
// Test support: start a vmmlab vhost-user daemon on a socket in a private directory, and run stage05's virtio-rng
// guest on stage07's VhostUserVm against it, to its exit (stage07's machine tests and lab 07 use it).

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <guest/virtio_rng.hpp>
#include <optional>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "vhost_user_vm.hpp"
#include "vmm/testing/guest_console.hpp"

namespace vmm::stage07::testing {

/// A daemon started for one test: its process and its socket, both gone at the end of the test.
struct DaemonUnderTest {
  std::string directory;
  std::string socket;
  std::optional<ChildProcess> process;

  DaemonUnderTest() = default;
  DaemonUnderTest(const DaemonUnderTest&) = delete;
  DaemonUnderTest& operator=(const DaemonUnderTest&) = delete;
  ~DaemonUnderTest() {
    process.reset();  // SIGKILL if still running
    if (!directory.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(directory, ec);
    }
  }
};

/// Starts `program --socket <dir>/vu.sock extra...` and waits until it says it listens. Test failure otherwise.
inline void start_daemon(DaemonUnderTest& daemon, const std::string& program, std::vector<std::string> extra = {}) {
  char pattern[] = "/tmp/vmmlab-vu-XXXXXX";
  ASSERT_NE(::mkdtemp(pattern), nullptr);
  daemon.directory = pattern;
  daemon.socket = daemon.directory + "/vu.sock";
  std::vector<std::string> args{program, "--socket", daemon.socket};
  args.insert(args.end(), extra.begin(), extra.end());
  auto child = ChildProcess::spawn(args);
  ASSERT_TRUE(child) << child.error().message();
  daemon.process = std::move(*child);
  auto ready = daemon.process->wait_for_output("listening", std::chrono::seconds(20));
  ASSERT_TRUE(ready && *ready) << program
                               << " did not start: " << (ready ? daemon.process->output() : ready.error().message());
}

/// What one guest run produced.
struct VhostUserRun {
  std::string output;
  std::uint32_t exit_status = 0xffff'ffff;
  std::uint64_t requests = 0;          // the guest's reports, summed over its phases
  std::uint64_t guest_kicks = 0;       // notify writes the guest made
  std::uint64_t guest_interrupts = 0;  // queue interrupts the guest took
  std::uint64_t notify_exits = 0;      // kicks that exited to the VMM
  std::uint64_t vmm_irqfd_writes = 0;  // irqfd writes made by the VMM itself (MsixRoutes::signal)
  vhost::FrontendStats frontend;       // the frontend's counters
  std::size_t activations = 0;         // the transport's activation history
  std::uint8_t status = 0;             // the device status when the guest exited
};

/// The machine configuration for the stage05 rng guest against the daemon listening at `socket`.
inline VhostUserVmConfig rng_config(const std::string& socket) {
  VhostUserVmConfig config;
  config.options = stage05::default_rng_options();
  config.options->flags |= VMMLAB_RNG_QUIET;
  config.frontend.socket_path = socket;
  config.frontend.device_type = VIRTIO_ID_RNG;
  config.frontend.queues = 1;
  config.frontend.queue_size = 256;
  return config;
}

/// Runs the guest to its exit on a machine built with `config`.
inline VhostUserRun run_guest(const VhostUserVmConfig& config) {
  vmm::testing::GuestConsole console;
  auto vm = VhostUserVm::create(
      guest::virtio_rng(), console.sink(), [&console](std::uint32_t s) { console.exited(s); }, config);
  EXPECT_TRUE(vm) << vm.error().message();
  if (!vm) {
    return {};
  }
  auto& machine = **vm;
  EXPECT_TRUE(machine.start([](const Result<machine::VcpuOutcome>&) {}));
  EXPECT_TRUE(console.wait_for_exit()) << "no exit; output so far:\n" << console.text();
  machine.stop();

  VhostUserRun run;
  run.output = console.text();
  run.exit_status = console.exit_status.value_or(0xffff'ffff);
  const auto reports = machine.pci().serial().report().values();  // four per phase
  for (std::size_t i = 0; i + 3 < reports.size(); i += 4) {
    run.requests += reports[i + 1];
    run.guest_kicks += reports[i + 2];
    run.guest_interrupts += reports[i + 3];
  }
  run.notify_exits = machine.notify_exits();
  run.vmm_irqfd_writes = machine.msix_routes().signals();
  run.frontend = machine.frontend().stats();
  run.activations = machine.transport().history().size() + (machine.transport().active() ? 1 : 0);
  run.status = machine.transport().status();
  return run;
}

}  // namespace vmm::stage07::testing
