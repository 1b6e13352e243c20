// The i8042 keyboard controller, driven through its two I/O ports as a guest drives it (IBM PC/AT technical
// reference; Linux's drivers/input/serio/i8042.c and arch/x86/kernel/reboot.c for what the guest actually sends).
#include <gtest/gtest.h>

#include <array>
#include <memory>

#include "vmm/devices/i8042/i8042.hpp"

namespace vmm::devices {
namespace {

constexpr std::uint8_t kObf = 0x01;  // status: output buffer full
constexpr std::uint8_t kIbf = 0x02;  // status: input buffer full

// An interrupt line that counts what the device does with it.
class CountingIrq final : public IrqLine {
 public:
  Result<void> raise() override {
    ++raises;
    return {};
  }
  Result<void> lower() override {
    ++lowers;
    return {};
  }
  Result<void> pulse() override {
    ++pulses;
    return IrqLine::pulse();
  }
  int raises = 0;
  int lowers = 0;
  int pulses = 0;
};

class I8042Ports : public ::testing::Test {
 protected:
  // One-byte port accesses, as the guest's inb/outb arrive from the I/O bus.
  static std::uint8_t in(BusDevice& port) {
    std::array<std::uint8_t, 1> byte{0};
    port.read(0, byte);
    return byte[0];
  }
  static void out(BusDevice& port, std::uint8_t value) {
    const std::array<std::uint8_t, 1> byte{value};
    port.write(0, byte);
  }
  std::uint8_t status() {
    const auto s = in(*command_);
    // Linux's kb_wait() and i8042_wait_write() spin while IBF is set: it must never be.
    EXPECT_EQ(s & kIbf, 0) << "IBF set in status " << int{s};
    return s;
  }
  std::uint8_t read_data() { return in(*data_); }
  void command(std::uint8_t value) { out(*command_, value); }
  void write_data(std::uint8_t value) { out(*data_, value); }

  CountingIrq irq_;
  int on_reset_calls_ = 0;
  I8042 controller_{irq_, [this] { ++on_reset_calls_; }};
  std::shared_ptr<BusDevice> data_ = controller_.data_port();
  std::shared_ptr<BusDevice> command_ = controller_.command_port();
};

TEST_F(I8042Ports, PulseResetCommandResetsTheCpuOncePerCommand) {
  // Linux's reboot=k: outb(0xfe, 0x64).
  command(0xfe);
  EXPECT_EQ(on_reset_calls_, 1);
  EXPECT_EQ(controller_.resets(), 1u);
  command(0xfe);
  EXPECT_EQ(on_reset_calls_, 2);
  EXPECT_EQ(controller_.resets(), 2u);
  status();
}

TEST_F(I8042Ports, PulseCommandWithoutLine0DoesNotReset) {
  // 0xF0-0xFF pulse the output lines whose bit is clear: 0xFF pulses none, 0xFD line 1 only; line 0 is the reset.
  command(0xff);
  command(0xfd);
  EXPECT_EQ(on_reset_calls_, 0);
  EXPECT_EQ(controller_.resets(), 0u);
}

TEST_F(I8042Ports, WritingTheOutputPortWithBit0ClearResets) {
  command(0xd1);     // write output port: the next data byte
  write_data(0xdf);  // bit 0 set: the CPU stays out of reset (A20 etc. in the other bits)
  EXPECT_EQ(on_reset_calls_, 0);
  command(0xd1);
  write_data(0xde);  // bit 0 clear: reset asserted
  EXPECT_EQ(on_reset_calls_, 1);
  EXPECT_EQ(controller_.resets(), 1u);
  EXPECT_EQ(irq_.pulses, 0) << "an argument byte is not keyboard data";
}

TEST_F(I8042Ports, SelfTestAnswers0x55ThroughTheOutputBuffer) {
  EXPECT_EQ(status() & kObf, 0) << "nothing to read yet";
  command(0xaa);
  EXPECT_NE(status() & kObf, 0) << "an answer waits";
  EXPECT_EQ(read_data(), 0x55);
  EXPECT_EQ(status() & kObf, 0) << "read, so the buffer is empty again";
  EXPECT_EQ(on_reset_calls_, 0);
}

TEST_F(I8042Ports, ReadingAnEmptyOutputBufferRepeatsTheLastByte) {
  command(0xaa);
  EXPECT_EQ(read_data(), 0x55);
  EXPECT_EQ(read_data(), 0x55);
}

TEST_F(I8042Ports, ConfigByteRoundTrips) {
  command(0x60);  // write the controller configuration byte
  write_data(0x65);
  EXPECT_EQ(controller_.config_byte(), 0x65);
  command(0x20);  // read it
  EXPECT_NE(status() & kObf, 0);
  EXPECT_EQ(read_data(), 0x65);
  EXPECT_EQ(irq_.pulses, 0) << "controller answers are not keyboard data";
}

TEST_F(I8042Ports, KeyboardCommandsAreAcknowledgedOnIrq1OnlyWhenEnabled) {
  // The config byte's bit 0 enables IRQ 1 for keyboard data.
  command(0x60);
  write_data(0x45);  // bit 0 set
  write_data(0xf4);  // "enable scanning", to the keyboard
  EXPECT_NE(status() & kObf, 0);
  EXPECT_EQ(read_data(), 0xfa) << "ACK";
  EXPECT_EQ(irq_.pulses, 1);
  EXPECT_EQ(irq_.raises, 1) << "a pulse is an edge: raised ...";
  EXPECT_EQ(irq_.lowers, 1) << "... and lowered";

  command(0x60);
  write_data(0x44);  // bit 0 clear: polled mode
  write_data(0xff);  // "reset", to the keyboard
  EXPECT_EQ(read_data(), 0xfa);
  EXPECT_EQ(irq_.pulses, 1) << "no interrupt with config bit 0 clear";
  EXPECT_EQ(on_reset_calls_, 0) << "a keyboard reset is not a CPU reset";
}

TEST_F(I8042Ports, WideAccessesSeeTheByteAtOffset0) {
  command(0xaa);
  std::array<std::uint8_t, 2> word{};
  data_->read(0, word);
  EXPECT_EQ(word[0], 0x55);
  EXPECT_EQ(word[1], 0xff) << "nothing decodes the port above";
}

}  // namespace
}  // namespace vmm::devices
