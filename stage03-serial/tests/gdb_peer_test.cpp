// The gdb stub facing a hostile or broken debugger (issue 11, and issue 13's hostile peers): a raw client on the
// stub's Unix socket sends what no well-behaved gdb would, and every answer must be a NAK or an error while the guest
// stays intact; a debugger that vanishes in the middle of a step is a detach; Ctrl-C stops a guest that is halted
// waiting for input, and 'k' ends the session through the VMM's kill callback.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <guest/debuggee.hpp>
#include <guest/echo.hpp>
#include <string>
#include <thread>

#include "gdb_session.hpp"
#include "serial_vm.hpp"
#include "vmm/fd.hpp"
#include "vmm/gdb/rsp.hpp"
#include "vmm/testing/guest_console.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::stage03 {
namespace {

using namespace std::chrono_literals;

// A debugger that speaks the protocol's framing and nothing else: the test decides what to send.
class RawClient {
 public:
  explicit RawClient(const std::string& path) {
    fd_ = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    connected_ = ::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  }
  [[nodiscard]] bool connected() const { return connected_; }
  // False when the stub has closed the connection.
  bool send_raw(std::string_view bytes) const {
    return ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  }
  // The next thing the stub sent ('+', '-' or a packet); nullopt after `timeout` or when the stub closed.
  std::optional<gdb::RspEvent> next(std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (events_.empty()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{.fd = fd_.get(), .events = POLLIN, .revents = 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
        return std::nullopt;
      }
      std::array<std::uint8_t, 4096> buffer{};
      const ssize_t n = ::read(fd_.get(), buffer.data(), buffer.size());
      if (n <= 0) {
        return std::nullopt;
      }
      for (auto& event : decoder_.feed(std::span(buffer.data(), static_cast<std::size_t>(n)))) {
        events_.push_back(std::move(event));
      }
    }
    auto event = events_.front();
    events_.pop_front();
    return event;
  }
  // Sends `payload` framed, expects the stub's '+' and then its reply, which it acknowledges.
  std::string request(std::string_view payload) {
    if (!send_raw(gdb::frame(payload))) {
      return "<closed>";
    }
    return reply();
  }
  std::string reply() {
    for (auto event = next(); event; event = next()) {
      if (event->kind == gdb::RspEvent::Kind::Packet) {
        (void)send_raw("+");  // after 'D' the stub has already closed
        return event->payload;
      }
    }
    return "<nothing>";
  }
  void close() { fd_ = Fd(); }

 private:
  Fd fd_;
  bool connected_ = false;
  gdb::PacketDecoder decoder_;
  std::deque<gdb::RspEvent> events_;
};

class GdbPeer : public ::testing::Test {
 protected:
  void start(const GuestImage& image) {
    VMMLAB_REQUIRE_KVM();
    auto vm = SerialVm::create(
        image, [this](std::span<const std::uint8_t> b) { console_.append(b); },
        [this](std::uint32_t status) { console_.exited(status); });
    ASSERT_TRUE(vm) << vm.error().message();
    vm_ = std::move(*vm);
    char pattern[] = "/tmp/vmmlab-gdb-peer-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    directory_ = pattern;
    auto stub = attach_gdb_stub(*vm_, "unix:" + directory_ + "/gdb.sock", image.elf_path, [this] { killed_ = true; });
    ASSERT_TRUE(stub) << stub.error().message();
    stub_ = std::move(*stub);
    ASSERT_TRUE(vm_->start([](const Result<machine::VcpuOutcome>&) {}));
  }
  void TearDown() override {
    if (vm_) {
      vm_->stop();
    }
    stub_.reset();
    if (!directory_.empty()) {
      std::filesystem::remove_all(directory_);
    }
  }
  [[nodiscard]] std::string socket_path() const { return directory_ + "/gdb.sock"; }
  bool guest_exited_with(std::uint32_t status) {
    return console_.wait([](testing::GuestConsole& c) { return c.exit_status.has_value(); }) &&
           console_.exit_status == status;
  }

  testing::GuestConsole console_;
  std::unique_ptr<SerialVm> vm_;
  std::unique_ptr<gdb::GdbStub> stub_;
  std::string directory_;
  std::atomic<bool> killed_ = false;
};

TEST_F(GdbPeer, HostilePacketsGetNaksOrErrorsAndTheGuestStillFinishes) {
  start(guest::debuggee());
  RawClient client(socket_path());
  ASSERT_TRUE(client.connected());

  // A bad checksum is NAKed: the stub wants the packet again, and nothing was executed.
  ASSERT_TRUE(client.send_raw("$g#00"));
  auto answer = client.next();
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->kind, gdb::RspEvent::Kind::Nak);
  // Line noise before a packet is skipped; the packet after it is answered ('?' : the initial stop, SIGTRAP).
  ASSERT_TRUE(client.send_raw("garbage\xff\x01"));
  EXPECT_EQ(client.request("?").substr(0, 3), "T05");
  // A packet bigger than the stub's buffer is dropped with a NAK, not stored.
  ASSERT_TRUE(client.send_raw("$" + std::string(gdb::kMaxPacketBytes + 100, 'm') + "#00"));
  answer = client.next();
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->kind, gdb::RspEvent::Kind::Nak);

  // Malformed or out-of-range requests: each gets an error ("Exx"), never a crash or a read outside the guest.
  for (const char* packet : {"m",
                             "mzz,4",
                             "m100000",
                             "m100000,zz",
                             "mffffffffffffffff,10",
                             "m0,ffffffffffffffff",
                             "M100000,4:zz",
                             "M100000,100:00",
                             "p",
                             "pzz",
                             "p1000",
                             "P1000=00",
                             "G00",
                             "Hgffff",
                             "Hg",
                             "Tffff",
                             "Z9,0,1",
                             "Z0,zz,1",
                             "z2,100000,3",
                             "vCont;q",
                             "vCont;c:ffff",
                             "qXfer:features:read:secret.xml:0,100",
                             "qXfer:features:read:target.xml:zz"}) {
    const std::string reply = client.request(packet);
    EXPECT_TRUE(reply.starts_with('E') || reply.empty()) << packet << " -> " << reply;
  }
  // A request the stub does not know gets the empty reply ("not supported").
  EXPECT_EQ(client.request("vMustReplyEmpty"), "");
  EXPECT_EQ(client.request("Qunknown:1"), "");

  // The guest was never touched: its first instruction is still where the loader put it, and it runs to its end.
  const std::string rip = client.request("p10");
  EXPECT_EQ(rip, "0000100000000000") << "RIP, little-endian: 0x100000";
  EXPECT_EQ(client.request("D"), "OK");
  EXPECT_TRUE(guest_exited_with(0)) << console_.output;
  EXPECT_NE(console_.output.find("fibonacci(20) = 0x1a6d"), std::string::npos) << console_.output;
}

TEST_F(GdbPeer, ADebuggerThatVanishesMidStepIsADetach) {
  start(guest::debuggee());
  {
    RawClient client(socket_path());
    ASSERT_TRUE(client.connected());
    // A software breakpoint goes into guest memory; the peer then steps and disappears before the stop reply.
    EXPECT_EQ(client.request("Z0,100000,1"), "OK");
    ASSERT_TRUE(client.send_raw(gdb::frame("s")));
    client.close();
  }
  // The stub takes its breakpoints out and lets the guest go: it finishes as if no debugger had been there.
  EXPECT_TRUE(guest_exited_with(0)) << console_.output;
  EXPECT_NE(console_.output.find("fibonacci(20) = 0x1a6d"), std::string::npos) << console_.output;
  EXPECT_FALSE(killed_);
}

TEST_F(GdbPeer, CtrlCStopsAHaltedGuestAndKillEndsTheSession) {
  // The echo guest halts waiting for input: only a kick out of KVM_RUN can stop it.
  start(guest::echo());
  RawClient client(socket_path());
  ASSERT_TRUE(client.connected());
  ASSERT_TRUE(client.send_raw(gdb::frame("c")));
  auto ack = client.next();
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->kind, gdb::RspEvent::Kind::Ack);
  ASSERT_TRUE(console_.wait([](testing::GuestConsole& c) { return c.output.find("> ") != std::string::npos; }))
      << "the guest never printed its prompt: " << console_.output;
  // While the guest runs, packets other than Ctrl-C are refused.
  EXPECT_EQ(client.request("g"), "E10");
  ASSERT_TRUE(client.send_raw("\x03"));
  const std::string stop = client.reply();
  EXPECT_TRUE(stop.starts_with("T02")) << "a SIGINT stop reply, got " << stop;
  EXPECT_NE(stop.find("thread:1;"), std::string::npos) << stop;
  // Stopped: the registers can be read again (the vCPU is out of KVM_RUN and held).
  const std::string registers = client.request("g");
  EXPECT_GT(registers.size(), 16U * 8 * 2) << registers;
  EXPECT_FALSE(console_.wait([](testing::GuestConsole& c) { return c.exit_status.has_value(); }, 100ms));

  ASSERT_TRUE(client.send_raw(gdb::frame("k")));
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!killed_ && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(killed_) << "'k' should reach the VMM's kill callback";
}

}  // namespace
}  // namespace vmm::stage03
