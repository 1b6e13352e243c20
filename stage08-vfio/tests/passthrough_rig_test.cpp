// Passthrough end to end, in the rig's vfio flavour: stage08's edu driver in a guest on the rig's KVM, with the rig's
// edu device (bound to vfio-pci, VMMLAB_RIG_EDU_BDF) passed through by VfioVm. The guest checks the device itself
// (ID, factorial, MSI, DMA); these tests check what the guest reported and what the VMM did and did not do. Without
// VFIO (any host here) they fail, saying why: they are registered only as rig tests.

#include <gtest/gtest.h>
#include <linux/vfio.h>

#include <cstdlib>
#include <guest/edu.hpp>
#include <mutex>
#include <string>

#include "guest_outcome.hpp"
#include "vfio_vm.hpp"

namespace vmm::stage08 {
namespace {

struct GuestRun {
  std::unique_ptr<VfioVm> vm;
  std::optional<std::uint32_t> status;
  std::string output;
};

// Builds the machine, runs the edu guest to its exit (60 s at most), stops the vCPU; the machine stays for inspection.
void run_guest(bool map_bars, GuestRun& run) {
  const char* bdf = std::getenv("VMMLAB_RIG_EDU_BDF");
  ASSERT_NE(bdf, nullptr) << "VMMLAB_RIG_EDU_BDF is not set: run in the rig's vfio flavour (ctest -L rig)";
  VfioVmConfig config;
  config.bdf = bdf;
  config.map_bars = map_bars;
  auto output = std::make_shared<std::pair<std::mutex, std::string>>();
  stage03::GuestOutcome outcome;
  auto vm = VfioVm::create(
      guest::edu(),
      [output](std::span<const std::uint8_t> bytes) {
        std::lock_guard lock(output->first);
        output->second.append(bytes.begin(), bytes.end());
      },
      [&outcome](std::uint32_t s) { outcome.exited(s); }, config);
  ASSERT_TRUE(vm) << vm.error().message();
  run.vm = std::move(*vm);
  ASSERT_TRUE(run.vm->start([&outcome](const Result<machine::VcpuOutcome>& r) { outcome.vcpu_stopped(r); }));
  const bool finished = outcome.wait(60);
  run.vm->stop();
  run.status = outcome.exit_status();
  std::lock_guard lock(output->first);
  run.output = output->second;
  ASSERT_TRUE(finished) << "the guest did not finish in 60 s; it printed:\n" << run.output;
}

std::uint32_t factorial(std::uint32_t n) {
  return n <= 1 ? 1 : n * factorial(n - 1);
}

void expect_guest_passed(GuestRun& run) {
  ASSERT_EQ(run.status, std::optional<std::uint32_t>(0)) << run.output;
  const auto reports = run.vm->pci().serial().report().values();
  ASSERT_EQ(reports.size(), 6U) << run.output;
  EXPECT_EQ(reports[0], 0x010000edU) << "edu's ID register, read through the passed-through BAR";
  EXPECT_EQ(reports[1], 1U) << "liveness";
  EXPECT_EQ(reports[2], factorial(10));
  EXPECT_EQ(reports[3], 4U) << "raise register, factorial done, two DMA transfers";
  EXPECT_EQ(reports[4], 0x5a0000U | 0x001U | 0x100U) << "the interrupt status bits the handler saw";
  EXPECT_EQ(reports[5], 2048U) << "DMA bytes that came back equal";
  EXPECT_NE(run.output.find("PASS"), std::string::npos);
}

TEST(PassthroughRig, TheGuestDrivesEduThroughMemorySlotsWithoutTrappingABarAccess) {
  GuestRun run;
  run_guest(/*map_bars=*/true, run);
  expect_guest_passed(run);
  auto& device = run.vm->passthrough();

  // MMIO: BAR0 placed where the guest put it, mapped by one memory slot, and no BAR access reached the VMM.
  const auto bars = device.bars_info();
  ASSERT_EQ(bars.size(), 1U);
  EXPECT_EQ(bars[0].bar.size, 1U << 20);
  ASSERT_TRUE(bars[0].guest_address);
  ASSERT_EQ(bars[0].slot_handles.size(), 1U);
  const auto slots = run.vm->bar_slots()->slots();
  ASSERT_EQ(slots.size(), 1U);
  EXPECT_EQ(slots[0].guest_address, *bars[0].guest_address);
  EXPECT_EQ(slots[0].size, 1U << 20);
  const auto stats = device.stats();
  EXPECT_EQ(stats.bar_reads, 0U);
  EXPECT_EQ(stats.bar_writes, 0U);
  EXPECT_GT(stats.config_writes, 0U) << "config space always traps";

  // Interrupts: the guest's MSI message became the route of the vector's GSI; VFIO got its irqfd once; no relay.
  auto* routes = device.msi_routes();
  ASSERT_NE(routes, nullptr);
  const auto route = routes->route(0);
  ASSERT_TRUE(route && route->message);
  EXPECT_EQ(route->message->address, 0xfee00000U);
  EXPECT_EQ(route->message->data, 0x41U);
  EXPECT_EQ(run.vm->routing().msi(route->gsi), route->message);
  EXPECT_EQ(stats.set_irqs, 1U);
  EXPECT_EQ(stats.relayed, 0U);
  EXPECT_EQ(stats.errors, 0U) << (device.last_error() ? device.last_error()->message() : "");

  // DMA: every RAM region mapped at IOVA = its guest-physical address, in the container too.
  const auto& memory = run.vm->pci().serial().vm().memory();
  const auto mappings = run.vm->dma().mappings();
  ASSERT_EQ(mappings.size(), memory.regions().size());
  for (std::size_t i = 0; i < mappings.size(); ++i) {
    EXPECT_EQ(mappings[i].iova, memory.regions()[i].start().raw());
    EXPECT_EQ(mappings[i].size, memory.regions()[i].size());
    EXPECT_EQ(mappings[i].host_va, reinterpret_cast<std::uint64_t>(memory.regions()[i].host_address()));
  }
  EXPECT_EQ(run.vm->container().mappings(), mappings);

  // KVM knows the group.
  EXPECT_TRUE(run.vm->kvm_vfio().groups().contains(run.vm->group().number()));
}

TEST(PassthroughRig, WithoutMemorySlotsEveryBarAccessTrapsAndTheGuestStillPasses) {
  GuestRun run;
  run_guest(/*map_bars=*/false, run);
  expect_guest_passed(run);
  const auto stats = run.vm->passthrough().stats();
  EXPECT_GT(stats.bar_reads, 5U) << "ID, liveness, status polls, factorial, interrupt status";
  EXPECT_GT(stats.bar_writes, 5U);
  EXPECT_EQ(stats.msix_table_accesses, 0U) << "edu has no MSI-X";
  EXPECT_EQ(stats.errors, 0U);
  EXPECT_EQ(run.vm->bar_slots(), nullptr);
}

}  // namespace
}  // namespace vmm::stage08
