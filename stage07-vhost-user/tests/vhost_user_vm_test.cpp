// stage07's machine with stage05's rng guest, the device served by the vhost-user-rng daemon in another process.
#include <gtest/gtest.h>
#include <signal.h>

#include <array>
#include <thread>

#include "vhost_user_guest_run.hpp"
#include "vmm/testing/kvm.hpp"

namespace {

using namespace vmm;
using namespace vmm::stage07;
using vmm::stage07::testing::DaemonUnderTest;
namespace vu = vmm::stage07::testing;

// The guest's defaults: two phases (EVENT_IDX on, then off), each 4 batches of 4 requests.
constexpr std::uint64_t kRequests = 32;

TEST(VhostUserVm, GuestIsServedByTheDaemonWithoutTheVmmInTheDataPath) {
  VMMLAB_REQUIRE_KVM();
  DaemonUnderTest daemon;
  vu::start_daemon(daemon, VMMLAB_VHOST_USER_RNG, {"--once"});
  const auto run = vu::run_guest(vu::rng_config(daemon.socket));

  EXPECT_EQ(run.exit_status, 0u) << run.output;
  EXPECT_EQ(run.requests, kRequests);
  EXPECT_GT(run.guest_kicks, 0u);
  EXPECT_EQ(run.notify_exits, 0u) << "every kick is an ioeventfd the daemon reads";
  EXPECT_GT(run.guest_interrupts, 0u);
  EXPECT_EQ(run.frontend.relayed_interrupts, 0u) << "the daemon writes the vectors' irqfds itself";
  EXPECT_EQ(run.vmm_irqfd_writes, 0u);
  EXPECT_EQ(run.activations, 2u) << "one per guest phase";

  // The session ends when the machine goes; --once then ends the daemon with status 0.
  auto ended = daemon.process->wait(std::chrono::seconds(20));
  ASSERT_TRUE(ended) << ended.error().message() << "\n" << daemon.process->output();
  EXPECT_EQ(ended->code, 0) << daemon.process->output();
  EXPECT_NE(daemon.process->output().find("session 1 ended"), std::string::npos) << daemon.process->output();
}

TEST(VhostUserVm, WithoutIrqfdsTheVmmRelaysEveryInterrupt) {
  VMMLAB_REQUIRE_KVM();
  DaemonUnderTest daemon;
  vu::start_daemon(daemon, VMMLAB_VHOST_USER_RNG);
  auto config = vu::rng_config(daemon.socket);
  config.irqfd = false;
  const auto run = vu::run_guest(config);

  EXPECT_EQ(run.exit_status, 0u) << run.output;
  EXPECT_EQ(run.requests, kRequests);
  // The daemon's call eventfd is the frontend's relay: every interrupt now passes through the VMM, which sends it
  // as an MSI through the transport (here onto the vector's irqfd). Two messages for one vector can merge in the
  // LAPIC before the guest takes them, so the guest may count fewer than the VMM sent, never more.
  EXPECT_GT(run.frontend.relayed_interrupts, 0u);
  EXPECT_EQ(run.vmm_irqfd_writes, run.frontend.relayed_interrupts) << "one MSI from the VMM per relayed interrupt";
  EXPECT_GT(run.guest_interrupts, 0u);
  EXPECT_LE(run.guest_interrupts, run.vmm_irqfd_writes);
}

TEST(VhostUserVm, WithoutIoeventfdsKicksExitAndAreForwarded) {
  VMMLAB_REQUIRE_KVM();
  DaemonUnderTest daemon;
  vu::start_daemon(daemon, VMMLAB_VHOST_USER_RNG);
  auto config = vu::rng_config(daemon.socket);
  config.ioeventfd = false;
  const auto run = vu::run_guest(config);

  EXPECT_EQ(run.exit_status, 0u) << run.output;
  EXPECT_EQ(run.requests, kRequests);
  EXPECT_EQ(run.notify_exits, run.guest_kicks) << "every kick exited to the VMM";
  EXPECT_EQ(run.frontend.fallback_kicks, run.guest_kicks) << "and the frontend wrote the kick eventfd for each";
}

TEST(VhostUserVm, MaskingTheQueuesVectorMidRunLosesNoInterrupt) {
  // While the vector is masked its irqfd has no route: the backend is re-pointed at the VMM's relay (the interrupt
  // waits in the PBA) and back at the irqfd on unmask. Without that, an interrupt sent while masked would be lost and
  // the guest, waiting for it, would never finish.
  VMMLAB_REQUIRE_KVM();
  DaemonUnderTest daemon;
  vu::start_daemon(daemon, VMMLAB_VHOST_USER_RNG);
  vmm::testing::GuestConsole console;
  auto vm = VhostUserVm::create(
      guest::virtio_rng(), console.sink(), [&console](std::uint32_t s) { console.exited(s); },
      vu::rng_config(daemon.socket));
  ASSERT_TRUE(vm) << vm.error().message();
  auto& machine = **vm;
  ASSERT_TRUE(machine.start([](const Result<machine::VcpuOutcome>&) {}));
  ASSERT_TRUE(console.wait([](vmm::testing::GuestConsole& c) {
    return c.output.find("phase 1:") != std::string::npos;
  })) << console.text();

  // Vector 1 (the queue's) through the MSI-X table in BAR2, as the guest would: Vector Control, bit 0.
  const std::uint64_t control = virtio::VirtioPciDevice::kMsixTableOffset + 16 * 1 + 12;
  const std::array<std::uint8_t, 4> masked{1, 0, 0, 0};
  const std::array<std::uint8_t, 4> unmasked{0, 0, 0, 0};
  machine.transport().bar_write(virtio::VirtioPciDevice::kMsixBar, control, masked);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the guest runs (and waits) with the vector masked
  machine.transport().bar_write(virtio::VirtioPciDevice::kMsixBar, control, unmasked);

  EXPECT_TRUE(console.wait_for_exit()) << "the guest stalled: an interrupt was lost\n" << console.text();
  machine.stop();
  EXPECT_EQ(console.exit_status.value_or(0xffff'ffff), 0u) << console.text();
  EXPECT_GE(machine.frontend().stats().call_switches, 1u) << "the backend's call fd followed the mask";
  EXPECT_EQ(machine.call_errors(), 0u);
}

TEST(VhostUserVm, BackendKilledMidRunSetsNeedsResetAndTheVmmSurvives) {
  VMMLAB_REQUIRE_KVM();
  DaemonUnderTest daemon;
  // 1 byte per second: the guest's first 16-byte request waits in the ring, so the daemon dies with work pending.
  vu::start_daemon(daemon, VMMLAB_VHOST_USER_RNG, {"--rate", "1", "--burst", "1"});
  vmm::testing::GuestConsole console;
  auto vm = VhostUserVm::create(
      guest::virtio_rng(), console.sink(), [&console](std::uint32_t s) { console.exited(s); },
      vu::rng_config(daemon.socket));
  ASSERT_TRUE(vm) << vm.error().message();
  auto& machine = **vm;
  ASSERT_TRUE(machine.start([](const Result<machine::VcpuOutcome>&) {}));

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!machine.transport().active() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(machine.transport().active()) << console.text();
  ASSERT_TRUE(daemon.process->kill(SIGKILL));

  while ((machine.transport().status() & VIRTIO_CONFIG_S_NEEDS_RESET) == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(machine.transport().status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0) << "the driver is told to reset";
  EXPECT_FALSE(machine.frontend().connected());
  ASSERT_TRUE(machine.frontend().last_error());
  // The VMM keeps running: the vCPU still takes exits (the guest's console) and the machine stops cleanly.
  EXPECT_TRUE(machine.transport().last_error()) << "the transport kept the reason";
  machine.stop();
}

}  // namespace
