// Interop, QEMU 7.2 as the frontend: vmmlab's vhost-user-blk and vhost-user-rng daemons serve devices of a real
// QEMU (TCG, q35, SeaBIOS). No kernel runs: SeaBIOS's own virtio-blk driver starts the vhost-user-blk device, reads
// the boot sector (mbr.S) through the daemon, and the boot sector reads sector 1 and writes sector 2 through it too,
// prints to the debugcon port and ends QEMU through isa-debug-exit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "interop_common.hpp"

namespace {

using namespace vmm::stage07;
using namespace vmm::stage07::interop;

/// What the boot sector prints when all went well, around the marker it read from sector 1.
std::string expected_debugcon(std::string_view marker) {
  return fmt::format("vmmlab-mbr: booted\n{}vmmlab-mbr: wrote sector 2\n", marker);
}

/// `timeout -k 5 60 qemu-system-x86_64 ...`: a q35 TCG machine whose RAM is a shared memfd (a vhost-user backend
/// maps it; without share=on the rings never start), no default devices, a debugcon log at `debugcon` and
/// isa-debug-exit, plus `devices`. SeaBIOS boots only from the device with bootindex=1 (strict).
std::vector<std::string> qemu_command(const std::string& qemu, const std::string& debugcon,
                                      const std::vector<std::string>& devices) {
  std::vector<std::string> command{"timeout",
                                   "-k",
                                   "5",
                                   std::string(kQemuTimeLimit),
                                   qemu,
                                   "-no-user-config",
                                   "-nodefaults",
                                   "-machine",
                                   "q35,accel=tcg,memory-backend=mem",
                                   "-object",
                                   "memory-backend-memfd,id=mem,size=128M,share=on",
                                   "-m",
                                   "128M",
                                   "-display",
                                   "none",
                                   "-no-reboot",
                                   "-boot",
                                   "strict=on",
                                   "-debugcon",
                                   "file:" + debugcon,
                                   "-device",
                                   "isa-debug-exit,iobase=0xf4,iosize=0x04"};
  command.insert(command.end(), devices.begin(), devices.end());
  return command;
}

/// The requests a daemon's --trace-vhost-user says it received ("<side> < NAME ..." lines), in order.
std::vector<std::string> received_requests(std::string_view trace) {
  static const std::regex line_pattern(R"(^\S+ < ([A-Z_]+))");
  std::vector<std::string> names;
  std::size_t start = 0;
  while (start < trace.size()) {
    auto end = trace.find('\n', start);
    if (end == std::string_view::npos) {
      end = trace.size();
    }
    const std::string line(trace.substr(start, end - start));
    if (std::smatch match; std::regex_search(line, match, line_pattern)) {
      names.push_back(match[1]);
    }
    start = end + 1;
  }
  return names;
}

/// The first received-message line for `request` ("" if none).
std::string received_line(std::string_view trace, std::string_view request) {
  const std::regex pattern(fmt::format(R"((^|\n)(\S+ < {}( [^\n]*)?)(\n|$))", request));
  const std::string text(trace);
  std::smatch match;
  return std::regex_search(text, match, pattern) ? std::string(match[2]) : std::string();
}

/// True when `wanted` appear in `names` in this order (others may come between them).
bool in_order(const std::vector<std::string>& names, const std::vector<std::string>& wanted) {
  auto at = names.begin();
  for (const auto& name : wanted) {
    at = std::find(at, names.end(), name);
    if (at == names.end()) {
      return false;
    }
    ++at;
  }
  return true;
}

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

/// A vmmlab daemon serving one frontend (--once), tracing every message, started and waited for ("listening").
Peer start_daemon(const std::string& program, std::vector<std::string> arguments) {
  std::vector<std::string> argv{program};
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  argv.insert(argv.end(), {"--once", "--trace-vhost-user"});
  auto peer = Peer::start(argv);
  EXPECT_TRUE(peer) << peer.error().message();
  if (!peer) {
    return {};
  }
  auto ready = peer->process().wait_for_output("listening", kStartTimeout);
  EXPECT_TRUE(ready && *ready) << peer->command()
                               << " did not start: " << (ready ? peer->output() : ready.error().message());
  return std::move(*peer);
}

// QEMU's vhost-user-blk-pci against vmmlab's vhost-user-blk daemon: SeaBIOS boots from it. The guest's output and
// the image prove that sectors 0 and 1 were read and sector 2 written by the daemon, in guest memory it mapped from
// QEMU's memfd and on rings QEMU handed it. Then QEMU exits, and the daemon's session ends cleanly.
TEST(InteropQemuFrontend, SeaBiosBootsFromTheVhostUserBlkDaemon) {
  std::string qemu;
  ASSERT_TRUE(find_peer("qemu-system-x86_64", "qemu-system-x86", qemu));
  TempDir dir;
  ASSERT_FALSE(dir.path().empty()) << "mkdtemp failed";
  const auto image = dir.file("disk.img");
  const auto socket = dir.file("blk.sock");
  const auto debugcon = dir.file("debugcon.log");
  const auto marker = fresh_marker("read by vmmlab's vhost-user-blk");
  ASSERT_TRUE(write_boot_disk(image, marker));

  auto daemon = start_daemon(VMMLAB_VHOST_USER_BLK, {"--socket", socket, "--image", image});
  ASSERT_FALSE(HasFailure());
  auto vm = Peer::start(qemu_command(
      qemu, debugcon,
      {"-chardev", "socket,id=vu,path=" + socket, "-device", "vhost-user-blk-pci,chardev=vu,bootindex=1"}));
  ASSERT_TRUE(vm) << vm.error().message();
  auto status = vm->wait(kRunTimeout);
  ASSERT_TRUE(status) << status.error().message();

  EXPECT_EQ(status->code, kQemuStatusMbrOk) << "QEMU: " << status->describe() << " (124: the 60 s limit ran out)\n"
                                            << vm->output() << "\ndebugcon: " << read_file(debugcon) << "\ndaemon:\n"
                                            << daemon.output();
  EXPECT_EQ(read_file(debugcon), expected_debugcon(marker));
  EXPECT_EQ(lowercase(vm->output()).find("vhost"), std::string::npos) << "QEMU complained:\n" << vm->output();
  const auto sector1 = read_sector(image, 1);
  ASSERT_EQ(sector1.substr(0, marker.size()), marker);
  EXPECT_EQ(read_sector(image, 2), sector1) << "the boot sector wrote sector 1's bytes as sector 2";

  // QEMU is gone: --once makes the daemon end its session and exit 0.
  auto ended = daemon.wait(kStopTimeout);
  ASSERT_TRUE(ended) << ended.error().message() << "\n" << daemon.output();
  EXPECT_EQ(ended->code, 0) << ended->describe() << "\n" << daemon.output();
  EXPECT_TRUE(contains(daemon.output(), "session 1 ended: frontend disconnected")) << daemon.output();
  show_trace("QEMU 7.2 and vmmlab's daemon", daemon.output());

  // What QEMU 7.2 sends: the realize handshake (GET_CONFIG: vhost-user-blk reads the capacity from the backend), then,
  // when SeaBIOS sets DRIVER_OK, the features, the memory (one ADD_MEM_REG per region with CONFIGURE_MEM_SLOTS, else
  // SET_MEM_TABLE), the ring and its eventfds. QEMU leaves through isa-debug-exit without stopping the ring.
  const auto& trace = daemon.output();
  const auto requests = received_requests(trace);
  EXPECT_TRUE(
      in_order(requests, {"GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "SET_OWNER", "GET_CONFIG",
                          "SET_FEATURES", "SET_VRING_NUM", "SET_VRING_BASE", "SET_VRING_ADDR", "SET_VRING_KICK"}))
      << fmt::format("{}", fmt::join(requests, " "));
  // The guest's memory arrived as fds: in one table or region by region.
  auto table = received_line(trace, "ADD_MEM_REG");
  if (table.empty()) {
    table = received_line(trace, "SET_MEM_TABLE");
  }
  EXPECT_TRUE(contains(table, "fds=[")) << "no memory region with an fd in the trace:\n" << trace;
  EXPECT_TRUE(contains(received_line(trace, "SET_VRING_KICK"), "fds=[")) << trace;
  EXPECT_TRUE(contains(received_line(trace, "SET_VRING_CALL"), "fds=[")) << trace;
  EXPECT_FALSE(contains(trace, "(failure)")) << "the daemon refused something:\n" << trace;
}

// QEMU's vhost-user-rng-pci against vmmlab's vhost-user-rng daemon: SeaBIOS has no rng driver, so the rings never
// start, but QEMU realizes the device through the daemon (the whole startup handshake) and must be content with
// its answers: it keeps running, boots the boot sector from a plain virtio-blk disk, and exits through
// isa-debug-exit with no vhost-user complaint.
TEST(InteropQemuFrontend, QemuRealizesVhostUserRngAgainstTheDaemon) {
  std::string qemu;
  ASSERT_TRUE(find_peer("qemu-system-x86_64", "qemu-system-x86", qemu));
  TempDir dir;
  ASSERT_FALSE(dir.path().empty()) << "mkdtemp failed";
  const auto image = dir.file("disk.img");
  const auto socket = dir.file("rng.sock");
  const auto debugcon = dir.file("debugcon.log");
  const auto marker = fresh_marker("read by QEMU's own virtio-blk");
  ASSERT_TRUE(write_boot_disk(image, marker));

  auto daemon = start_daemon(VMMLAB_VHOST_USER_RNG, {"--socket", socket});
  ASSERT_FALSE(HasFailure());
  auto vm = Peer::start(
      qemu_command(qemu, debugcon,
                   {"-chardev", "socket,id=vu,path=" + socket, "-device", "vhost-user-rng-pci,chardev=vu", "-drive",
                    "file=" + image + ",format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0,bootindex=1"}));
  ASSERT_TRUE(vm) << vm.error().message();
  auto status = vm->wait(kRunTimeout);
  ASSERT_TRUE(status) << status.error().message();

  EXPECT_EQ(status->code, kQemuStatusMbrOk) << "QEMU: " << status->describe() << " (124: the 60 s limit ran out)\n"
                                            << vm->output() << "\ndaemon:\n"
                                            << daemon.output();
  EXPECT_EQ(read_file(debugcon), expected_debugcon(marker));
  // Not even a warning: QEMU 7.2 warns (and drops the bit) when a backend offers PROTOCOL_F_CONFIG for a device
  // whose QEMU side has no configuration, as vhost-user-rng's has not.
  EXPECT_EQ(lowercase(vm->output()).find("vhost"), std::string::npos) << "QEMU complained:\n" << vm->output();

  auto ended = daemon.wait(kStopTimeout);
  ASSERT_TRUE(ended) << ended.error().message() << "\n" << daemon.output();
  EXPECT_EQ(ended->code, 0) << ended->describe() << "\n" << daemon.output();
  EXPECT_TRUE(contains(daemon.output(), "session 1 ended: frontend disconnected")) << daemon.output();
  show_trace("QEMU 7.2 and vmmlab's daemon", daemon.output());

  const auto requests = received_requests(daemon.output());
  // QEMU 7.2's realize (vhost_user_backend_init, then vhost_dev_init): GET_QUEUE_NUM because the daemon offers MQ,
  // GET_MAX_MEM_SLOTS because it offers CONFIGURE_MEM_SLOTS; each queue gets a (masked) call and an error eventfd.
  EXPECT_TRUE(in_order(requests, {"GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "GET_QUEUE_NUM",
                                  "GET_MAX_MEM_SLOTS", "SET_OWNER", "GET_FEATURES", "SET_VRING_CALL", "SET_VRING_ERR"}))
      << fmt::format("{}", fmt::join(requests, " "));
  EXPECT_FALSE(contains(daemon.output(), "(failure)")) << "the daemon refused something:\n" << daemon.output();
}

}  // namespace
