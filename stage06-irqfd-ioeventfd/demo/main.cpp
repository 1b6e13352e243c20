// stage06-irqfd-ioeventfd: stage05's guest and device, run twice: once wired as in stage05 (a kick is a userspace
// exit, the device works on the vCPU thread, interrupts go out with KVM_SIGNAL_MSI), once wired with eventfds (the
// kick is an ioeventfd, a worker thread serves the queue, interrupts are irqfds on GSI routes). The table compares
// what each run cost in userspace exits, per request.
//
//   stage06-irqfd-ioeventfd                 both runs, then the comparison
//   stage06-irqfd-ioeventfd --stats         also every exit reason, and KVM's own counters for the eventfd run
//   stage06-irqfd-ioeventfd --no-ioeventfd  the eventfd run without ioeventfds (kicks exit again; irqfds stay)
//   stage06-irqfd-ioeventfd --show-bytes    let the guest print its random bytes
//   stage06-irqfd-ioeventfd --gdb tcp:1234  hold the eventfd run's guest before its first instruction for gdb
#include <fmt/format.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <guest/virtio_rng.hpp>
#include <optional>
#include <string>
#include <vector>

#include "eventfd_rng_vm.hpp"
#include "gdb_session.hpp"
#include "guest_outcome.hpp"
#include "vmm/event/write_all.hpp"
#include "vmm/machine/exit_stats.hpp"
#include "vmm/machine/kvm_stats.hpp"

namespace {

using namespace vmm;

void write_stdout(std::span<const std::uint8_t> bytes) {
  (void)event::write_all(STDOUT_FILENO, bytes);
}

// What one run cost, measured from outside the guest.
struct RunFigures {
  std::uint64_t requests = 0;     // guest reports, summed over phases
  std::uint64_t guest_kicks = 0;  // notify writes the guest made
  std::uint64_t guest_interrupts = 0;
  std::uint64_t exits = 0;         // userspace exits (KVM_RUN returns) of the vCPU loop
  std::uint64_t notify_exits = 0;  // of which MMIO writes to the rng's notify area
  std::uint64_t msi_signals = 0;   // MSI-X messages the transport sent (KVM_SIGNAL_MSI or irqfd writes)
  std::string threads;             // who did the work (eventfd run)
  std::string stats;               // --stats tables
};

// The guest reports four values per phase: EVENT_IDX negotiated, requests, kicks, interrupts.
void add_guest_reports(RunFigures& figures, const std::vector<std::uint32_t>& reports) {
  for (std::size_t i = 0; i + 3 < reports.size(); i += 4) {
    figures.requests += reports[i + 1];
    figures.guest_kicks += reports[i + 2];
    figures.guest_interrupts += reports[i + 3];
  }
}

std::uint64_t device_interrupts(virtio::VirtioPciDevice& transport) {
  std::uint64_t total = 0;
  for (const auto& record : transport.history()) {
    for (const auto& queue : record.queues) {
      total += queue.interrupts;
    }
  }
  return total;
}

// Runs the guest on `vm` to its exit; returns the demo status for the run (0 when the guest passed).
template <typename Vm>
int run(Vm& vm, stage03::GuestOutcome& outcome, double timeout_seconds, const char* what) {
  fmt::print("--- {} ---\n", what);
  std::fflush(stdout);
  auto started = vm.start([&outcome](const Result<machine::VcpuOutcome>& result) { outcome.vcpu_stopped(result); });
  if (!started) {
    fmt::print(stderr, "stage06-irqfd-ioeventfd: {}\n", started.error());
    return 1;
  }
  const bool finished = outcome.wait(timeout_seconds);
  vm.stop();
  std::fflush(stdout);
  return outcome.finish("stage06-irqfd-ioeventfd", finished, timeout_seconds);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"stage06-irqfd-ioeventfd: the stage05 guest with stage05's wiring and with ioeventfds and irqfds"};
  double timeout_seconds = 60;
  bool stats = false;
  bool no_ioeventfd = false;
  bool show_bytes = false;
  bool trace = false;
  app.add_option("--timeout", timeout_seconds, "Stop a run (with status 124) after this many seconds; 0 = never")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--stats", stats, "Print every exit reason and KVM's own vCPU counters for the eventfd run");
  app.add_flag("--no-ioeventfd", no_ioeventfd, "Do not register ioeventfds in the eventfd run (kicks exit again)");
  app.add_flag("--show-bytes", show_bytes, "Let the guest print the random bytes it gets");
  app.add_flag("--trace", trace, "Print every KVM exit to stderr as it happens");
  std::string gdb_endpoint;
  app.add_option("--gdb", gdb_endpoint, fmt::format("{} (the eventfd run)", stage03::kGdbOptionHelp));
  CLI11_PARSE(app, argc, argv);
  if (!gdb_endpoint.empty() && app.count("--timeout") == 0) {
    timeout_seconds = 0;  // a person at gdb takes as long as they take
  }

  auto options = stage05::default_rng_options();
  if (!show_bytes) {
    options.flags |= VMMLAB_RNG_QUIET;
  }

  // Run 1: stage05's wiring, with the vCPU loop counting exits.
  RunFigures sync;
  {
    machine::ExitCounters exits;
    stage05::VirtioRngVmConfig config;
    config.options = options;
    config.serial.trace = trace;
    config.serial.exit_counters = &exits;
    stage03::GuestOutcome outcome;
    auto vm = stage05::VirtioRngVm::create(
        guest::virtio_rng(), write_stdout, [&outcome](std::uint32_t status) { outcome.exited(status); }, config);
    if (!vm) {
      fmt::print(stderr, "stage06-irqfd-ioeventfd: {}\n", vm.error());
      return 1;
    }
    if (const int status = run(**vm, outcome, timeout_seconds, "run 1: stage05 wiring (synchronous)"); status != 0) {
      return status;
    }
    const auto snapshot = exits.snapshot();
    add_guest_reports(sync, (*vm)->pci().serial().report().values());
    sync.exits = snapshot.total();
    sync.notify_exits = stage06::notify_exits(snapshot, **vm);
    sync.msi_signals = device_interrupts((*vm)->transport());
  }

  // Run 2: the eventfd wiring.
  RunFigures evfd;
  {
    stage06::EventfdRngVmConfig config;
    config.rng.options = options;
    config.rng.serial.trace = trace;
    config.ioeventfd = !no_ioeventfd;
    stage03::GuestOutcome outcome;
    const GuestImage image = guest::virtio_rng();
    auto vm = stage06::EventfdRngVm::create(
        image, write_stdout, [&outcome](std::uint32_t status) { outcome.exited(status); }, config);
    if (!vm) {
      fmt::print(stderr, "stage06-irqfd-ioeventfd: {}\n", vm.error());
      return 1;
    }
    auto& machine = **vm;
    auto gdb_stub = stage03::attach_gdb_stub(machine.rng_vm().pci().serial(), gdb_endpoint, image.elf_path, outcome);
    if (!gdb_stub) {
      fmt::print(stderr, "stage06-irqfd-ioeventfd: {}\n", gdb_stub.error());
      return 1;
    }
    if (const int status = run(machine, outcome, timeout_seconds, "run 2: ioeventfd + worker thread + irqfd");
        status != 0 || !outcome.exit_status()) {
      return status;  // failed, or gdb killed it: no figures to compare
    }
    const auto snapshot = machine.exits().snapshot();
    add_guest_reports(evfd, machine.rng_vm().pci().serial().report().values());
    evfd.exits = snapshot.total();
    evfd.notify_exits = stage06::notify_exits(snapshot, machine.rng_vm());
    evfd.msi_signals = machine.msix_routes().signals();
    evfd.threads = fmt::format(
        "the virtio-rng worker thread woke {} times for {} kicks read from ioeventfds; the "
        "UART's line asserted {} times through its irqfd",
        machine.threaded().wakeups(), machine.threaded().ioeventfd_kicks(),
        machine.uart_line() != nullptr ? machine.uart_line()->asserts() : 0);
    if (stats) {
      // KVM's own counters for the vCPU, next to the VMM's: the exits KVM handled itself (ioeventfd writes, HLT with
      // the in-kernel irqchip) appear only there.
      std::vector<machine::Stat> kvm;
      if (auto opened = machine::KvmStats::open(machine.rng_vm().pci().serial().vm().vcpu().fd()); opened) {
        if (auto values = opened->read(); values) {
          kvm = std::move(*values);
        }
      }
      evfd.stats = machine::format_exit_stats(snapshot, kvm);
    }
  }

  const auto per_request = [](std::uint64_t n, std::uint64_t requests) {
    return requests == 0 ? std::string("-") : fmt::format("{:.2f}", static_cast<double>(n) / requests);
  };
  fmt::print("\n{:<40}{:>14}{:>14}\n", "", "synchronous", "eventfd");
  const auto row = [](const char* name, const std::string& a, const std::string& b) {
    fmt::print("{:<40}{:>14}{:>14}\n", name, a, b);
  };
  row("requests (both phases)", std::to_string(sync.requests), std::to_string(evfd.requests));
  row("guest kicks (notify writes)", std::to_string(sync.guest_kicks), std::to_string(evfd.guest_kicks));
  row("userspace exits for kicks", std::to_string(sync.notify_exits), std::to_string(evfd.notify_exits));
  row("  per request", per_request(sync.notify_exits, sync.requests), per_request(evfd.notify_exits, evfd.requests));
  row("userspace exits, all reasons", std::to_string(sync.exits), std::to_string(evfd.exits));
  row("  per request", per_request(sync.exits, sync.requests), per_request(evfd.exits, evfd.requests));
  row("MSI-X messages sent", std::to_string(sync.msi_signals), std::to_string(evfd.msi_signals));
  row("interrupts the guest took", std::to_string(sync.guest_interrupts), std::to_string(evfd.guest_interrupts));
  fmt::print("\nsynchronous: the vCPU thread served every kick inside its MMIO exit (KVM_SIGNAL_MSI)\n");
  fmt::print("eventfd: {}\n", evfd.threads);
  if (stats) {
    fmt::print("\n{}", evfd.stats);
  }
  return 0;
}
