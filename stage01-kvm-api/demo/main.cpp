// stage01-kvm-api: the classic test_vm. Real-mode code adds 2 and 3 and prints the digit through port 0x3f8.
//
//   stage01-kvm-api            prints "5"
//   stage01-kvm-api --trace    also prints every KVM exit as it happens
//   stage01-kvm-api --guest string_io      REP INSB from port 0x3f9 (a "message port" the demo plays), REP OUTSB
//                                          to 0x3f8: prints "hello, rep insb"
//   stage01-kvm-api --guest triple_fault   a guest that dies: KVM_EXIT_SHUTDOWN and a register dump
//
// Exit status: 0 when the guest halts; 1 when it dies (SHUTDOWN, INTERNAL_ERROR, ...), after a register dump.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <algorithm>
#include <string>

#include <guest/string_io.hpp>
#include <guest/test_vm.hpp>
#include <guest/triple_fault.hpp>

#include "test_vm.hpp"

int main(int argc, char** argv) {
  CLI::App app{"stage01-kvm-api: run a real-mode guest on the raw KVM API"};
  vmm::stage01::TestVmConfig config;
  std::string guest = "test_vm";
  app.add_flag("--trace", config.trace, "Print every KVM exit to stderr as it happens");
  app.add_option("--guest", guest, "Which guest program to run")
      ->check(CLI::IsMember({"test_vm", "string_io", "triple_fault"}))
      ->capture_default_str();
  app.add_option("--rax", config.rax, "Initial RAX (test_vm adds AL and BL)")->capture_default_str();
  app.add_option("--rbx", config.rbx, "Initial RBX")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const vmm::GuestImage image = guest == "string_io"      ? vmm::guest::string_io()
                                : guest == "triple_fault" ? vmm::guest::triple_fault()
                                                          : vmm::guest::test_vm();
  auto vm = vmm::stage01::TestVm::create(image, config);
  if (!vm) {
    fmt::print(stderr, "stage01-kvm-api: {}\n", vm.error());
    return 1;
  }
  // Port 0x3f9 answers with the next byte of a message: string I/O (REP INSB) gets several items per exit on a
  // standard KVM, and every item must be answered.
  const std::string message = "hello, rep insb\n";
  std::size_t next = 0;
  auto message_port = [&](vmm::kvm::IoExit& io) {
    if (io.port != 0x3f9 || io.direction != vmm::kvm::IoDirection::In) {
      return false;
    }
    for (std::uint32_t i = 0; i < io.count; ++i) {
      auto item = io.item(i);
      std::ranges::fill(item, std::uint8_t{0});
      item[0] = next < message.size() ? static_cast<std::uint8_t>(message[next++]) : 0xff;
    }
    return true;
  };
  auto outcome = vm->run(message_port);
  if (!outcome) {
    fmt::print(stderr, "stage01-kvm-api: {}\n", outcome.error());
    return 1;
  }
  fmt::print("{}", outcome->serial_output);
  std::fflush(stdout);
  if (outcome->reason != vmm::stage01::StopReason::Halted) {
    fmt::print(stderr, "stage01-kvm-api: guest stopped: {}\n{}", vmm::stage01::to_string(outcome->reason),
               outcome->detail);
    return 1;
  }
  if (config.trace) {
    fmt::print(stderr, "guest halted after {} exits\n", outcome->exits.size());
  }
  return 0;
}
