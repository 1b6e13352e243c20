// stage08-vfio: a real PCI device in the guest. The demo passes a device bound to vfio-pci (QEMU's edu in the rig)
// through to stage08's bare-metal edu driver, which identifies it, computes factorials on it, takes its MSI and
// makes it DMA into guest RAM. The summary then shows what the VMM did: mapped RAM for DMA, mapped BAR0 into the guest,
// routed the MSI, and (with memory slots) never saw a single BAR access.
//
//   stage08-vfio --device 0000:00:03.0     pass that device through (default: $VMMLAB_RIG_EDU_BDF)
//   stage08-vfio --no-map-bars             no memory slots: every BAR access exits and the VMM forwards it
//   stage08-vfio --gdb tcp:1234            hold the guest before its first instruction until gdb attaches
//   tools/rig --flavour vfio --file build/dev/stage08-vfio/stage08-vfio -- build/dev/stage08-vfio/stage08-vfio
//
// On a host without VFIO it stops at the first step with the reason.

#include <fmt/format.h>
#include <linux/vfio.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <guest/edu.hpp>
#include <string>
#include <vector>

#include "gdb_session.hpp"
#include "guest_outcome.hpp"
#include "vfio_vm.hpp"
#include "vmm/event/write_all.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/machine/exit_counters.hpp"

namespace {

using namespace vmm;

void write_stdout(std::span<const std::uint8_t> bytes) {
  (void)event::write_all(STDOUT_FILENO, bytes);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"stage08-vfio: QEMU's edu device (or any device bound to vfio-pci) passed through to a guest"};
  const char* rig_bdf = std::getenv("VMMLAB_RIG_EDU_BDF");
  std::string bdf = rig_bdf != nullptr ? rig_bdf : "";
  std::string sysfs = "/sys";
  double timeout_seconds = 60;
  bool no_map_bars = false;
  bool trace = false;
  app.add_option("--device", bdf,
                 "PCI address of the device to pass through, bound to vfio-pci (default: "
                 "$VMMLAB_RIG_EDU_BDF, which the rig's vfio flavour sets)");
  app.add_option("--sysfs", sysfs, "Where sysfs is mounted (to find the device's group and driver)");
  app.add_option("--timeout", timeout_seconds, "Stop (with status 124) after this many seconds; 0 = never")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--no-map-bars", no_map_bars, "No memory slots for BARs: every BAR access exits to the VMM");
  app.add_flag("--trace", trace, "Print every KVM exit to stderr as it happens");
  std::string gdb_endpoint;
  app.add_option("--gdb", gdb_endpoint, stage03::kGdbOptionHelp);
  CLI11_PARSE(app, argc, argv);
  if (!gdb_endpoint.empty() && app.count("--timeout") == 0) {
    timeout_seconds = 0;  // a person at gdb takes as long as they take
  }
  if (bdf.empty()) {
    fmt::print(stderr, "stage08-vfio: --device is required (a PCI address such as 0000:00:03.0, bound to vfio-pci)\n");
    return 2;
  }

  stage08::VfioVmConfig config;
  config.bdf = bdf;
  config.sysfs = sysfs;
  config.map_bars = !no_map_bars;
  config.serial.trace = trace;

  stage03::GuestOutcome outcome;
  const GuestImage image = guest::edu();
  auto vm = stage08::VfioVm::create(
      image, write_stdout, [&outcome](std::uint32_t s) { outcome.exited(s); }, config);
  if (!vm) {
    fmt::print(stderr, "stage08-vfio: {}\n", vm.error());
    return 1;
  }
  auto& machine = **vm;
  fmt::print("passing {} through ({}, container with {} DMA mapping(s) of guest RAM)\n", bdf, machine.group().name(),
             machine.dma().mappings().size());
  auto gdb_stub = stage03::attach_gdb_stub(machine.pci().serial(), gdb_endpoint, image.elf_path, outcome);
  if (!gdb_stub) {
    fmt::print(stderr, "stage08-vfio: {}\n", gdb_stub.error());
    return 1;
  }
  std::fflush(stdout);
  auto started = machine.start([&outcome](const Result<machine::VcpuOutcome>& r) { outcome.vcpu_stopped(r); });
  if (!started) {
    fmt::print(stderr, "stage08-vfio: {}\n", started.error());
    return 1;
  }
  const bool finished = outcome.wait(timeout_seconds);
  machine.stop();
  std::fflush(stdout);
  const int status = outcome.finish("stage08-vfio", finished, timeout_seconds);

  const auto reports = machine.pci().serial().report().values();
  if (reports.size() == 6) {
    fmt::print(
        "\nthe guest reported: ID {:#010x}, liveness {}, 10! = {}, {} interrupts (status bits {:#x}), "
        "{} DMA bytes verified\n",
        reports[0], reports[1] != 0 ? "ok" : "wrong", reports[2], reports[3], reports[4], reports[5]);
  }
  fmt::print("\nDMA (IOVA = guest-physical, through the IOMMU):\n");
  for (const auto& mapping : machine.dma().mappings()) {
    fmt::print("  IOVA [{:#x}, {:#x}) -> host {:#x}\n", mapping.iova, mapping.iova + mapping.size, mapping.host_va);
  }
  fmt::print("BARs:\n");
  for (const auto& bar : machine.passthrough().bars_info()) {
    fmt::print("  BAR{} {} KiB at {}: ", bar.bar.index, bar.bar.size >> 10,
               bar.guest_address ? fmt::format("{:#x}", *bar.guest_address) : std::string("(not placed)"));
    if (bar.slot_handles.empty()) {
      fmt::print("trapped (every access exits)\n");
    } else {
      fmt::print("{} memory slot(s) {}\n", bar.slot_handles.size(), fmt::join(bar.slot_handles, ", "));
    }
  }
  if (auto* routes = machine.passthrough().msi_routes()) {
    fmt::print("MSI:\n");
    for (const auto& route : routes->routes()) {
      if (route.message) {
        fmt::print("  vector {} -> GSI {} -> address {:#x} data {:#x} (irqfd {})\n", route.vector, route.gsi,
                   route.message->address, route.message->data, routes->irqfd(route.vector)->fd());
      }
    }
  }
  const auto stats = machine.passthrough().stats();
  fmt::print("\n{:<48}{:>10}\n", "BAR accesses that exited to the VMM", stats.bar_reads + stats.bar_writes);
  fmt::print("{:<48}{:>10}\n", "config space reads / writes (always exit)",
             fmt::format("{} / {}", stats.config_reads, stats.config_writes));
  fmt::print("{:<48}{:>10}\n", "  writes forwarded to the device", stats.config_forwarded);
  fmt::print("{:<48}{:>10}\n", "VFIO_DEVICE_SET_IRQS calls", stats.set_irqs);
  fmt::print("{:<48}{:>10}\n", "interrupts relayed by the VMM", stats.relayed);
  fmt::print("{:<48}{:>10}\n", "KVM-VFIO device groups", machine.kvm_vfio().groups().size());

  // The vCPU loop's view: every KVM_RUN that came back to the VMM, and how many of those were MMIO exits inside the
  // device's BARs (none with memory slots: the guest's loads and stores reached the device without leaving KVM).
  const auto exits = machine.exits().snapshot();
  std::vector<std::string> reasons;
  for (std::size_t i = 0; i < machine::kExitReasonCount; ++i) {
    if (exits.by_reason[i] != 0) {
      reasons.push_back(
          fmt::format("{} {}", machine::to_string(static_cast<machine::ExitReason>(i)), exits.by_reason[i]));
    }
  }
  std::uint64_t bar_exits = 0;
  for (const auto& bar : machine.passthrough().bars_info()) {
    if (bar.guest_address) {
      const auto end = exits.mmio.lower_bound(*bar.guest_address + bar.bar.size);
      for (auto it = exits.mmio.lower_bound(*bar.guest_address); it != end; ++it) {
        bar_exits += it->second.total();
      }
    }
  }
  fmt::print("\n{:<48}{:>10}\n", "KVM exits to the VMM", exits.total());
  fmt::print("  {}\n", fmt::join(reasons, ", "));
  fmt::print("{:<48}{:>10}\n", "  MMIO exits inside the device's BARs", bar_exits);
  if (stats.errors != 0) {
    fmt::print("{:<48}{:>10}\n", "passthrough errors", stats.errors);
    if (auto error = machine.passthrough().last_error()) {
      fmt::print("  last: {}\n", *error);
    }
  }
  return status;
}
