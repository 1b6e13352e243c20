#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "fake_irq_line.hpp"
#include "vmm/devices/serial/uart16550.hpp"

namespace vmm::devices {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using namespace uart;  // register offsets and bits

class Uart16550Test : public ::testing::Test {
 protected:
  std::uint8_t read_reg(std::uint64_t offset) {
    std::uint8_t value = 0;
    uart_.read(offset, std::span(&value, 1));
    return value;
  }
  void write_reg(std::uint64_t offset, std::uint8_t value) { uart_.write(offset, std::span(&value, 1)); }
  std::size_t input(std::string_view text) {
    return uart_.enqueue_input(
        std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));  // NOLINT: bytes of a string
  }
  std::uint8_t iir_id() { return read_reg(kIirFcr) & 0x0f; }

  testing::FakeIrqLine irq_;
  std::string sent_;  // the sink is called one byte at a time, serialized by the UART
  Uart16550 uart_{irq_, [this](std::span<const std::uint8_t> bytes) { sent_.append(bytes.begin(), bytes.end()); }};
};

TEST_F(Uart16550Test, ResetStateIsAnIdle16550WithNoInterrupt) {
  EXPECT_EQ(read_reg(kLsr), kLsrThre | kLsrTemt);
  EXPECT_EQ(read_reg(kIirFcr), kIirNoInterrupt);
  EXPECT_EQ(read_reg(kIer), 0);
  EXPECT_EQ(read_reg(kMsr), kMsrCts | kMsrDsr | kMsrDcd);  // a terminal that is always ready
  const auto s = uart_.state();
  EXPECT_EQ(s.rx_capacity, 1U);
  EXPECT_EQ(s.dll, 0x0c);  // 9600 baud
  EXPECT_THAT(irq_.calls(), IsEmpty());
}

TEST_F(Uart16550Test, DlabSwitchesOffsetsZeroAndOneToTheDivisorLatch) {
  write_reg(kIer, kIerErbfi);
  write_reg(kLcr, kLcrDlab | 0x03);
  write_reg(kRbrThr, 0x01);  // DLL: 115200 baud
  write_reg(kIer, 0x00);     // DLM
  EXPECT_EQ(read_reg(kRbrThr), 0x01);
  EXPECT_EQ(read_reg(kIer), 0x00);
  EXPECT_TRUE(sent_.empty()) << "a DLL write is not a byte to send";
  ASSERT_EQ(input("x"), 1U);
  EXPECT_EQ(read_reg(kRbrThr), 0x01) << "with DLAB set, offset 0 is DLL, not RBR";
  EXPECT_EQ(uart_.state().rx_count, 1U) << "reading DLL must not pop the FIFO";
  EXPECT_EQ(read_reg(kLcr), kLcrDlab | 0x03);

  write_reg(kLcr, 0x03);
  EXPECT_EQ(read_reg(kIer), kIerErbfi) << "IER kept its value behind the latch";
  EXPECT_EQ(read_reg(kRbrThr), 'x');
  write_reg(kRbrThr, 'A');
  EXPECT_EQ(sent_, "A");
  write_reg(kLcr, kLcrDlab);
  EXPECT_EQ(read_reg(kRbrThr), 0x01);
  EXPECT_EQ(read_reg(kIer), 0x00);
  const auto s = uart_.state();
  EXPECT_EQ(s.dll, 0x01);
  EXPECT_EQ(s.dlm, 0x00);
  EXPECT_EQ(s.ier, kIerErbfi);
}

TEST_F(Uart16550Test, ThrWriteGoesToTheSinkAndLeavesThreAndTemtSet) {
  for (const char c : std::string_view("hello")) {
    write_reg(kRbrThr, static_cast<std::uint8_t>(c));
    EXPECT_EQ(read_reg(kLsr) & (kLsrThre | kLsrTemt), kLsrThre | kLsrTemt);
  }
  EXPECT_EQ(sent_, "hello");
  EXPECT_EQ(uart_.state().tx_bytes, 5U);
  EXPECT_EQ(read_reg(kLsr) & kLsrDr, 0) << "transmitting does not receive";
}

TEST_F(Uart16550Test, InputSetsDataReadyAndRbrPopsInOrder) {
  write_reg(kIirFcr, kFcrEnable);
  EXPECT_EQ(uart_.rx_free(), kFifoSize);
  ASSERT_EQ(input("ab"), 2U);
  EXPECT_EQ(uart_.rx_free(), kFifoSize - 2);
  EXPECT_EQ(read_reg(kLsr), kLsrDr | kLsrThre | kLsrTemt);
  EXPECT_EQ(read_reg(kRbrThr), 'a');
  EXPECT_EQ(read_reg(kLsr) & kLsrDr, kLsrDr);
  EXPECT_EQ(read_reg(kRbrThr), 'b');
  EXPECT_EQ(read_reg(kLsr) & kLsrDr, 0);
  EXPECT_EQ(read_reg(kRbrThr), 0) << "an empty RBR reads 0 and does not underflow";
  EXPECT_EQ(uart_.state().rx_count, 0U);
}

TEST_F(Uart16550Test, FifoAcceptsSixteenBytesAndTheSeventeenthOverruns) {
  write_reg(kIirFcr, kFcrEnable);
  EXPECT_EQ(input("0123456789abcdef"), 16U);
  EXPECT_EQ(uart_.rx_free(), 0U);
  EXPECT_EQ(read_reg(kLsr) & kLsrOe, 0) << "16 bytes fit";
  EXPECT_EQ(input("XY"), 0U);
  const std::uint8_t lsr = read_reg(kLsr);
  EXPECT_EQ(lsr & kLsrOe, kLsrOe);
  EXPECT_EQ(lsr & kLsrDr, kLsrDr);
  EXPECT_EQ(read_reg(kLsr) & kLsrOe, 0) << "reading LSR clears OE";
  EXPECT_EQ(uart_.state().rx_overruns, 2U);
  std::string got;
  while ((read_reg(kLsr) & kLsrDr) != 0) {
    got += static_cast<char>(read_reg(kRbrThr));
  }
  EXPECT_EQ(got, "0123456789abcdef") << "the FIFO keeps its bytes; the late ones are lost";
}

TEST_F(Uart16550Test, WithFifosDisabledTheReceiverHoldsOneByte) {
  EXPECT_EQ(uart_.rx_free(), 1U);
  EXPECT_EQ(input("ab"), 1U);
  EXPECT_EQ(uart_.rx_free(), 0U);
  EXPECT_EQ(read_reg(kLsr) & (kLsrOe | kLsrDr), kLsrOe | kLsrDr);
  EXPECT_EQ(read_reg(kRbrThr), 'a');
  EXPECT_EQ(uart_.rx_free(), 1U);
  EXPECT_EQ(uart_.state().rx_capacity, 1U);
}

TEST_F(Uart16550Test, FcrClearRxEmptiesTheFifoButKeepsOverrun) {
  write_reg(kIirFcr, kFcrEnable);
  input("0123456789abcdefg");  // one too many
  write_reg(kIirFcr, kFcrEnable | kFcrClearRx | kFcrClearTx);
  EXPECT_EQ(uart_.state().rx_count, 0U);
  const std::uint8_t lsr = read_reg(kLsr);
  EXPECT_EQ(lsr & kLsrDr, 0);
  EXPECT_EQ(lsr & kLsrOe, kLsrOe) << "OE is a status bit, not FIFO content";
  EXPECT_EQ(uart_.rx_free(), kFifoSize);
  EXPECT_EQ(read_reg(kIirFcr) & kIirFifoEnabled, kIirFifoEnabled) << "the clear bits leave the FIFO enabled";
}

TEST_F(Uart16550Test, TogglingFifoEnableClearsTheReceiver) {
  write_reg(kIirFcr, kFcrEnable);
  input("abc");
  write_reg(kIirFcr, 0);
  EXPECT_EQ(uart_.state().rx_count, 0U);
  EXPECT_EQ(read_reg(kIirFcr), kIirNoInterrupt) << "IIR bits 6-7 clear with FIFOs off";
  input("d");
  write_reg(kIirFcr, kFcrEnable);
  EXPECT_EQ(uart_.state().rx_count, 0U);
  EXPECT_EQ(read_reg(kIirFcr), kIirFifoEnabled | kIirNoInterrupt);
}

TEST_F(Uart16550Test, IirReportsSourcesInPriorityOrder) {
  write_reg(kIirFcr, kFcrEnable);  // trigger level 1
  write_reg(kMcr, kMcrLoop);       // entering and leaving loopback changes CTS, DSR and DCD: modem status deltas
  write_reg(kMcr, 0);
  input("0123456789abcdefg");                                     // data, and an overrun
  write_reg(kIer, kIerErbfi | kIerEtbei | kIerElsi | kIerEdssi);  // THR empty: THRE pending too
  EXPECT_EQ(read_reg(kIirFcr), kIirFifoEnabled | kIirLineStatus);
  EXPECT_EQ(iir_id(), kIirLineStatus) << "reading IIR does not clear a line status interrupt";
  read_reg(kLsr);
  EXPECT_EQ(iir_id(), kIirRxData);
  for (int i = 0; i < 15; ++i) {
    read_reg(kRbrThr);
  }
  EXPECT_EQ(iir_id(), kIirRxData) << "one byte left";
  read_reg(kRbrThr);
  EXPECT_EQ(iir_id(), kIirThrEmpty) << "THRE was pending all along, hidden by higher priorities";
  EXPECT_EQ(iir_id(), kIirModemStatus) << "reading IIR acknowledged THRE";
  EXPECT_EQ(read_reg(kMsr) & kMsrDeltaMask, kMsrDcts | kMsrDdsr | kMsrDdcd);
  EXPECT_EQ(read_reg(kIirFcr), kIirFifoEnabled | kIirNoInterrupt);
}

TEST_F(Uart16550Test, DisabledSourcesDoNotInterrupt) {
  input("a");
  write_reg(kIer, kIerEtbei);
  EXPECT_EQ(iir_id(), kIirThrEmpty) << "data is waiting but ERBFI is off";
  EXPECT_EQ(iir_id(), kIirNoInterrupt);
}

TEST_F(Uart16550Test, RxTriggerLevelSeparatesDataAvailableFromTimeout) {
  write_reg(kIirFcr, kFcrEnable | 0x40);  // trigger at 4 bytes
  write_reg(kIer, kIerErbfi);
  EXPECT_EQ(uart_.state().rx_trigger, 4U);
  input("abc");
  EXPECT_EQ(read_reg(kIirFcr), kIirFifoEnabled | kIirRxTimeout) << "below the trigger level: a (pre-expired) timeout";
  input("d");
  EXPECT_EQ(read_reg(kIirFcr), kIirFifoEnabled | kIirRxData) << "at the trigger level";
  read_reg(kRbrThr);
  EXPECT_EQ(iir_id(), kIirRxTimeout);
  write_reg(kIirFcr, kFcrEnable | 0xc0);
  EXPECT_EQ(uart_.state().rx_trigger, 14U);
  EXPECT_EQ(uart_.state().rx_count, 3U) << "reprogramming the trigger with FIFOs on keeps the data";
  write_reg(kIirFcr, kFcrEnable | 0x80);
  EXPECT_EQ(uart_.state().rx_trigger, 8U);
}

TEST_F(Uart16550Test, EnablingEtbeiWithAnEmptyThrMakesThreePending) {
  EXPECT_EQ(iir_id(), kIirNoInterrupt);
  write_reg(kIer, kIerEtbei);
  EXPECT_TRUE(uart_.state().thre_pending);
  EXPECT_EQ(iir_id(), kIirThrEmpty);
}

TEST_F(Uart16550Test, ReadingIirClearsTheThreInterrupt) {
  write_reg(kIer, kIerEtbei);
  EXPECT_EQ(iir_id(), kIirThrEmpty);
  EXPECT_EQ(iir_id(), kIirNoInterrupt);
  EXPECT_FALSE(uart_.state().thre_pending);
  write_reg(kIer, kIerEtbei);
  EXPECT_EQ(iir_id(), kIirNoInterrupt) << "rewriting IER with ETBEI already set does not re-arm it";
}

TEST_F(Uart16550Test, WritingThrReArmsTheThreInterrupt) {
  write_reg(kIer, kIerEtbei);
  read_reg(kIirFcr);
  write_reg(kRbrThr, 'x');
  EXPECT_EQ(iir_id(), kIirThrEmpty) << "the byte left at once: THR is empty again";
  write_reg(kRbrThr, 'y');
  write_reg(kRbrThr, 'z');
  EXPECT_EQ(iir_id(), kIirThrEmpty);
  EXPECT_EQ(iir_id(), kIirNoInterrupt);
  EXPECT_EQ(sent_, "xyz");
}

TEST_F(Uart16550Test, ThrWriteWithoutEtbeiLeavesNothingPending) {
  write_reg(kRbrThr, 'x');
  EXPECT_FALSE(uart_.state().thre_pending);
  EXPECT_EQ(iir_id(), kIirNoInterrupt);
}

TEST_F(Uart16550Test, ReEnablingEtbeiReArmsTheThreInterrupt) {
  write_reg(kIer, kIerEtbei);
  read_reg(kIirFcr);
  write_reg(kIer, 0);
  EXPECT_FALSE(uart_.state().thre_pending) << "disabling ETBEI forgets the interrupt";
  write_reg(kIer, kIerEtbei);
  EXPECT_EQ(iir_id(), kIirThrEmpty);
}

TEST_F(Uart16550Test, PassesLinuxStartupThreAndTxenTests) {
  // serial8250_do_startup: a UART that does not re-assert THRE when ETBEI is toggled gets UART_BUG_THRE.
  write_reg(kIirFcr, kFcrEnable | kFcrClearRx | kFcrClearTx | 0x80);
  write_reg(kIer, kIerEtbei);
  const std::uint8_t iir1 = read_reg(kIirFcr);
  write_reg(kIer, 0);
  write_reg(kIer, kIerEtbei);
  const std::uint8_t iir = read_reg(kIirFcr);
  write_reg(kIer, 0);
  EXPECT_EQ(iir1 & kIirNoInterrupt, 0);
  EXPECT_EQ(iir & kIirNoInterrupt, 0);
  // ... and one that shows no interrupt with TEMT set right after ETBEI is enabled gets UART_BUG_TXEN.
  write_reg(kIer, kIerEtbei);
  const std::uint8_t lsr = read_reg(kLsr);
  const std::uint8_t iir2 = read_reg(kIirFcr);
  write_reg(kIer, 0);
  EXPECT_EQ(lsr & kLsrTemt, kLsrTemt);
  EXPECT_EQ(iir2 & kIirNoInterrupt, 0);
}

TEST_F(Uart16550Test, PassesLinuxAutoconfigProbesAsA16550A) {
  // IER test: the low nibble is read/write, the high nibble reads 0 (also rules out XScale's UUE bit).
  write_reg(kIer, 0);
  EXPECT_EQ(read_reg(kIer), 0);
  write_reg(kIer, 0xff);
  EXPECT_EQ(read_reg(kIer), 0x0f);
  write_reg(kIer, 0);
  // Loopback test: RTS and OUT2 come back as CTS and DCD.
  write_reg(kMcr, kMcrLoop | kMcrRts | kMcrOut2);
  EXPECT_EQ(read_reg(kMsr) & 0xf0, 0x90);
  write_reg(kMcr, 0);
  // No EFR: with LCR=0xbf, offset 2 is still IIR, which is never 0 with FIFOs on.
  write_reg(kIirFcr, kFcrEnable);
  write_reg(kLcr, 0xbf);
  EXPECT_NE(read_reg(kIirFcr), 0);
  write_reg(kLcr, 0);
  // FIFO type from IIR bits 6-7: 3 means 16550A; bit 5 stays 0, so it is not a 16750 with a 64-byte FIFO.
  write_reg(kIirFcr, kFcrEnable | 0x20);
  EXPECT_EQ(read_reg(kIirFcr) >> 6, 3);
  EXPECT_EQ(read_reg(kIirFcr) >> 5, 6);
  // MCR bits 5-7 read 0.
  write_reg(kMcr, 0xff & ~kMcrLoop);
  EXPECT_EQ(read_reg(kMcr), 0x0f);
}

TEST_F(Uart16550Test, LoopbackFeedsThrIntoRbrAndNotTheSink) {
  write_reg(kIirFcr, kFcrEnable);
  write_reg(kMcr, kMcrLoop);
  write_reg(kRbrThr, 'q');
  write_reg(kRbrThr, 'r');
  EXPECT_TRUE(sent_.empty());
  EXPECT_EQ(read_reg(kLsr) & kLsrDr, kLsrDr);
  EXPECT_EQ(read_reg(kRbrThr), 'q');
  EXPECT_EQ(read_reg(kRbrThr), 'r');
  EXPECT_EQ(uart_.rx_free(), 0U) << "the receiver is not listening to the line";
  EXPECT_EQ(input("z"), 0U);
  EXPECT_EQ(read_reg(kLsr) & (kLsrDr | kLsrOe), 0) << "input lost on the wire is not an overrun";
  write_reg(kMcr, 0);
  write_reg(kRbrThr, 's');
  EXPECT_EQ(sent_, "s");
  EXPECT_EQ(uart_.state().rx_count, 0U);
  EXPECT_EQ(uart_.rx_free(), kFifoSize);
}

TEST_F(Uart16550Test, LoopbackOverrunsLikeTheLine) {
  write_reg(kMcr, kMcrLoop);  // FIFOs off: one byte
  write_reg(kRbrThr, '1');
  write_reg(kRbrThr, '2');
  EXPECT_EQ(read_reg(kLsr) & kLsrOe, kLsrOe);
  EXPECT_EQ(read_reg(kRbrThr), '1');
}

TEST_F(Uart16550Test, InLoopbackMsrMirrorsMcr) {
  write_reg(kMcr, kMcrLoop);
  EXPECT_EQ(read_reg(kMsr) & 0xf0, 0);
  write_reg(kMcr, kMcrLoop | kMcrDtr);
  EXPECT_EQ(read_reg(kMsr) & 0xf0, kMsrDsr);
  write_reg(kMcr, kMcrLoop | kMcrRts);
  EXPECT_EQ(read_reg(kMsr) & 0xf0, kMsrCts);
  write_reg(kMcr, kMcrLoop | kMcrOut1);
  EXPECT_EQ(read_reg(kMsr) & 0xf0, kMsrRi);
  write_reg(kMcr, kMcrLoop | kMcrOut2);
  EXPECT_EQ(read_reg(kMsr), kMsrDcd | kMsrTeri | kMsrDdcd) << "RI went off (trailing edge), DCD came on";
  EXPECT_EQ(read_reg(kMsr), kMsrDcd) << "reading MSR clears the deltas";
  write_reg(kMcr, kMcrLoop | kMcrDtr | kMcrRts | kMcrOut1 | kMcrOut2);
  EXPECT_EQ(read_reg(kMsr), 0xf0 | kMsrDcts | kMsrDdsr) << "RI coming on is not a TERI";
  write_reg(kMcr, 0);
  EXPECT_EQ(read_reg(kMsr) & 0xf0, kMsrCts | kMsrDsr | kMsrDcd) << "out of loopback: the idle terminal again";
}

TEST_F(Uart16550Test, ModemStatusDeltaInterruptsUntilMsrIsRead) {
  write_reg(kIer, kIerEdssi);
  EXPECT_EQ(iir_id(), kIirNoInterrupt);
  write_reg(kMcr, kMcrLoop | kMcrRts | kMcrDtr | kMcrOut2);  // CTS, DSR, DCD unchanged; nothing to report
  EXPECT_EQ(iir_id(), kIirNoInterrupt);
  write_reg(kMcr, kMcrLoop | kMcrDtr | kMcrOut2);  // CTS drops
  EXPECT_EQ(iir_id(), kIirModemStatus);
  EXPECT_EQ(iir_id(), kIirModemStatus) << "reading IIR does not clear it";
  EXPECT_EQ(read_reg(kMsr) & kMsrDeltaMask, kMsrDcts);
  EXPECT_EQ(iir_id(), kIirNoInterrupt);
}

TEST_F(Uart16550Test, ScratchRegisterHoldsAnyByte) {
  for (const std::uint8_t v : {0x00, 0x55, 0xaa, 0xff}) {
    write_reg(kScr, v);
    EXPECT_EQ(read_reg(kScr), v);
  }
  write_reg(kLcr, kLcrDlab);
  EXPECT_EQ(read_reg(kScr), 0xff) << "DLAB does not affect SCR";
}

TEST_F(Uart16550Test, IrqIsRaisedOnceAndLoweredWhenServiced) {
  write_reg(kIirFcr, kFcrEnable);
  write_reg(kMcr, kMcrOut2 | kMcrDtr | kMcrRts);
  write_reg(kIer, kIerErbfi);
  EXPECT_THAT(irq_.calls(), IsEmpty());
  input("a");
  EXPECT_THAT(irq_.calls(), ElementsAre("raise"));
  EXPECT_TRUE(irq_.level());
  EXPECT_TRUE(uart_.state().irq_asserted);
  input("b");
  read_reg(kLsr);
  read_reg(kIirFcr);
  EXPECT_THAT(irq_.calls(), ElementsAre("raise")) << "level-triggered: no second raise while high";
  read_reg(kRbrThr);
  EXPECT_THAT(irq_.calls(), ElementsAre("raise")) << "'b' is still waiting";
  read_reg(kRbrThr);
  EXPECT_THAT(irq_.calls(), ElementsAre("raise", "lower"));
  EXPECT_FALSE(irq_.level());
  read_reg(kLsr);
  EXPECT_THAT(irq_.calls(), ElementsAre("raise", "lower"));
}

TEST_F(Uart16550Test, IrqFollowsTheThreInterrupt) {
  write_reg(kMcr, kMcrOut2);
  write_reg(kIer, kIerEtbei);
  EXPECT_THAT(irq_.calls(), ElementsAre("raise"));
  read_reg(kIirFcr);
  EXPECT_THAT(irq_.calls(), ElementsAre("raise", "lower"));
  write_reg(kRbrThr, 'x');
  EXPECT_THAT(irq_.calls(), ElementsAre("raise", "lower", "raise"));
  write_reg(kIer, 0);
  EXPECT_THAT(irq_.calls(), ElementsAre("raise", "lower", "raise", "lower"));
}

TEST_F(Uart16550Test, Out2GatesTheIrqLine) {
  write_reg(kIer, kIerErbfi);
  input("a");
  EXPECT_EQ(iir_id(), kIirRxData);
  EXPECT_THAT(irq_.calls(), IsEmpty()) << "pending, but OUT2 is off";
  EXPECT_TRUE(uart_.state().irq_pending);
  write_reg(kMcr, kMcrOut2);
  EXPECT_THAT(irq_.calls(), ElementsAre("raise"));
  write_reg(kMcr, 0);
  EXPECT_THAT(irq_.calls(), ElementsAre("raise", "lower"));
  write_reg(kMcr, kMcrOut2);
  write_reg(kMcr, kMcrOut2 | kMcrLoop);
  EXPECT_THAT(irq_.calls(), ElementsAre("raise", "lower", "raise", "lower")) << "loopback forces OUT2 inactive";
  EXPECT_EQ(iir_id(), kIirRxData) << "the interrupt is still pending inside the UART";
}

TEST_F(Uart16550Test, IrqErrorsAreKeptAndTheUpdateRetried) {
  EXPECT_FALSE(uart_.last_irq_error());
  write_reg(kMcr, kMcrOut2);
  write_reg(kIer, kIerErbfi);
  irq_.fail_next(1);
  EXPECT_EQ(input("a"), 1U) << "the byte is received even if the interrupt cannot be delivered";
  ASSERT_TRUE(uart_.last_irq_error());
  EXPECT_THAT(uart_.last_irq_error()->message(), HasSubstr("KVM_IRQ_LINE: EIO"));
  EXPECT_FALSE(uart_.state().irq_asserted);
  EXPECT_FALSE(irq_.level());
  read_reg(kLsr);  // the next access retries
  EXPECT_THAT(irq_.calls(), ElementsAre("raise", "raise"));
  EXPECT_TRUE(irq_.level());
  EXPECT_TRUE(uart_.state().irq_asserted);
  EXPECT_TRUE(uart_.last_irq_error()) << "the last error stays for the VMM to report";
}

TEST_F(Uart16550Test, HostileOffsetsReadAllOnesAndIgnoreWrites) {
  write_reg(kScr, 0x5a);
  const auto before = uart_.state();
  for (const std::uint64_t offset : {std::uint64_t{8}, std::uint64_t{100}, std::numeric_limits<std::uint64_t>::max()}) {
    EXPECT_EQ(read_reg(offset), 0xff) << offset;
    write_reg(offset, 0x00);
    write_reg(offset, 0xff);
  }
  const auto after = uart_.state();
  EXPECT_EQ(after.scr, 0x5a);
  EXPECT_EQ(after.ier, before.ier);
  EXPECT_EQ(after.lcr, before.lcr);
  EXPECT_EQ(after.mcr, before.mcr);
  EXPECT_TRUE(sent_.empty());
  EXPECT_THAT(irq_.calls(), IsEmpty());
}

TEST_F(Uart16550Test, WideAccessesUseTheFirstByteOnly) {
  write_reg(kIirFcr, kFcrEnable);
  input("ab");
  std::array<std::uint8_t, 4> wide{};
  uart_.read(kRbrThr, wide);
  EXPECT_THAT(wide, ElementsAre('a', 0xff, 0xff, 0xff));
  EXPECT_EQ(uart_.state().rx_count, 1U) << "a 4-byte read of RBR pops one byte";
  std::array<std::uint8_t, 8> qword{};
  uart_.read(kLsr, qword);
  EXPECT_EQ(qword[0], kLsrDr | kLsrThre | kLsrTemt);
  EXPECT_EQ(qword[7], 0xff);

  const std::array<std::uint8_t, 4> text{'w', 'x', 'y', 'z'};
  uart_.write(kRbrThr, text);
  EXPECT_EQ(sent_, "w");
  const std::array<std::uint8_t, 2> ier{kIerEtbei, 0xff};
  uart_.write(kIer, ier);
  EXPECT_EQ(read_reg(kIer), kIerEtbei);
  EXPECT_EQ(read_reg(kLcr), 0) << "the second byte did not spill into LCR";

  uart_.read(kLsr, std::span<std::uint8_t>());  // empty accesses are ignored
  uart_.write(kRbrThr, std::span<const std::uint8_t>());
  uart_.read(100, wide);
  EXPECT_THAT(wide, ElementsAre(0xff, 0xff, 0xff, 0xff));
  EXPECT_EQ(sent_, "w");
}

TEST_F(Uart16550Test, ConcurrentInputAndReadsLoseAndDuplicateNothing) {
  constexpr std::size_t kBytes = 20'000;
  write_reg(kIirFcr, kFcrEnable | 0x80);
  write_reg(kMcr, kMcrOut2);
  write_reg(kIer, kIerErbfi);
  std::thread producer([&] {  // the event loop: holds input back instead of overrunning
    std::size_t next = 0;
    while (next < kBytes) {
      const std::size_t room = std::min(uart_.rx_free(), kBytes - next);
      std::vector<std::uint8_t> chunk(room);
      for (std::size_t i = 0; i < room; ++i) {
        chunk[i] = static_cast<std::uint8_t>((next + i) % 251);
      }
      next += uart_.enqueue_input(chunk);
      if (room == 0) {
        std::this_thread::yield();
      }
    }
  });
  std::thread noise([&] {  // another vCPU talking: THR writes and register reads must not disturb the receiver
    for (int i = 0; i < 2'000; ++i) {
      write_reg(kRbrThr, '.');
      read_reg(kMsr);
      (void)uart_.state();
      std::this_thread::yield();  // the test may run on two CPUs: let the others progress
    }
  });

  std::vector<std::uint8_t> received;  // the receiving vCPU, polling like the 8250 driver's rx loop
  received.reserve(kBytes);
  while (received.size() < kBytes) {
    if ((read_reg(kLsr) & kLsrDr) != 0) {
      received.push_back(read_reg(kRbrThr));
    } else {
      std::this_thread::yield();
    }
  }
  producer.join();
  noise.join();

  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < kBytes; ++i) {
    mismatches += received[i] != static_cast<std::uint8_t>(i % 251) ? 1 : 0;
  }
  EXPECT_EQ(mismatches, 0U);
  const auto s = uart_.state();
  EXPECT_EQ(s.rx_overruns, 0U);
  EXPECT_EQ(s.rx_bytes, kBytes);
  EXPECT_EQ(s.rx_count, 0U);
  EXPECT_EQ(s.tx_bytes, 2'000U);
  EXPECT_EQ(sent_, std::string(2'000, '.'));
  EXPECT_FALSE(irq_.level()) << "after the race the line matches the state: nothing pending";
  EXPECT_FALSE(s.irq_asserted);
}

TEST_F(Uart16550Test, StateFormatsOnOneLine) {
  write_reg(kIirFcr, kFcrEnable);
  input("abc");
  const std::string line = fmt::format("{}", uart_.state());
  EXPECT_THAT(line, HasSubstr("LSR=0x61"));
  EXPECT_THAT(line, HasSubstr("IIR=0xc1"));
  EXPECT_THAT(line, HasSubstr("RX 3/16 (trigger 1)"));
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

}  // namespace
}  // namespace vmm::devices
