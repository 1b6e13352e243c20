// stage03-serial: a 64-bit guest with an interrupt-driven UART driver, on the terminal.
//
// The main thread runs an epoll event loop: stdin (raw mode when it is a terminal; Ctrl-A x quits), SIGINT/SIGTERM,
// a timer that feeds held-back input, and callbacks posted by the vCPU thread. The vCPU runs on its own thread and
// dispatches its exits to the buses; COM1 is a 16550A on IRQ 4 of KVM's in-kernel PIC.
//
//   stage03-serial                        interactive: type lines, "quit" ends (or Ctrl-A x)
//   printf 'hi\nquit\n' | stage03-serial  the same from a pipe
//   stage03-serial --trace                every exit on stderr
//   stage03-serial --guest debuggee --gdb tcp:1234
//                                         a guest made for gdb, held before its first instruction until gdb attaches
#include <fmt/format.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <csignal>
#include <guest/debuggee.hpp>
#include <guest/echo.hpp>
#include <optional>

#include "gdb_session.hpp"
#include "serial_vm.hpp"
#include "vmm/event/console_input.hpp"
#include "vmm/event/event_loop.hpp"
#include "vmm/event/terminal.hpp"
#include "vmm/event/write_all.hpp"

namespace {

// The UART's output goes to stdout (called on the vCPU thread). If stdout is gone there is nobody to tell.
void write_stdout(std::span<const std::uint8_t> bytes) {
  (void)vmm::event::write_all(STDOUT_FILENO, bytes);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace vmm;
  CLI::App app{"stage03-serial: an interrupt-driven UART in a 64-bit guest, on your terminal"};
  stage03::SerialVmConfig config;
  double timeout_seconds = 0;
  std::string guest_name = "echo";
  std::string gdb_endpoint;
  app.add_flag("--trace", config.trace, "Print every KVM exit to stderr as it happens");
  app.add_option("--guest", guest_name, "The guest program: echo (the UART driver) or debuggee (made for gdb)")
      ->check(CLI::IsMember({"echo", "debuggee"}));
  app.add_option("--gdb", gdb_endpoint, vmm::stage03::kGdbOptionHelp);
  app.add_option("--timeout", timeout_seconds, "Stop the VM (with an error) after this many seconds; 0 = never")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);

  auto loop = event::EventLoop::create();
  if (!loop) {
    fmt::print(stderr, "stage03-serial: {}\n", loop.error());
    return 1;
  }
  // Signals become events on this thread. Blocked before the vCPU thread starts, so it inherits the mask and only
  // this thread ever sees them.
  int exit_code = 0;
  std::string stop_reason;
  auto stop_with = [&](int code, std::string why) {
    if (stop_reason.empty()) {
      exit_code = code;
      stop_reason = std::move(why);
    }
    loop->stop();
  };
  if (auto rc = loop->add_signals({SIGINT, SIGTERM, SIGHUP},
                                  [&](const signalfd_siginfo& info) {
                                    stop_with(128 + static_cast<int>(info.ssi_signo),
                                              fmt::format("signal {}", strsignal(static_cast<int>(info.ssi_signo))));
                                  });
      !rc) {
    fmt::print(stderr, "stage03-serial: {}\n", rc.error());
    return 1;
  }

  const GuestImage image = guest_name == "debuggee" ? guest::debuggee() : guest::echo();
  auto vm = stage03::SerialVm::create(
      image, write_stdout,
      [notifier = loop->notifier(), &stop_with](std::uint32_t status) {
        notifier->post([&stop_with, status] {
          stop_with(status == 0 ? 0 : 1, fmt::format("the guest exited with status {}", status));
        });
      },
      config);
  if (!vm) {
    fmt::print(stderr, "stage03-serial: {}\n", vm.error());
    return 1;
  }

  std::unique_ptr<gdb::GdbStub> gdb_stub;
  if (!gdb_endpoint.empty()) {
    auto stub = stage03::attach_gdb_stub(**vm, gdb_endpoint, image.elf_path, [notifier = loop->notifier(), &stop_with] {
      notifier->post([&stop_with] { stop_with(0, "gdb killed the guest"); });
    });
    if (!stub) {
      fmt::print(stderr, "stage03-serial: {}\n", stub.error());
      return 1;
    }
    gdb_stub = std::move(*stub);
  }

  // The terminal: raw while the guest owns it, restored however we leave.
  // The echo guest has no use for Ctrl-C, so here it stops the VMM (final-vmm gives it to Linux instead).
  auto terminal = event::Terminal::make_raw_stdin(event::SignalKeys::ToVmm);
  if (!terminal) {
    fmt::print(stderr, "stage03-serial: {}\n", terminal.error());
    return 1;
  }
  if (terminal->is_tty()) {
    (void)event::Terminal::restore_on_fatal_signal();
    fmt::print(stderr, "stage03-serial: Ctrl-A x or Ctrl-C quits\n");
  }

  // Input: what the UART's FIFO cannot take yet waits in ConsoleInput, and a timer retries (a real UART would drop
  // it). Nothing is fed before the guest's driver listens (receive interrupts enabled). Ctrl-A x quits.
  event::ConsoleInput input(vm.value()->uart());
  if (auto rc = input.watch_stdin(
          *loop, [&] { stop_with(0, "Ctrl-A x"); }, std::chrono::milliseconds(2));
      !rc) {
    fmt::print(stderr, "stage03-serial: {}\n", rc.error());
    return 1;
  }
  if (timeout_seconds > 0) {
    auto timer = loop->add_timer(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(timeout_seconds)),
        [&] { stop_with(124, fmt::format("timed out after {} s", timeout_seconds)); });
    if (!timer) {
      fmt::print(stderr, "stage03-serial: {}\n", timer.error());
      return 1;
    }
  }

  std::optional<Result<machine::VcpuOutcome>> vcpu_outcome;
  auto started = vm.value()->start(
      [notifier = loop->notifier(), &vcpu_outcome, &stop_with](const Result<machine::VcpuOutcome>& outcome) {
        notifier->post([&vcpu_outcome, &stop_with, outcome] {
          vcpu_outcome = outcome;
          if (!outcome || outcome->reason != machine::VcpuStop::Requested) {
            stop_with(1, "the vCPU stopped");
          }
        });
      });
  if (!started) {
    fmt::print(stderr, "stage03-serial: {}\n", started.error());
    return 1;
  }

  if (auto rc = loop->run(); !rc) {
    stop_with(1, rc.error().message());
  }
  vm.value()->stop();
  terminal->restore();

  if (vcpu_outcome && !*vcpu_outcome) {
    fmt::print(stderr, "stage03-serial: {}\n", vcpu_outcome->error());
  } else if (vcpu_outcome && (*vcpu_outcome)->reason != machine::VcpuStop::Requested) {
    fmt::print(stderr, "stage03-serial: vCPU stopped: {}\n{}", machine::to_string((*vcpu_outcome)->reason),
               (*vcpu_outcome)->detail);
  }
  fmt::print(stderr, "stage03-serial: stopped: {}\n", stop_reason);
  return exit_code;
}
