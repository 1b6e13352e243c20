#pragma once
/// @file
/// @brief `Uart16550`: the PC's serial port, a 16550A UART behind the I/O bus.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include <fmt/format.h>

#include "vmm/devices/bus_device.hpp"
#include "vmm/devices/irq_line.hpp"
#include "vmm/error.hpp"

namespace vmm::devices {

/// @brief Register offsets, bits and sizes of the 16550A, named as in the datasheet.
///
/// The guest sees eight ports; what a port means depends on the direction of the access and, for offsets 0 and 1, on
/// LCR.DLAB.
namespace uart {

// Offsets into the 8-port range.
inline constexpr std::uint64_t kRbrThr = 0;     ///< RBR (read) / THR (write) with DLAB=0; DLL with DLAB=1.
inline constexpr std::uint64_t kIer = 1;        ///< IER with DLAB=0; DLM with DLAB=1.
inline constexpr std::uint64_t kIirFcr = 2;     ///< IIR (read) / FCR (write), whatever DLAB.
inline constexpr std::uint64_t kLcr = 3;        ///< Line control.
inline constexpr std::uint64_t kMcr = 4;        ///< Modem control.
inline constexpr std::uint64_t kLsr = 5;        ///< Line status (read-only).
inline constexpr std::uint64_t kMsr = 6;        ///< Modem status (read-only).
inline constexpr std::uint64_t kScr = 7;        ///< Scratch.
inline constexpr std::uint64_t kPortCount = 8;  ///< Size of the device's range on the bus.

// IER: which conditions may interrupt.
inline constexpr std::uint8_t kIerErbfi = 0x01;  ///< Received data available (and character timeout).
inline constexpr std::uint8_t kIerEtbei = 0x02;  ///< Transmitter holding register empty.
inline constexpr std::uint8_t kIerElsi = 0x04;   ///< Receiver line status (overrun, parity, framing, break).
inline constexpr std::uint8_t kIerEdssi = 0x08;  ///< Modem status (a delta bit in MSR).
inline constexpr std::uint8_t kIerMask = 0x0f;   ///< Bits 4-7 always read 0 on a 16550A (Linux probes this).

// IIR: the highest-priority pending interrupt.
inline constexpr std::uint8_t kIirNoInterrupt = 0x01;  ///< Nothing pending.
inline constexpr std::uint8_t kIirModemStatus = 0x00;  ///< Lowest priority.
inline constexpr std::uint8_t kIirThrEmpty = 0x02;     ///< Transmitter holding register empty (third priority).
inline constexpr std::uint8_t kIirRxData = 0x04;       ///< RX data at the trigger level (second priority).
inline constexpr std::uint8_t kIirLineStatus = 0x06;   ///< Highest priority.
inline constexpr std::uint8_t kIirRxTimeout = 0x0c;    ///< Data below the FIFO trigger level (see `Uart16550`).
inline constexpr std::uint8_t kIirFifoEnabled = 0xc0;  ///< Both bits set while FCR.0 is set: "this is a 16550A".

// FCR (write-only).
inline constexpr std::uint8_t kFcrEnable = 0x01;       ///< Enable both FIFOs; without it the UART behaves as a 16450.
inline constexpr std::uint8_t kFcrClearRx = 0x02;      ///< Empty the RX FIFO (self-clearing).
inline constexpr std::uint8_t kFcrClearTx = 0x04;      ///< Empty the TX FIFO (self-clearing).
inline constexpr std::uint8_t kFcrDmaMode = 0x08;      ///< DMA mode 1: only affects pins a VMM lacks.
inline constexpr std::uint8_t kFcrTriggerMask = 0xc0;  ///< RX trigger level: 00=1, 01=4, 10=8, 11=14 bytes.

// LCR.
inline constexpr std::uint8_t kLcrDlab = 0x80;  ///< Divisor latch access: offsets 0 and 1 become DLL and DLM.

// MCR.
inline constexpr std::uint8_t kMcrDtr = 0x01;   ///< Data terminal ready (DSR in loopback).
inline constexpr std::uint8_t kMcrRts = 0x02;   ///< Request to send (CTS in loopback).
inline constexpr std::uint8_t kMcrOut1 = 0x04;  ///< User output 1, unused on a PC (RI in loopback).
inline constexpr std::uint8_t kMcrOut2 = 0x08;  ///< On a PC, enables the UART's interrupt onto the ISA bus.
inline constexpr std::uint8_t kMcrLoop = 0x10;  ///< Loopback: transmitter to receiver, MCR outputs to MSR inputs.
inline constexpr std::uint8_t kMcrMask = 0x1f;  ///< Bits 5-7 always read 0 on a 16550A.

// LSR.
inline constexpr std::uint8_t kLsrDr = 0x01;    ///< Data ready: the RX FIFO is not empty.
inline constexpr std::uint8_t kLsrOe = 0x02;    ///< Overrun: a received byte was lost. Cleared by reading LSR.
inline constexpr std::uint8_t kLsrThre = 0x20;  ///< Transmitter holding register (TX FIFO) empty.
inline constexpr std::uint8_t kLsrTemt = 0x40;  ///< Transmitter empty: THR and shift register both idle.

// MSR.
inline constexpr std::uint8_t kMsrDcts = 0x01;       ///< CTS changed.
inline constexpr std::uint8_t kMsrDdsr = 0x02;       ///< DSR changed.
inline constexpr std::uint8_t kMsrTeri = 0x04;       ///< RI went from on to off.
inline constexpr std::uint8_t kMsrDdcd = 0x08;       ///< DCD changed.
inline constexpr std::uint8_t kMsrDeltaMask = 0x0f;  ///< The four delta bits, cleared by reading MSR.
inline constexpr std::uint8_t kMsrCts = 0x10;        ///< Clear to send.
inline constexpr std::uint8_t kMsrDsr = 0x20;        ///< Data set ready.
inline constexpr std::uint8_t kMsrRi = 0x40;         ///< Ring indicator.
inline constexpr std::uint8_t kMsrDcd = 0x80;        ///< Data carrier detect.

inline constexpr std::size_t kFifoSize = 16;  ///< Depth of the 16550A's RX FIFO.

}  // namespace uart

/// @brief A read-only copy of the UART's registers, for tests, labs and gdb. Taking it has no side effects.
struct Uart16550State {
  std::uint8_t ier = 0;         ///< Interrupt enable (bits 0-3).
  std::uint8_t iir = 0;         ///< What reading IIR would return now (the snapshot does not clear the THRE interrupt).
  std::uint8_t fcr = 0;         ///< The FIFO control bits in effect (write-only for the guest).
  std::uint8_t lcr = 0;         ///< Line control.
  std::uint8_t mcr = 0;         ///< Modem control.
  std::uint8_t lsr = 0;         ///< What reading LSR would return now (the snapshot does not clear OE).
  std::uint8_t msr = 0;         ///< What reading MSR would return now (the snapshot does not clear the deltas).
  std::uint8_t scr = 0;         ///< Scratch.
  std::uint8_t dll = 0;         ///< Divisor latch, low byte.
  std::uint8_t dlm = 0;         ///< Divisor latch, high byte.
  bool thre_pending = false;    ///< The THR-empty interrupt is armed (reported by IIR if nothing outranks it).
  bool irq_pending = false;     ///< Some enabled interrupt is pending (IIR bit 0 is clear).
  bool irq_asserted = false;    ///< The level last successfully driven onto the IrqLine.
  std::size_t rx_count = 0;     ///< Bytes waiting in the RX FIFO.
  std::size_t rx_capacity = 0;  ///< 16 with FIFOs enabled, 1 without.
  std::size_t rx_trigger = 0;   ///< RX trigger level in bytes (1 without FIFOs).
  std::uint64_t tx_bytes = 0;   ///< Bytes the guest transmitted to the sink (loopback excluded).
  std::uint64_t rx_bytes = 0;   ///< Bytes accepted into the RX FIFO (input and loopback).
  std::uint64_t rx_overruns = 0;  ///< Bytes dropped because the RX FIFO was full.
};

/// @brief One line of text describing `state`, e.g. "IER=0x03 IIR=0xc1 ... RX 3/16".
[[nodiscard]] std::string to_string(const Uart16550State& state);

/// @brief A 16550A UART: the device behind COM1 (0x3f8, IRQ 4) that Linux's 8250 driver and the guests talk to.
///
/// **What is modelled.** All eight registers with the 16550A's reset values and read/write masks, the divisor latch
/// behind LCR.DLAB, the 16-byte RX FIFO (1 byte with FIFOs disabled) with overrun, the four interrupt sources with
/// their IIR priorities, loopback with MCR's outputs wired to MSR's inputs, and MSR's delta bits. This is what the
/// 8250 driver's autoconfig (scratch, IER and loopback probes, FIFO detection through IIR bits 6-7), its startup THRE
/// test and its interrupt handler rely on.
///
/// **Time does not exist here.** The transmitter is infinitely fast: a THR write hands the byte to the sink at once,
/// so THRE and TEMT are always set and the divisor only matters to the guest. There is no clock for the receiver's
/// character timeout either, so it is taken to have expired already: with FIFOs enabled, data below the RX trigger
/// level reports IIR 0x0c (timeout) and data at or above it 0x04 (data available). Both interrupt the guest, so input
/// is never stranded below the trigger level (Linux programs 8 bytes), and the IIR code still tells the two apart.
///
/// **THRE interrupt** (as Linux expects; the datasheet leaves the edges unclear and Bochs and QEMU agree on this):
/// it becomes pending when ETBEI goes from 0 to 1 (THR is always empty), when a byte is written to THR (sent at once,
/// so THR is immediately empty again) while ETBEI is set; it stops being pending when IIR is read while reporting it,
/// or when ETBEI is cleared.
///
/// **The interrupt line.** On a PC the UART's interrupt output reaches the PIC only through a gate driven by MCR.OUT2;
/// in loopback the OUT2 pin is forced inactive, which closes the gate. So the IrqLine is raised only while an enabled
/// interrupt is pending, OUT2 is set and loopback is off. Linux sets OUT2 when it opens a port with an IRQ. The line
/// is level-triggered: it is raised or lowered only when that condition changes, never re-raised while high.
///
/// **Hostile input.** Only the first byte of a wider access is used (the rest of a read is 0xff); offsets beyond 7
/// read 0xff and ignore writes. Nothing the guest does can throw, assert or fail.
///
/// **Threads.** vCPU threads call `read`/`write`; the VMM's event-loop thread calls `enqueue_input` and `rx_free`.
/// One mutex guards the registers. The sink and the IrqLine are called after that mutex is released, so a vCPU
/// polling LSR never waits behind a slow terminal or an ioctl. Two small mutexes keep those calls consistent: sink
/// calls are serialized (and a `write` returns only once its byte is handed over, so a guest that serializes its THR
/// writes, as every driver does, gets its bytes out in order); IrqLine updates re-read the pending state under their
/// own mutex, so the line always ends at the level of the latest register state even when threads race.
class Uart16550 final : public BusDevice {
 public:
  /// @brief Receives the bytes the guest transmits, in order, one call at a time.
  ///
  /// Called on a vCPU thread: it must not block for long (buffer, or drop when the reader is slow) and must not
  /// write to this UART's registers.
  using OutputSink = std::function<void(std::span<const std::uint8_t>)>;

  /// @brief A UART in its reset state, interrupting through `irq` (which must outlive it) and transmitting to
  /// `sink` (an empty sink discards output).
  explicit Uart16550(IrqLine& irq, OutputSink sink = {});

  Uart16550(const Uart16550&) = delete;
  Uart16550& operator=(const Uart16550&) = delete;
  Uart16550(Uart16550&&) = delete;
  Uart16550& operator=(Uart16550&&) = delete;
  ~Uart16550() override = default;

  /// @brief A guest read of `data.size()` bytes at `offset` (0-7).
  void read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  /// @brief A guest write at `offset` (0-7).
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

  /// @brief Bytes arriving on the serial line (from the host's terminal).
  ///
  /// Bytes that do not fit in the RX FIFO are dropped and set LSR.OE, as on hardware; call `rx_free` first to hold
  /// input back instead. In loopback the receiver is disconnected from the line: nothing is accepted and OE is not
  /// set. Returns the number of bytes accepted.
  std::size_t enqueue_input(std::span<const std::uint8_t> bytes);

  /// @brief How many bytes `enqueue_input` would accept now (0 in loopback).
  [[nodiscard]] std::size_t rx_free() const;

  /// @brief The last error the IrqLine returned, if any. An update that failed is retried at the next access.
  [[nodiscard]] std::optional<Error> last_irq_error() const;

  /// @brief A snapshot of the registers.
  [[nodiscard]] Uart16550State state() const;

 private:
  // Everything below, up to irq_mutex_, is guarded by mutex_.
  [[nodiscard]] std::uint8_t read_locked(std::uint64_t offset);
  /// Writes a register; returns true when `tx_byte` holds a byte for the sink.
  bool write_locked(std::uint64_t offset, std::uint8_t value, std::uint8_t& tx_byte);
  void push_rx_locked(std::uint8_t byte);
  std::uint8_t pop_rx_locked();
  void clear_rx_locked();
  void set_modem_inputs_locked(std::uint8_t lines);
  void write_fcr_locked(std::uint8_t value);
  void write_mcr_locked(std::uint8_t value);
  [[nodiscard]] std::uint8_t iir_locked() const;
  [[nodiscard]] std::uint8_t lsr_locked() const;
  [[nodiscard]] std::size_t rx_capacity_locked() const;
  [[nodiscard]] std::size_t rx_trigger_locked() const;
  [[nodiscard]] bool fifo_enabled_locked() const { return (fcr_ & uart::kFcrEnable) != 0; }
  [[nodiscard]] bool loopback_locked() const { return (mcr_ & uart::kMcrLoop) != 0; }
  [[nodiscard]] bool irq_wanted_locked() const;

  /// Drives the IrqLine to match the current register state; takes irq_mutex_, then mutex_ briefly.
  void sync_irq();
  /// Hands one transmitted byte to the sink; takes sink_mutex_.
  void emit(std::uint8_t byte);

  mutable std::mutex mutex_;
  std::uint8_t ier_ = 0;
  std::uint8_t fcr_ = 0;
  std::uint8_t lcr_ = 0;
  std::uint8_t mcr_ = 0;
  std::uint8_t scr_ = 0;
  std::uint8_t dll_ = 0;
  std::uint8_t dlm_ = 0;
  std::uint8_t msr_lines_ = 0;  // MSR bits 4-7: the modem inputs as currently seen
  std::uint8_t msr_delta_ = 0;  // MSR bits 0-3: changes since MSR was last read
  bool overrun_ = false;        // LSR.OE
  bool thre_pending_ = false;
  std::array<std::uint8_t, uart::kFifoSize> rx_{};
  std::size_t rx_head_ = 0;
  std::size_t rx_count_ = 0;
  std::uint64_t tx_bytes_ = 0;
  std::uint64_t rx_bytes_ = 0;
  std::uint64_t rx_overruns_ = 0;

  // Guarded by irq_mutex_, which is taken before mutex_ when both are held.
  mutable std::mutex irq_mutex_;
  IrqLine& irq_;
  std::atomic<bool> irq_asserted_ = false;  // written under irq_mutex_; atomic so state() can read it without it
  std::optional<Error> last_irq_error_;

  std::mutex sink_mutex_;  // serializes calls to sink_
  OutputSink sink_;
};

}  // namespace vmm::devices

/// @brief Lets `fmt::print("{}", uart.state())` print the one-line description.
template <>
struct fmt::formatter<vmm::devices::Uart16550State> : fmt::formatter<std::string_view> {
  /// @brief Formats `to_string(state)`, honouring string format specs.
  auto format(const vmm::devices::Uart16550State& state, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(vmm::devices::to_string(state), ctx);
  }
};
