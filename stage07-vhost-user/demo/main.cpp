// stage07-vhost-user: stage05's rng guest again, but the device is served by another process. The demo starts the
// vhost-user-rng daemon, connects the VMM's frontend to it, and runs the guest: guest memory and the queue's
// eventfds go to the daemon over the socket, and the table shows that neither the kicks nor the interrupts passed
// through the VMM.
//
//   stage07-vhost-user                      start ./vhost-user-rng, run the guest, stop the daemon
//   stage07-vhost-user --trace-vhost-user   also print every vhost-user message, both sides (stderr)
//   stage07-vhost-user --socket PATH        use a backend that is already listening at PATH
//   stage07-vhost-user --no-ioeventfd       kicks exit to the VMM, which writes the kick eventfd itself
//   stage07-vhost-user --no-irqfd           the backend's call fd is the VMM's relay, not the vector's irqfd
//   stage07-vhost-user --reply-timeout 600  wait longer for each reply (a backend stopped in gdb)
//   stage07-vhost-user --gdb tcp:1234       hold the guest before its first instruction until gdb attaches
#include <fmt/format.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <filesystem>
#include <guest/virtio_rng.hpp>
#include <optional>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "gdb_session.hpp"
#include "guest_outcome.hpp"
#include "vhost_user_vm.hpp"
#include "vmm/event/write_all.hpp"

namespace {

using namespace vmm;

void write_stdout(std::span<const std::uint8_t> bytes) {
  (void)event::write_all(STDOUT_FILENO, bytes);
}

// The daemons are built next to the demo.
std::string sibling(const char* name) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(name) : (self.parent_path() / name).string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"stage07-vhost-user: the stage05 rng guest, its device served by the vhost-user-rng daemon"};
  double timeout_seconds = 60;
  bool trace_vhost_user = false;
  bool no_ioeventfd = false;
  bool no_irqfd = false;
  bool show_bytes = false;
  bool trace = false;
  std::string socket;
  std::string daemon = sibling("vhost-user-rng");
  app.add_option("--timeout", timeout_seconds, "Stop (with status 124) after this many seconds; 0 = never")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--trace-vhost-user", trace_vhost_user, "Print every vhost-user message on stderr, both sides");
  app.add_option("--socket", socket, "Connect to a backend already listening at this path (no daemon is started)");
  app.add_option("--daemon", daemon, "The backend program to start (default: vhost-user-rng next to this program)");
  app.add_flag("--no-ioeventfd", no_ioeventfd, "No ioeventfds: kicks exit to the VMM, which forwards them");
  app.add_flag("--no-irqfd", no_irqfd, "Give the backend the VMM's relay eventfd as call fd, not the irqfd");
  app.add_flag("--show-bytes", show_bytes, "Let the guest print the random bytes it gets");
  app.add_flag("--trace", trace, "Print every KVM exit to stderr as it happens");
  double reply_timeout = 5;
  app.add_option("--reply-timeout", reply_timeout,
                 "Seconds the frontend waits for each backend reply (raise it to step through a backend in gdb)")
      ->check(CLI::PositiveNumber);
  std::string gdb_endpoint;
  app.add_option("--gdb", gdb_endpoint, stage03::kGdbOptionHelp);
  CLI11_PARSE(app, argc, argv);
  if (!gdb_endpoint.empty() && app.count("--timeout") == 0) {
    timeout_seconds = 0;  // a person at gdb takes as long as they take
  }

  // The backend: a daemon of our own on a socket in a private directory, unless one was named.
  std::optional<stage07::ChildProcess> backend;
  std::string directory;
  if (socket.empty()) {
    char pattern[] = "/tmp/vmmlab-vhost-user-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) {
      fmt::print(stderr, "stage07-vhost-user: mkdtemp: {}\n", errno_name(errno));
      return 1;
    }
    directory = pattern;
    socket = directory + "/rng.sock";
    std::vector<std::string> args{daemon, "--socket", socket, "--once"};
    if (trace_vhost_user) {
      args.emplace_back("--trace-vhost-user");
    }
    auto child = stage07::ChildProcess::spawn(args);
    if (!child) {
      fmt::print(stderr, "stage07-vhost-user: cannot start {}: {}\n", daemon, child.error());
      return 1;
    }
    backend = std::move(*child);
    auto ready = backend->wait_for_output("listening", std::chrono::seconds(10));
    if (!ready || !*ready) {
      fmt::print(stderr, "stage07-vhost-user: {} did not start listening: {}\n", daemon,
                 ready ? backend->output() : ready.error().message());
      return 1;
    }
    fmt::print("backend: {} (pid {}) on {}\n", std::filesystem::path(daemon).filename().string(), backend->pid(),
               socket);
  }

  auto options = stage05::default_rng_options();
  if (!show_bytes) {
    options.flags |= VMMLAB_RNG_QUIET;
  }
  stage07::VhostUserVmConfig config;
  config.options = options;
  config.serial.trace = trace;
  config.ioeventfd = !no_ioeventfd;
  config.irqfd = !no_irqfd;
  config.frontend.socket_path = socket;
  config.frontend.device_type = VIRTIO_ID_RNG;
  config.frontend.queues = 1;
  config.frontend.queue_size = 256;
  config.frontend.reply_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(reply_timeout * 1000));
  if (trace_vhost_user) {
    config.frontend.tracer = vhost::Tracer("frontend", [](std::string_view line) { fmt::print(stderr, "{}\n", line); });
  }

  int status = 0;
  std::uint64_t requests = 0;
  std::uint64_t guest_kicks = 0;
  std::uint64_t guest_interrupts = 0;
  std::uint64_t notify_exits = 0;
  std::uint64_t irqfd_writes_by_vmm = 0;
  vhost::FrontendStats frontend_stats;
  {
    stage03::GuestOutcome outcome;
    const GuestImage image = guest::virtio_rng();
    auto vm = stage07::VhostUserVm::create(
        image, write_stdout, [&outcome](std::uint32_t s) { outcome.exited(s); }, config);
    if (!vm) {
      fmt::print(stderr, "stage07-vhost-user: {}\n", vm.error());
      return 1;
    }
    auto& machine = **vm;
    auto gdb_stub = stage03::attach_gdb_stub(machine.pci().serial(), gdb_endpoint, image.elf_path, outcome);
    if (!gdb_stub) {
      fmt::print(stderr, "stage07-vhost-user: {}\n", gdb_stub.error());
      return 1;
    }
    std::fflush(stdout);
    auto started = machine.start([&outcome](const Result<machine::VcpuOutcome>& r) { outcome.vcpu_stopped(r); });
    if (!started) {
      fmt::print(stderr, "stage07-vhost-user: {}\n", started.error());
      return 1;
    }
    const bool finished = outcome.wait(timeout_seconds);
    machine.stop();
    std::fflush(stdout);
    status = outcome.finish("stage07-vhost-user", finished, timeout_seconds);
    const auto reports = machine.pci().serial().report().values();  // four per phase
    for (std::size_t i = 0; i + 3 < reports.size(); i += 4) {
      requests += reports[i + 1];
      guest_kicks += reports[i + 2];
      guest_interrupts += reports[i + 3];
    }
    notify_exits = machine.notify_exits();
    irqfd_writes_by_vmm = machine.msix_routes().signals();
    frontend_stats = machine.frontend().stats();
  }  // the machine goes: the frontend stops the rings and closes the socket, so a --once daemon ends its session

  fmt::print("\n{:<44}{:>10}\n", "requests (both phases)", requests);
  fmt::print("{:<44}{:>10}\n", "guest kicks (notify writes)", guest_kicks);
  fmt::print("{:<44}{:>10}\n", "  of which exited to the VMM", notify_exits);
  fmt::print("{:<44}{:>10}\n", "interrupts the guest took", guest_interrupts);
  fmt::print("{:<44}{:>10}\n", "  of which the VMM relayed", frontend_stats.relayed_interrupts);
  fmt::print("{:<44}{:>10}\n", "  of which the VMM wrote to an irqfd", irqfd_writes_by_vmm);
  fmt::print("{:<44}{:>10}\n", "vhost-user messages sent by the frontend", frontend_stats.messages_sent);

  if (backend) {
    auto ended = backend->wait(std::chrono::seconds(10));
    if (!ended) {
      ended = backend->terminate(std::chrono::seconds(5));
    }
    fmt::print("\nbackend log:\n{}", backend->output());
    if (ended) {
      fmt::print("backend {}\n", ended->describe());
      if (ended->code != 0 && status == 0) {
        status = 1;
      }
    }
    std::error_code ec;
    std::filesystem::remove_all(directory, ec);
  }
  return status;
}
