// stage05-virtio-rng: a bare-metal virtio driver asks a virtio-rng device for random bytes through a split
// virtqueue, once with VIRTIO_RING_F_EVENT_IDX and once without, and the VMM shows what each side counted.
//
// The guest (guest/virtio_rng.c) finds the device on PCI bus 0, follows the virtio initialization sequence, sets up
// one queue and posts requests in batches; its listing (the bytes it got) arrives on COM1. Once it exits, the VMM
// prints, side by side for each phase, the guest's own counts (requests, kicks, interrupts) and the device's
// (notifications received, interrupts sent and suppressed, chains processed).
//
//   stage05-virtio-rng                         both phases (exit status 0 when the guest passed)
//   stage05-virtio-rng --no-event-idx          only the flags phase
//   stage05-virtio-rng --batches 8 --per-batch 2 --bytes 32
//   stage05-virtio-rng --rate-limit 1024       the device serves at most 1024 bytes per second
//   stage05-virtio-rng --trace                 every exit on stderr
//   stage05-virtio-rng --gdb tcp:1234          hold the guest before its first instruction until gdb attaches
#include <fmt/format.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <guest/virtio_rng.hpp>
#include <string>
#include <vector>

#include "gdb_session.hpp"
#include "guest_outcome.hpp"
#include "virtio_rng_vm.hpp"
#include "vmm/event/write_all.hpp"

namespace {

using namespace vmm;

void write_stdout(std::span<const std::uint8_t> bytes) {
  (void)event::write_all(STDOUT_FILENO, bytes);
}

// One column of the table: a phase as both sides saw it.
struct Column {
  std::string title;
  std::vector<std::string> cells;
};

// The guest reports four values per phase: EVENT_IDX negotiated, requests, kicks, interrupts. The device keeps one
// ActivationRecord per phase (its counters when the guest reset it), plus the live counters if still active.
std::vector<Column> phase_columns(virtio::VirtioPciDevice& transport, const std::vector<std::uint32_t>& reports) {
  auto records = transport.history();
  if (transport.active()) {
    records.push_back({.features = transport.driver_features(), .queues = transport.counters()});
  }
  std::vector<Column> columns;
  for (std::size_t phase = 0; phase < records.size(); ++phase) {
    const auto& record = records[phase];
    const bool event_idx = virtio::has_feature(record.features, VIRTIO_RING_F_EVENT_IDX);
    const auto queue = record.queues.empty() ? virtio::QueueCountersSnapshot{} : record.queues[0];
    Column column{.title = event_idx ? "EVENT_IDX on" : "EVENT_IDX off", .cells = {}};
    auto guest = [&](std::size_t i) {
      const std::size_t index = phase * 4 + i;
      return index < reports.size() ? std::to_string(reports[index]) : std::string("-");
    };
    column.cells = {guest(1),
                    guest(2),
                    guest(3),
                    std::to_string(queue.notifications),
                    std::to_string(queue.chains),
                    std::to_string(queue.used),
                    std::to_string(queue.interrupts),
                    std::to_string(queue.interrupts_suppressed),
                    std::to_string(queue.errors)};
    columns.push_back(std::move(column));
  }
  return columns;
}

void print_counters(stage05::VirtioRngVm& vm) {
  const auto columns = phase_columns(vm.transport(), vm.pci().serial().report().values());
  const std::vector<std::string> rows = {
      "guest: requests posted",         "guest: kicks (notify writes)",  "guest: interrupts taken",
      "device: notifications received", "device: chains processed",      "device: used entries",
      "device: interrupts sent",        "device: interrupts suppressed", "device: driver errors"};
  fmt::print("\nvirtio-rng requestq, per phase:\n{:<34}", "");
  for (const auto& column : columns) {
    fmt::print("{:>15}", column.title);
  }
  fmt::print("\n");
  for (std::size_t row = 0; row < rows.size(); ++row) {
    fmt::print("{:<34}", rows[row]);
    for (const auto& column : columns) {
      fmt::print("{:>15}", column.cells[row]);
    }
    fmt::print("\n");
  }
  fmt::print("random bytes served: {}", vm.rng().bytes_served());
  if (vm.rng().throttled() > 0) {
    fmt::print(", requests delayed by the rate limit: {}", vm.rng().throttled());
  }
  fmt::print("\n");
  if (auto error = vm.transport().last_error()) {
    fmt::print("last driver error: {}\n", *error);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"stage05-virtio-rng: a bare-metal virtio driver, a virtio-rng device, and what each side counted"};
  stage05::VirtioRngVmConfig config;
  vmmlab_rng_options options = stage05::default_rng_options();
  double timeout_seconds = 60;
  bool no_event_idx = false;
  bool only_event_idx = false;
  bool chained = false;
  bool quiet = false;
  std::uint64_t rate_limit = 0;
  app.add_flag("--trace", config.serial.trace, "Print every KVM exit to stderr as it happens");
  app.add_option("--timeout", timeout_seconds, "Stop the VM (with status 124) after this many seconds; 0 = never")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--batches", options.batches, "Batches of requests per phase")->check(CLI::Range(1, 64));
  app.add_option("--per-batch", options.per_batch, "Requests per batch (at most the driver's queue size)")
      ->check(CLI::Range(1, 256));
  app.add_option("--bytes", options.request_bytes, "Bytes per request")->check(CLI::Range(1, 256));
  app.add_option("--queue-size", options.queue_size, "The driver's queue size (a power of two, at most 256)")
      ->check(CLI::IsMember({1, 2, 4, 8, 16, 32, 64, 128, 256}));
  auto* no_event_idx_flag =
      app.add_flag("--no-event-idx", no_event_idx, "Run only the phase without VIRTIO_RING_F_EVENT_IDX");
  app.add_flag("--only-event-idx", only_event_idx, "Run only the phase with VIRTIO_RING_F_EVENT_IDX")
      ->excludes(no_event_idx_flag);
  app.add_flag("--chained", chained, "Make each request a chain of two writable descriptors");
  app.add_flag("--quiet", quiet, "Do not print the random bytes");
  app.add_option("--rate-limit", rate_limit, "Limit the device to this many bytes per second (0: no limit)");
  std::string gdb_endpoint;
  app.add_option("--gdb", gdb_endpoint, stage03::kGdbOptionHelp);
  CLI11_PARSE(app, argc, argv);
  if (!gdb_endpoint.empty() && app.count("--timeout") == 0) {
    timeout_seconds = 0;  // a person at gdb takes as long as they take
  }
  if (options.per_batch > options.queue_size) {
    fmt::print(stderr, "stage05-virtio-rng: --per-batch {} does not fit in a queue of {}\n", options.per_batch,
               options.queue_size);
    return 2;
  }
  if (no_event_idx) {
    options.flags &= ~VMMLAB_RNG_PHASE_EVENT_IDX;
  }
  if (only_event_idx) {
    options.flags &= ~VMMLAB_RNG_PHASE_FLAGS;
  }
  if (chained) {
    options.flags |= VMMLAB_RNG_CHAINED;
  }
  if (quiet) {
    options.flags |= VMMLAB_RNG_QUIET;
  }
  config.options = options;
  if (rate_limit > 0) {
    config.bytes_per_second = rate_limit;
  }

  stage03::GuestOutcome outcome;
  const GuestImage image = guest::virtio_rng();
  auto vm = stage05::VirtioRngVm::create(
      image, write_stdout, [&outcome](std::uint32_t status) { outcome.exited(status); }, config);
  if (!vm) {
    fmt::print(stderr, "stage05-virtio-rng: {}\n", vm.error());
    return 1;
  }
  auto gdb_stub = stage03::attach_gdb_stub(vm.value()->pci().serial(), gdb_endpoint, image.elf_path, outcome);
  if (!gdb_stub) {
    fmt::print(stderr, "stage05-virtio-rng: {}\n", gdb_stub.error());
    return 1;
  }
  auto started =
      vm.value()->start([&outcome](const Result<machine::VcpuOutcome>& result) { outcome.vcpu_stopped(result); });
  if (!started) {
    fmt::print(stderr, "stage05-virtio-rng: {}\n", started.error());
    return 1;
  }
  const bool finished = outcome.wait(timeout_seconds);
  vm.value()->stop();
  std::fflush(stdout);
  if (finished && outcome.exit_status()) {
    print_counters(*vm.value());
  }
  return outcome.finish("stage05-virtio-rng", finished, timeout_seconds);
}
