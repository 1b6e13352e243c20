// Figure 2 of the benchmark report: what a kick costs, with stage05's synchronous notify and with stage06's
// ioeventfd.
//
// The same guest (stage05's virtio-rng driver) runs on both machines, in flags mode (no EVENT_IDX) with one request
// per batch, so every request is exactly one kick (a write to the notify area) and one interrupt:
//
//   sync     stage05's VirtioRngVm: the kick is an MMIO exit; the vCPU thread serves the queue inside it and
//            signals the interrupt with KVM_SIGNAL_MSI.
//   eventfd  stage06's EventfdRngVm: the kick is an ioeventfd KVM completes in the kernel; the device's worker
//            thread serves the queue and signals through an irqfd.
//
// Counts are exact (the vCPU loop's ExitCounters and the guest's own reports): userspace exits per kick. Time per
// request is a difference, so the machine's set-up and the guest's PCI enumeration cancel: each repetition runs
// both machines with `--batches` N1 and N2 requests, and (t(N2) - t(N1)) / (requests(N2) - requests(N1)) is the cost
// of one more request. One line per run, "KICK-RUN {json}"; tools/bench-report turns them into medians and ratios.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <guest/virtio_rng.hpp>
#include <span>
#include <string>
#include <vector>

#include "eventfd_rng_vm.hpp"
#include "guest_outcome.hpp"
#include "vmm/machine/exit_counters.hpp"

namespace {

using namespace vmm;

/// @brief What one run of the guest cost, counted from outside it.
struct KickRun {
  double seconds = 0;
  std::uint64_t requests = 0;
  std::uint64_t guest_kicks = 0;
  std::uint64_t notify_exits = 0;
  std::uint64_t exits = 0;
};

vmmlab_rng_options options_for(std::uint16_t batches) {
  auto options = stage05::default_rng_options();
  options.flags = VMMLAB_RNG_PHASE_FLAGS | VMMLAB_RNG_QUIET;  // flags mode: no suppression by event index
  options.batches = batches;
  options.per_batch = 1;  // one request, one kick, one interrupt
  return options;
}

void discard(std::span<const std::uint8_t>) {}

/// @brief Starts `vm`, waits for the guest's exit and returns the wall time from start to exit.
template <typename Vm>
Result<double> time_run(Vm& vm, stage03::GuestOutcome& outcome) {
  const auto start = std::chrono::steady_clock::now();
  if (auto started = vm.start([&outcome](const Result<machine::VcpuOutcome>& r) { outcome.vcpu_stopped(r); });
      !started) {
    return std::unexpected(started.error());
  }
  const bool finished = outcome.wait(120);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  vm.stop();
  if (!finished || outcome.exit_status() != 0u) {
    return logic_error("kick benchmark", "the guest did not pass (run stage06-irqfd-ioeventfd to see why)");
  }
  return seconds;
}

void add_reports(KickRun& run, const std::vector<std::uint32_t>& reports) {
  for (std::size_t i = 0; i + 3 < reports.size(); i += 4) {  // per phase: EVENT_IDX, requests, kicks, interrupts
    run.requests += reports[i + 1];
    run.guest_kicks += reports[i + 2];
  }
}

Result<KickRun> run_sync(std::uint16_t batches) {
  machine::ExitCounters exits;
  stage05::VirtioRngVmConfig config;
  config.options = options_for(batches);
  config.serial.exit_counters = &exits;
  stage03::GuestOutcome outcome;
  auto vm = stage05::VirtioRngVm::create(
      guest::virtio_rng(), discard, [&outcome](std::uint32_t s) { outcome.exited(s); }, config);
  if (!vm) {
    return std::unexpected(vm.error());
  }
  KickRun run;
  auto seconds = time_run(**vm, outcome);
  if (!seconds) {
    return std::unexpected(seconds.error());
  }
  run.seconds = *seconds;
  add_reports(run, (*vm)->pci().serial().report().values());
  const auto snapshot = exits.snapshot();
  run.exits = snapshot.total();
  run.notify_exits = stage06::notify_exits(snapshot, **vm);
  return run;
}

Result<KickRun> run_eventfd(std::uint16_t batches) {
  stage06::EventfdRngVmConfig config;
  config.rng.options = options_for(batches);
  stage03::GuestOutcome outcome;
  auto vm = stage06::EventfdRngVm::create(
      guest::virtio_rng(), discard, [&outcome](std::uint32_t s) { outcome.exited(s); }, config);
  if (!vm) {
    return std::unexpected(vm.error());
  }
  KickRun run;
  auto seconds = time_run(**vm, outcome);
  if (!seconds) {
    return std::unexpected(seconds.error());
  }
  run.seconds = *seconds;
  add_reports(run, (*vm)->rng_vm().pci().serial().report().values());
  const auto snapshot = (*vm)->exits().snapshot();
  run.exits = snapshot.total();
  run.notify_exits = stage06::notify_exits(snapshot, (*vm)->rng_vm());
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"stage06-bench-kicks: userspace exits per kick and time per request, stage05 vs stage06 wiring"};
  int repetitions = 5;
  std::vector<std::uint16_t> batches{32, 288};
  app.add_option("--repetitions", repetitions, "Runs of each machine (A B A B ...)")->check(CLI::PositiveNumber);
  app.add_option("--batches", batches, "The two request counts whose difference is timed")
      ->expected(2)
      ->check(CLI::Range(1, 65535));
  CLI11_PARSE(app, argc, argv);

  for (int r = 0; r < repetitions; ++r) {
    for (const char* machine : {"sync", "eventfd"}) {
      for (const auto n : batches) {
        auto run = std::string_view(machine) == "sync" ? run_sync(n) : run_eventfd(n);
        if (!run) {
          fmt::print(stderr, "stage06-bench-kicks: {} machine, {} requests: {}\n", machine, n, run.error());
          return 1;
        }
        fmt::print(
            "KICK-RUN {{\"machine\": \"{}\", \"batches\": {}, \"seconds\": {:.6f}, \"requests\": {}, "
            "\"guest_kicks\": {}, \"notify_exits\": {}, \"exits\": {}}}\n",
            machine, n, run->seconds, run->requests, run->guest_kicks, run->notify_exits, run->exits);
      }
    }
  }
  return 0;
}
