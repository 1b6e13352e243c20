// Lab 03's checks. Built twice: against your code in exercises/ (lab03_tests_exercises) and against the reference in
// solutions/ (lab03_tests_solutions). See labs/03-serial/README.md.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <guest/echo.hpp>
#include <guest/lab03_com2.hpp>

#include "lab03.hpp"
#include "serial_vm.hpp"
#include "vmm/testing/guest_console.hpp"
#include "vmm/testing/kvm.hpp"

namespace lab03 {
// How gtest shows ExitCounts in a failure message: the ports by register name.
void PrintTo(const ExitCounts& c, std::ostream* os) {
  static constexpr const char* kReadNames[8] = {"RBR", "IER", "IIR", "LCR", "MCR", "LSR", "MSR", "SCR"};
  static constexpr const char* kWriteNames[8] = {"THR", "IER", "FCR", "LCR", "MCR", "LSR", "MSR", "SCR"};
  *os << "{reads:";
  for (int i = 0; i < 8; ++i) {
    if (c.reads[i] != 0) {
      *os << " " << kReadNames[i] << "=" << c.reads[i];
    }
  }
  *os << "; writes:";
  for (int i = 0; i < 8; ++i) {
    if (c.writes[i] != 0) {
      *os << " " << kWriteNames[i] << "=" << c.writes[i];
    }
  }
  *os << "; total " << c.total() << "}";
}
}  // namespace lab03

namespace {

using namespace std::chrono_literals;
using vmm::stage03::SerialVm;
namespace uart = vmm::devices::uart;

using Console = vmm::testing::GuestConsole;

// Polls `pred` until it holds or `timeout` passes (for state no condition variable announces).
template <typename Pred>
bool poll(Pred pred, std::chrono::milliseconds timeout = 20s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) {
      return false;
    }
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Types `text` into a UART as a terminal would, never overrunning its FIFO.
void type(vmm::devices::Uart16550& uart, std::string_view text) {
  while (!text.empty()) {
    const std::size_t room = std::min(uart.rx_free(), text.size());
    if (room == 0) {
      std::this_thread::sleep_for(1ms);
      continue;
    }
    text.remove_prefix(uart.enqueue_input(std::span(reinterpret_cast<const std::uint8_t*>(text.data()), room)));
  }
}

// A SerialVm running `image`, with COM1's output and the guest's exit collected in `com1`.
class Machine : public ::testing::Test {
 protected:
  void create(const vmm::GuestImage& image) {
    auto vm = SerialVm::create(image, com1_.sink(), [this](std::uint32_t status) { com1_.exited(status); });
    ASSERT_TRUE(vm) << vm.error().message();
    vm_ = std::move(*vm);
  }
  void start() {
    ASSERT_TRUE(vm_->start([this](const vmm::Result<vmm::machine::VcpuOutcome>& outcome) {
      std::lock_guard lock(vcpu_mutex_);
      vcpu_outcome_ = outcome;
    }));
  }
  void TearDown() override {
    if (vm_) {
      vm_->stop();
    }
  }
  std::string vcpu_outcome() {
    std::lock_guard lock(vcpu_mutex_);
    if (!vcpu_outcome_) {
      return "the vCPU is still running";
    }
    if (!*vcpu_outcome_) {
      return vcpu_outcome_->error().message();
    }
    return fmt::format("the vCPU stopped: {}\n{}", vmm::machine::to_string((*vcpu_outcome_)->reason),
                       (*vcpu_outcome_)->detail);
  }

  Console com1_;
  std::unique_ptr<SerialVm> vm_;  // declared after com1_: destroyed (and its vCPU stopped) before the console goes
  std::mutex vcpu_mutex_;
  std::optional<vmm::Result<vmm::machine::VcpuOutcome>> vcpu_outcome_;
};

// --- Exercise 1: COM2 ------------------------------------------------------------------------------------------

using Exercise1 = Machine;

TEST_F(Exercise1, Com2IsOnTheIoBusNextToCom1) {
  VMMLAB_REQUIRE_KVM();
  create(vmm::guest::lab03_com2());
  Console com2;
  auto uart = lab03::add_com2(*vm_, com2.sink());
  ASSERT_TRUE(uart) << uart.error().message();
  auto entry = vm_->buses().io.find(lab03::kCom2Base);
  ASSERT_TRUE(entry) << "nothing on the I/O bus at 0x2f8";
  EXPECT_EQ(entry->range.base, 0x2f8u);
  EXPECT_EQ(entry->range.size, 8u) << "a 16550A has eight ports";
  EXPECT_EQ(entry->device.get(), uart->get()) << "the bus holds the UART add_com2 returned";
  auto com1 = vm_->buses().io.find(vmm::stage03::kCom1Base);
  ASSERT_TRUE(com1);
  EXPECT_EQ(com1->device.get(), &vm_->uart()) << "COM1 is still COM1";
  EXPECT_FALSE(vm_->buses().io.find(0x2f7)) << "nothing just below COM2";
  EXPECT_FALSE(vm_->buses().io.find(0x300)) << "nothing just above COM2";
}

TEST_F(Exercise1, TheGuestPrintsOnCom2AndTakesIrq3) {
  VMMLAB_REQUIRE_KVM();
  create(vmm::guest::lab03_com2());
  Console com2;
  auto uart = lab03::add_com2(*vm_, com2.sink());
  ASSERT_TRUE(uart) << uart.error().message();
  start();
  ASSERT_TRUE(com1_.wait([](Console& c) { return c.exit_status.has_value(); }, 20s))
      << "the guest never finished. If it printed its line but took no interrupt, IRQ 3 never reached the PIC. "
      << "COM2 got \"" << com2.text() << "\"; COM2's state: " << vmm::devices::to_string((*uart)->state()) << "; "
      << vcpu_outcome();
  EXPECT_EQ(com1_.exit_status, 0u);
  EXPECT_EQ(com2.text(), LAB03_COM2_MESSAGE) << "the guest's line arrives on COM2's sink";
  EXPECT_EQ(com1_.text(), "") << "and nothing on COM1's";
  const auto reports = vm_->report().values();
  ASSERT_EQ(reports.size(), 2u) << "interrupts taken on IRQ 3, the first IIR read";
  EXPECT_EQ(reports[0], 1u) << "the guest's IRQ 3 handler ran once";
  EXPECT_EQ(reports[1], uart::kIirFifoEnabled | uart::kIirThrEmpty) << "and found COM2 reporting THR empty";
  EXPECT_FALSE((*uart)->state().irq_asserted) << "the handler switched ETBEI off: the line is low again";
  EXPECT_EQ((*uart)->state().tx_bytes, std::string_view(LAB03_COM2_MESSAGE).size());
}

// --- Exercise 2: MiniUart --------------------------------------------------------------------------------------

// A byte-wide port access, as a vCPU's exit would make it.
std::uint8_t in(vmm::devices::BusDevice& device, std::uint64_t offset) {
  std::uint8_t byte = 0;
  device.read(offset, std::span(&byte, 1));
  return byte;
}
void out(vmm::devices::BusDevice& device, std::uint64_t offset, std::uint8_t value) {
  device.write(offset, std::span<const std::uint8_t>(&value, 1));
}

// What Linux's 8250 driver decides about a port, following autoconfig() and autoconfig_8250() in
// drivers/tty/serial/8250/8250_port.c (the loopback test is skipped, as with UPF_SKIP_TEST).
std::string linux_autoconfig(vmm::devices::BusDevice& port) {
  // "Do a simple existence test first": IER must hold 0 and then 0x0f in its four low bits.
  const std::uint8_t saved_ier = in(port, uart::kIer);
  out(port, uart::kIer, 0);
  const std::uint8_t scratch2 = in(port, uart::kIer) & 0x0f;
  out(port, uart::kIer, 0x0f);
  const std::uint8_t scratch3 = in(port, uart::kIer) & 0x0f;
  out(port, uart::kIer, saved_ier);
  if (scratch2 != 0 || scratch3 != 0x0f) {
    return fmt::format("no UART (IER test: read {:#04x} and {:#04x}, wanted 0x00 and 0x0f)", scratch2, scratch3);
  }
  const std::uint8_t saved_lcr = in(port, uart::kLcr);
  out(port, uart::kLcr, 0xbf);  // UART_LCR_CONF_MODE_B
  out(port, uart::kIirFcr, 0);  // UART_EFR on enhanced UARTs; FCR on a plain one
  out(port, uart::kLcr, 0);
  out(port, uart::kIirFcr, uart::kFcrEnable);
  const int fifo_bits = in(port, uart::kIirFcr) >> 6;
  std::string type;
  if (fifo_bits == 0) {  // no FIFO: an 8250 or a 16450, told apart by the scratch register
    out(port, uart::kScr, 0xa5);
    const std::uint8_t status1 = in(port, uart::kScr);
    out(port, uart::kScr, 0x5a);
    const std::uint8_t status2 = in(port, uart::kScr);
    type = (status1 == 0xa5 && status2 == 0x5a) ? "16450" : "8250";
  } else {
    type = fifo_bits == 3 ? "16550A" : fifo_bits == 2 ? "16550" : "unknown";
  }
  out(port, uart::kLcr, saved_lcr);
  return type;
}

struct Sink {
  std::string bytes;
  vmm::devices::Uart16550::OutputSink sink() {
    return [this](std::span<const std::uint8_t> b) { bytes.append(b.begin(), b.end()); };
  }
};

TEST(Exercise2, IerKeepsItsFourLowBits) {
  Sink sink;
  lab03::MiniUart port(sink.sink());
  out(port, uart::kIer, 0x00);
  EXPECT_EQ(in(port, uart::kIer), 0x00) << "IER after writing 0x00";
  out(port, uart::kIer, 0x0f);
  EXPECT_EQ(in(port, uart::kIer), 0x0f) << "IER after writing 0x0f";
  out(port, uart::kIer, 0xff);
  EXPECT_EQ(in(port, uart::kIer), 0x0f) << "IER after writing 0xff: bits 4-7 do not exist";
}

TEST(Exercise2, ScratchRegisterHoldsAByte) {
  Sink sink;
  lab03::MiniUart port(sink.sink());
  for (const std::uint8_t value : {0xa5, 0x5a, 0x00, 0xff}) {
    out(port, uart::kScr, value);
    EXPECT_EQ(in(port, uart::kScr), value) << fmt::format("SCR after writing {:#04x}", value);
  }
  EXPECT_EQ(sink.bytes, "") << "nothing was transmitted";
}

TEST(Exercise2, DivisorLatchSitsBehindDlab) {
  Sink sink;
  lab03::MiniUart port(sink.sink());
  out(port, uart::kIer, 0x05);
  // serial_dl_write(): DLAB on, the divisor in two bytes, DLAB off again with the line settings.
  out(port, uart::kLcr, 0x83);
  EXPECT_EQ(in(port, uart::kLcr), 0x83) << "LCR reads back";
  out(port, uart::kRbrThr, 0x80);
  out(port, uart::kIer, 0x01);  // divisor 0x180: 300 baud
  out(port, uart::kLcr, 0x03);
  EXPECT_EQ(in(port, uart::kLcr), 0x03) << "LCR reads back";
  EXPECT_EQ(sink.bytes, "") << "a DLL write is not a byte to transmit";
  EXPECT_EQ(in(port, uart::kIer), 0x05) << "the DLM write left IER alone";
  // probe_baud(): what the 8250 console does to find the divisor firmware left.
  out(port, uart::kLcr, 0x03 | uart::kLcrDlab);
  const int divisor = in(port, uart::kRbrThr) | in(port, uart::kIer) << 8;
  out(port, uart::kLcr, 0x03);
  EXPECT_EQ(divisor, 0x180) << "the divisor read back through DLL and DLM";
  out(port, uart::kRbrThr, 'A');
  EXPECT_EQ(sink.bytes, "A") << "with DLAB clear, offset 0 is THR again";
}

TEST(Exercise2, LinuxAutoconfigSaysA16450) {
  Sink sink;
  lab03::MiniUart port(sink.sink());
  out(port, uart::kLcr, 0x03);
  EXPECT_EQ(linux_autoconfig(port), "16450");
  EXPECT_EQ(in(port, uart::kLcr), 0x03) << "the probe restored LCR";
  EXPECT_EQ(sink.bytes, "") << "the probe transmitted nothing";
}

// --- Exercise 3: exits per character -------------------------------------------------------------------------

// A device that remembers the last access.
class Recorder final : public vmm::devices::BusDevice {
 public:
  void read(std::uint64_t offset, std::span<std::uint8_t> data) override {
    last = fmt::format("read {} of {}", offset, data.size());
    std::ranges::fill(data, std::uint8_t{0x42});
  }
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    last = fmt::format("write {} of {}: {:#04x}", offset, data.size(), data[0]);
  }
  std::string last;
};

TEST(Exercise3, CountingDeviceForwardsAndCounts) {
  auto recorder = std::make_shared<Recorder>();
  lab03::CountingDevice counter(recorder);
  std::uint8_t byte = 0;
  counter.read(5, std::span(&byte, 1));
  EXPECT_EQ(recorder->last, "read 5 of 1");
  EXPECT_EQ(byte, 0x42) << "the read's data comes from the device";
  counter.read(5, std::span(&byte, 1));
  const std::uint8_t value = 0x61;
  counter.write(0, std::span(&value, 1));
  EXPECT_EQ(recorder->last, "write 0 of 1: 0x61");
  counter.write(9, std::span(&value, 1));
  EXPECT_EQ(recorder->last, "write 9 of 1: 0x61") << "offsets beyond 7 are forwarded too";
  lab03::ExitCounts expected;
  expected.reads[5] = 2;
  expected.writes[0] = 1;
  EXPECT_EQ(counter.counts(), expected) << "counted: two LSR reads and one THR write";
}

TEST(Exercise3, PredictionForTypingThreeCharacters) {
  lab03::ExitCounts expected;
  expected.reads = {3, 0, 15, 0, 0, 6, 0, 0};  // RBR, IIR, LSR
  expected.writes = {3, 6, 0, 0, 0, 0, 0, 0};  // THR, IER
  EXPECT_EQ(lab03::predict_echo_exits(3), expected) << "your predict_echo_exits(3)";
  EXPECT_EQ(lab03::predict_echo_exits(3).total() - lab03::predict_echo_exits(2).total(), 11u)
      << "exits per character typed and echoed";
}

// Waits until `counter` has seen no access for 50 ms: the guest is halted, waiting for an interrupt.
bool wait_quiet(const lab03::CountingDevice& counter) {
  auto last = counter.counts();
  auto since = std::chrono::steady_clock::now();
  const auto until = since + 10s;
  while (std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(2ms);
    const auto now = counter.counts();
    if (now != last) {
      last = now;
      since = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - since >= 50ms) {
      return true;
    }
  }
  return false;
}

lab03::ExitCounts operator-(const lab03::ExitCounts& a, const lab03::ExitCounts& b) {
  lab03::ExitCounts d;
  for (std::size_t i = 0; i < 8; ++i) {
    d.reads[i] = a.reads[i] - b.reads[i];
    d.writes[i] = a.writes[i] - b.writes[i];
  }
  return d;
}

using Exercise3Machine = Machine;

TEST_F(Exercise3Machine, CountsEveryCom1ExitOfAnEchoSession) {
  VMMLAB_REQUIRE_KVM();
  create(vmm::guest::echo());
  auto counter = lab03::count_exits(vm_->buses().io, vmm::stage03::kCom1Base);
  ASSERT_TRUE(counter) << counter.error().message();
  auto entry = vm_->buses().io.find(vmm::stage03::kCom1Base);
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->device.get(), counter->get()) << "the counter sits where COM1 was";
  EXPECT_EQ(entry->range.size, 8u);
  EXPECT_EQ(entry->name, "serial0 (COM1)") << "under the same name";
  EXPECT_EQ((*counter)->inner().get(), &vm_->uart()) << "and forwards to COM1";
  start();
  const lab03::CountingDevice& counts = **counter;

  const std::string banner =
      "vmmlab stage03: an interrupt-driven UART in a 64-bit guest. Type a line; \"quit\" ends.\n> ";
  ASSERT_TRUE(com1_.wait([&](Console& c) { return c.output.size() >= banner.size(); }))
      << "no prompt; output so far: " << com1_.text() << "; " << vcpu_outcome();
  // Type one character at a time, each once the guest is idle again, so every character is one receive interrupt
  // and its echo one THRE interrupt of its own, whenever KVM delivers it.
  auto type_slowly = [&](std::string_view text) {
    for (const char c : text) {
      ASSERT_TRUE(wait_quiet(counts)) << "COM1 never went quiet: " << ::testing::PrintToString(counts.counts());
      type(vm_->uart(), std::string_view(&c, 1));
    }
    ASSERT_TRUE(wait_quiet(counts)) << "COM1 never went quiet: " << ::testing::PrintToString(counts.counts());
  };
  type_slowly("");
  const lab03::ExitCounts before = counts.counts();
  type_slowly("hello");
  const lab03::ExitCounts window = counts.counts() - before;
  EXPECT_EQ(com1_.text(), banner + "hello");
  EXPECT_EQ(window, lab03::predict_echo_exits(5)) << "typing \"hello\": measured, against your predict_echo_exits(5)";
  EXPECT_EQ(window.total(), 55u) << "eleven exits per character typed: five to receive it, six to echo it";

  type_slowly("\rquit\r");
  ASSERT_TRUE(com1_.wait([](Console& c) { return c.exit_status.has_value(); }))
      << "the guest did not exit; output so far: " << com1_.text() << "; " << vcpu_outcome();
  EXPECT_EQ(com1_.exit_status, 0u);
  const std::string output = com1_.text();
  EXPECT_EQ(output, banner + "hello\nyou said: hello\n> quit\nbye\n");
  const auto reports = vm_->report().values();
  ASSERT_EQ(reports.size(), 3u) << "interrupts, bytes received, bytes sent";
  const std::uint64_t printed = output.size();
  const std::uint64_t typed = 11;  // one receive interrupt each
  EXPECT_EQ(reports[1], typed);
  EXPECT_EQ(reports[2], printed);

  // The whole session, whatever the sizes of the bursts the banner and the answers went out in (README.md).
  const lab03::ExitCounts session = counts.counts();
  EXPECT_EQ(session.writes[uart::kRbrThr], printed + 1) << "one THR write per byte printed, plus the DLL write";
  EXPECT_EQ(session.reads[uart::kRbrThr], typed) << "one RBR read per byte typed";
  EXPECT_EQ(session.reads[uart::kLsr], 2 * typed + 1) << "LSR: two per byte typed, and uart_flush's";
  EXPECT_EQ(session.writes[uart::kIer] % 2, 1u) << "uart_init's three, then THRI on and off: always in pairs";
  EXPECT_GE(session.reads[uart::kIirFcr], reports[0] + typed) << "an IIR read per interrupt, one more per source";
  EXPECT_EQ(session.writes[uart::kIirFcr], 1u);
  EXPECT_EQ(session.writes[uart::kLcr], 2u);
  EXPECT_EQ(session.writes[uart::kMcr], 1u);
  EXPECT_EQ(session.reads[uart::kIer] + session.reads[uart::kLcr] + session.reads[uart::kMcr] +
                session.reads[uart::kMsr] + session.reads[uart::kScr] + session.writes[uart::kScr],
            0u)
      << "the driver never reads back what it wrote";
  RecordProperty("exits_per_byte_printed_session",
                 fmt::format("{:.2f}", static_cast<double>(session.total()) / static_cast<double>(printed)));
}

}  // namespace
