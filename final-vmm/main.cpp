// final-vmm: boots Linux. The command line (Cloud Hypervisor's style) becomes a VmConfig, the VmConfig a Vmm; then
// the main thread runs an epoll loop for the console (stdin to COM1), signals and the end of the VM, while each vCPU
// runs on its own thread.
//
//   final-vmm --kernel bzImage --initramfs initramfs.cpio.gz --cpus boot=2 --memory size=512M --rng
//             --disk path=disk.img --cmdline "console=ttyS0 reboot=k panic=1"
//
// Exit status: 0 when the guest rebooted (or the host stopped it), 1 on a guest panic or a VMM error, 2 for a bad
// command line.

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <optional>

#include "vmm/event/console_input.hpp"
#include "vmm/event/event_loop.hpp"
#include "vmm/event/terminal.hpp"
#include "vmm/event/write_all.hpp"
#include "vmm/gdb/stub.hpp"
#include "vmm/machine/cli.hpp"
#include "vmm/machine/console.hpp"
#include "vmm/machine/vmm.hpp"

using namespace vmm;

namespace {

constexpr const char* kName = "final-vmm";

// Where COM1's output goes: stdout, a file, or nowhere. The panic watch sees it all.
Result<devices::Uart16550::OutputSink> console_sink(const machine::SerialConfig& serial,
                                                    std::shared_ptr<machine::PanicWatch> watch) {
  std::shared_ptr<Fd> out;
  if (serial.mode == machine::SerialConfig::Mode::Tty) {
    const int dup = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) {
      return sys_error("fcntl(F_DUPFD_CLOEXEC)", errno, "stdout");
    }
    out = std::make_shared<Fd>(dup);
  } else if (serial.mode == machine::SerialConfig::Mode::File) {
    auto file = Fd::open(serial.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC);
    if (!file) {
      return std::unexpected(file.error().with_context("--serial file"));
    }
    out = std::make_shared<Fd>(std::move(*file));
  }
  return [out, watch](std::span<const std::uint8_t> bytes) {
    watch->observe(bytes);
    if (out) {
      (void)event::write_all(out->get(), bytes);
    }
  };
}

Result<void> write_topology(const machine::Vmm& vmm, const std::string& path) {
  auto file = Fd::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC);
  if (!file) {
    return std::unexpected(file.error().with_context("--dump-topology"));
  }
  const auto dot = machine::to_dot(vmm.topology());
  return event::write_all(file->get(), std::span(reinterpret_cast<const std::uint8_t*>(dot.data()), dot.size()));
}

}  // namespace

int main(int argc, char** argv) {
  auto cli = machine::parse_command_line(argc, argv);
  if (!cli.config) {
    std::fputs(cli.output.c_str(), cli.exit_code == 0 ? stdout : stderr);
    return cli.exit_code;
  }
  const auto& config = *cli.config;

  auto loop = event::EventLoop::create();
  if (!loop) {
    fmt::print(stderr, "{}: {}\n", kName, loop.error());
    return 1;
  }
  // Signals are events on this thread; blocked before any other thread starts, so they all inherit the mask.
  std::optional<machine::VmExit> ended;
  std::string stop_reason;
  auto stop_with = [&](std::string why) {
    if (stop_reason.empty()) {
      stop_reason = std::move(why);
    }
    loop->stop();
  };
  if (auto rc = loop->add_signals({SIGINT, SIGTERM, SIGHUP},
                                  [&](const signalfd_siginfo& info) {
                                    stop_with(fmt::format("signal {}", strsignal(static_cast<int>(info.ssi_signo))));
                                  });
      !rc) {
    fmt::print(stderr, "{}: {}\n", kName, rc.error());
    return 1;
  }

  auto watch = std::make_shared<machine::PanicWatch>();
  auto sink = console_sink(config.serial, watch);
  if (!sink) {
    fmt::print(stderr, "{}: {}\n", kName, sink.error());
    return 1;
  }
  auto vmm = machine::Vmm::create(config, std::move(*sink));
  if (!vmm) {
    fmt::print(stderr, "{}: {}\n", kName, vmm.error());
    return 1;
  }
  const auto& boot = (*vmm)->boot_info();
  if (config.trace) {
    fmt::print(stderr, "{}: {} {}{}, entry {:#x}, zero page {:#x}, initramfs {} bytes at {:#x}, {} vCPUs\n", kName,
               boot::to_string(boot.kernel.format), boot.kernel.version.empty() ? "" : "version ", boot.kernel.version,
               boot.kernel.entry, boot.zero_page, boot.initramfs_size, boot.initramfs.value_or(0),
               (*vmm)->vcpu_count());
  }
  if (config.dump_topology) {
    if (auto rc = write_topology(**vmm, *config.dump_topology); !rc) {
      fmt::print(stderr, "{}: {}\n", kName, rc.error());
      return 1;
    }
  }

  // gdb: the stub holds every vCPU before its first instruction until gdb continues.
  std::unique_ptr<gdb::GdbStub> gdb_stub;
  if (config.gdb) {
    auto endpoint = gdb::GdbEndpoint::parse(*config.gdb);
    std::vector<kvm::Vcpu*> vcpus;
    for (std::size_t i = 0; i < (*vmm)->vcpu_count(); ++i) {
      vcpus.push_back(&(*vmm)->vcpu(i));
    }
    auto stub =
        endpoint
            ? gdb::GdbStub::listen(
                  *endpoint, std::move(vcpus), (*vmm)->memory(),
                  {.start_paused = true,
                   .on_kill = [notifier = loop->notifier(),
                               &stop_with] { notifier->post([&stop_with] { stop_with("gdb killed the guest"); }); },
                   .log = nullptr,
                   .support = std::nullopt})
            : std::unexpected(endpoint.error());
    if (!stub) {
      fmt::print(stderr, "{}: {}\n", kName, stub.error());
      return 1;
    }
    gdb_stub = std::move(*stub);
    (*vmm)->set_debug_hook(gdb_stub.get());
    fmt::print(stderr, "{}: attach with: gdb -ex '{}' vmlinux (an ELF kernel with symbols; boot it with nokaslr)\n",
               kName, gdb_stub->target_remote_command());
  }

  // The console: raw while the guest owns the terminal (Ctrl-C goes to the guest's shell; Ctrl-A x quits).
  std::optional<event::Terminal> terminal;
  std::optional<event::ConsoleInput> input;
  if (config.serial.mode == machine::SerialConfig::Mode::Tty) {
    auto raw = event::Terminal::make_raw_stdin(event::SignalKeys::ToGuest);
    if (!raw) {
      fmt::print(stderr, "{}: {}\n", kName, raw.error());
      return 1;
    }
    terminal.emplace(std::move(*raw));
    if (terminal->is_tty()) {
      (void)event::Terminal::restore_on_fatal_signal();
      fmt::print(stderr, "{}: Ctrl-A x quits\r\n", kName);
    }
    input.emplace((*vmm)->uart());
    if (auto rc = input->watch_stdin(
            *loop, [&] { stop_with("Ctrl-A x"); }, std::chrono::milliseconds(5));
        !rc) {
      fmt::print(stderr, "{}: {}\n", kName, rc.error());
      return 1;
    }
  }

  auto started = (*vmm)->start([notifier = loop->notifier(), &ended, &stop_with](const machine::VmExit& exit) {
    notifier->post([&ended, &stop_with, exit] {
      ended = exit;
      stop_with(fmt::format("the guest: {}", machine::to_string(exit.reason)));
    });
  });
  if (!started) {
    fmt::print(stderr, "{}: {}\n", kName, started.error());
    return 1;
  }
  if (auto rc = loop->run(); !rc) {
    stop_with(rc.error().message());
  }
  (*vmm)->stop();
  if (terminal) {
    (void)terminal->restore();
  }

  int status = 0;
  if (ended && ended->reason == machine::VmExitReason::Error) {
    fmt::print(stderr, "{}: {}\n", kName, ended->detail);
    status = 1;
  }
  if (auto panic = watch->panic_line(); !panic.empty()) {
    fmt::print(stderr, "{}: the guest kernel panicked: {}\n", kName, panic);
    status = 1;
  }
  if (config.stats) {
    const auto exits = (*vmm)->exits().snapshot();
    fmt::print(stderr, "{}: {} userspace exits\n", kName, exits.total());
    for (const auto& line : (*vmm)->device_stats()) {
      fmt::print(stderr, "{}: {}\n", kName, line);
    }
  }
  if (config.dump_topology) {
    (void)write_topology(**vmm, *config.dump_topology);
  }
  fmt::print(stderr, "{}: stopped: {}\n", kName, stop_reason);
  return status;
}
