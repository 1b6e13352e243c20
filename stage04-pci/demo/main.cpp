// stage04-pci: a bare-metal PCI enumerator in a 64-bit guest, and the VMM's view of the bus it programmed.
//
// The guest (guest/enumerate.c) scans bus 0 through 0xCF8/0xCFC, sizes and assigns the BARs, walks the capability
// lists and takes an MSI-X interrupt from the test device at 00:03.0. Its listing arrives on COM1; once it exits,
// the VMM prints the same bus as it sees it: configuration space read through PciRoot, the BARs as mapped on the
// buses, and the MSI-X entry the guest programmed.
//
//   stage04-pci                 run it (exit status 0 when the guest passed)
//   stage04-pci --timeout 30    give up (status 124) after 30 s
//   stage04-pci --trace         every exit on stderr
//   stage04-pci --gdb tcp:1234  hold the guest before its first instruction until gdb attaches
#include <fmt/format.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <guest/enumerate.hpp>

#include "gdb_session.hpp"
#include "guest_outcome.hpp"
#include "pci_vm.hpp"
#include "vmm/event/write_all.hpp"

namespace {

// The UART's output goes to stdout (called on the vCPU thread). If stdout is gone there is nobody to tell.
void write_stdout(std::span<const std::uint8_t> bytes) {
  (void)vmm::event::write_all(STDOUT_FILENO, bytes);
}

std::uint32_t config_read32(const vmm::pci::PciRoot& root, std::uint8_t device, std::uint16_t reg) {
  std::array<std::uint8_t, 4> bytes{};
  root.config_read(0, device, 0, reg, bytes);
  return static_cast<std::uint32_t>(bytes[0]) | static_cast<std::uint32_t>(bytes[1]) << 8 |
         static_cast<std::uint32_t>(bytes[2]) << 16 | static_cast<std::uint32_t>(bytes[3]) << 24;
}

// The VMM's side of the bus: IDs and class from configuration space, BARs from the buses, the MSI-X entry 0.
void print_vmm_view(vmm::stage04::PciVm& vm) {
  using namespace vmm::pci;
  fmt::print("\nVMM view of bus 0:\n");
  const auto mappings = vm.root().mappings();
  for (std::uint8_t slot = 0; slot < PciRoot::kDevicesPerBus; ++slot) {
    const auto device = vm.root().device(slot);
    if (!device) {
      continue;
    }
    const std::uint32_t ids = config_read32(vm.root(), slot, 0x00);
    const std::uint32_t class_revision = config_read32(vm.root(), slot, 0x08);
    fmt::print("00:{:02x}.0 {:04x}:{:04x} class {:06x} {}\n", slot, ids & 0xffff, ids >> 16, class_revision >> 8,
               device->name());
    for (const auto& m : mappings) {
      if (m.device_number == slot) {
        fmt::print("  BAR{} {} mapped at {:#x} size {:#x}\n", m.bar_index, m.space == BarSpace::Io ? "io" : "mem",
                   m.base, m.size);
      }
    }
  }
  auto& msix = vm.test_device().msix();
  if (const auto entry = msix.entry(0)) {
    fmt::print("MSI-X {}, entry 0: address {:#x} data {:#x} {}, messages delivered {}\n",
               msix.enabled() ? "enabled" : "disabled", entry->address, entry->data,
               (entry->control & 1) != 0 ? "masked" : "unmasked", vm.test_device().fired());
  }
  for (const auto& error : vm.root().mapping_errors()) {
    fmt::print("mapping error: {}\n", error);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace vmm;
  CLI::App app{"stage04-pci: a PCI enumerator guest and the VMM's view of the bus"};
  stage03::SerialVmConfig config;
  double timeout_seconds = 60;
  app.add_flag("--trace", config.trace, "Print every KVM exit to stderr as it happens");
  app.add_option("--timeout", timeout_seconds, "Stop the VM (with status 124) after this many seconds; 0 = never")
      ->check(CLI::NonNegativeNumber);
  std::string gdb_endpoint;
  app.add_option("--gdb", gdb_endpoint, stage03::kGdbOptionHelp);
  CLI11_PARSE(app, argc, argv);
  if (!gdb_endpoint.empty() && app.count("--timeout") == 0) {
    timeout_seconds = 0;  // a person at gdb takes as long as they take
  }

  stage03::GuestOutcome outcome;
  const GuestImage image = guest::enumerate();
  auto vm = stage04::PciVm::create(
      image, write_stdout, [&outcome](std::uint32_t status) { outcome.exited(status); }, config);
  if (!vm) {
    fmt::print(stderr, "stage04-pci: {}\n", vm.error());
    return 1;
  }
  auto gdb_stub = stage03::attach_gdb_stub(vm.value()->serial(), gdb_endpoint, image.elf_path, outcome);
  if (!gdb_stub) {
    fmt::print(stderr, "stage04-pci: {}\n", gdb_stub.error());
    return 1;
  }
  auto started =
      vm.value()->start([&outcome](const Result<machine::VcpuOutcome>& result) { outcome.vcpu_stopped(result); });
  if (!started) {
    fmt::print(stderr, "stage04-pci: {}\n", started.error());
    return 1;
  }

  const bool finished = outcome.wait(timeout_seconds);
  vm.value()->stop();
  std::fflush(stdout);
  if (finished && outcome.exit_status()) {
    print_vmm_view(*vm.value());
  }
  return outcome.finish("stage04-pci", finished, timeout_seconds);
}
