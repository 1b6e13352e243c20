#include "vmm/devices/serial/uart16550.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

namespace vmm::devices {

using namespace uart;  // the register names, spelled as in the datasheet

namespace {

// The modem inputs outside loopback: a terminal that is always there and always ready. CTS set lets a guest using
// hardware flow control (CRTSCTS) transmit; DCD set keeps a guest without CLOCAL from seeing a hang-up; DSR for
// software that waits for "data set ready". RI stays off: nothing ever rings.
constexpr std::uint8_t kIdleModemInputs = kMsrCts | kMsrDsr | kMsrDcd;

// 9600 baud from the 1.8432 MHz crystal. The value is only ever read back by the guest: output is instantaneous.
constexpr std::uint8_t kResetDivisorLow = 0x0c;

// In loopback the outputs of MCR are wired to the inputs of MSR, as the datasheet draws it.
constexpr std::uint8_t loopback_inputs(std::uint8_t mcr) {
  std::uint8_t lines = 0;
  if ((mcr & kMcrDtr) != 0) {
    lines |= kMsrDsr;
  }
  if ((mcr & kMcrRts) != 0) {
    lines |= kMsrCts;
  }
  if ((mcr & kMcrOut1) != 0) {
    lines |= kMsrRi;
  }
  if ((mcr & kMcrOut2) != 0) {
    lines |= kMsrDcd;
  }
  return lines;
}

}  // namespace

Uart16550::Uart16550(IrqLine& irq, OutputSink sink)
    : dll_(kResetDivisorLow), msr_lines_(kIdleModemInputs), irq_(irq), sink_(std::move(sink)) {}

// --- guest accesses ---------------------------------------------------------------------------------------------

void Uart16550::read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (data.empty()) {
    return;
  }
  std::uint8_t value = 0;
  {
    std::lock_guard lock(mutex_);
    value = read_locked(offset);
  }
  // A UART is a byte-wide device: a wider access reads the register at `offset` once, and the bytes above it read as
  // a floating bus would. Reading RBR or IIR has side effects, so reading them once per access is the only safe way.
  data[0] = value;
  std::ranges::fill(data.subspan(1), std::uint8_t{0xff});
  sync_irq();  // reads of RBR, IIR, LSR and MSR clear interrupt sources
}

void Uart16550::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (data.empty()) {
    return;
  }
  std::uint8_t tx_byte = 0;
  bool transmit = false;
  {
    std::lock_guard lock(mutex_);
    transmit = write_locked(offset, data[0], tx_byte);  // bytes beyond the first are ignored (see read)
  }
  // The interrupt first, so its latency does not depend on how long the sink takes.
  sync_irq();
  if (transmit) {
    emit(tx_byte);
  }
}

std::uint8_t Uart16550::read_locked(std::uint64_t offset) {
  const bool dlab = (lcr_ & kLcrDlab) != 0;
  switch (offset) {
    case kRbrThr:
      // An empty RBR reads 0 (hardware would repeat the last byte; no driver reads RBR without DR set).
      return dlab ? dll_ : pop_rx_locked();
    case kIer:
      return dlab ? dlm_ : ier_;
    case kIirFcr: {
      const std::uint8_t iir = iir_locked();
      // Reading IIR acknowledges a THRE interrupt, but only if IIR is reporting it: a higher-priority source hides it
      // and it stays pending. This is what the 8250 driver's startup test and its interrupt handler rely on.
      if ((iir & 0x0f) == kIirThrEmpty) {
        thre_pending_ = false;
      }
      return iir;
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr: {
      const std::uint8_t lsr = lsr_locked();
      overrun_ = false;  // the error bits report each error once
      return lsr;
    }
    case kMsr: {
      const std::uint8_t msr = msr_lines_ | msr_delta_;
      msr_delta_ = 0;  // the delta bits report changes since the last read
      return msr;
    }
    case kScr:
      return scr_;
    default:
      // Not one of the eight ports: the bus would never route it here, but a device must not trust that.
      return 0xff;
  }
}

bool Uart16550::write_locked(std::uint64_t offset, std::uint8_t value, std::uint8_t& tx_byte) {
  const bool dlab = (lcr_ & kLcrDlab) != 0;
  switch (offset) {
    case kRbrThr:
      if (dlab) {
        dll_ = value;
        return false;
      }
      // The byte leaves THR at once, so THR is empty again right away: the write acknowledges the THRE interrupt and,
      // with ETBEI set, the now-empty THR raises it again. Without this the driver would stall after the first byte.
      thre_pending_ = (ier_ & kIerEtbei) != 0;
      if (loopback_locked()) {
        push_rx_locked(value);  // loopback: the transmitter feeds the receiver; nothing reaches the line
        return false;
      }
      ++tx_bytes_;
      tx_byte = value;
      return true;
    case kIer: {
      if (dlab) {
        dlm_ = value;
        return false;
      }
      const std::uint8_t ier = value & kIerMask;
      // THR is always empty, so enabling ETBEI makes the THRE interrupt pending at once, and disabling it forgets it.
      // Only the 0 -> 1 edge re-arms it (as in Bochs and QEMU): the driver's startup test toggles ETBEI off and on
      // and expects the interrupt back, and writing IER with ETBEI already set must not re-raise an acknowledged one.
      if (((ier_ ^ ier) & kIerEtbei) != 0) {
        thre_pending_ = (ier & kIerEtbei) != 0;
      }
      ier_ = ier;
      return false;
    }
    case kIirFcr:
      write_fcr_locked(value);
      return false;
    case kLcr:
      // Word length, parity, stop bits and break do not matter to a byte stream without a wire; only DLAB acts here.
      lcr_ = value;
      return false;
    case kMcr:
      write_mcr_locked(value);
      return false;
    case kScr:
      scr_ = value;
      return false;
    default:
      // LSR and MSR are read-only (writing LSR is a factory test mode); anything past offset 7 does not exist.
      return false;
  }
}

void Uart16550::write_fcr_locked(std::uint8_t value) {
  const bool enable = (value & kFcrEnable) != 0;
  if (enable != fifo_enabled_locked()) {
    clear_rx_locked();  // switching between FIFO and character mode empties the FIFOs
  }
  if (!enable) {
    fcr_ = 0;  // the other FCR bits are only programmed while bit 0 is written as 1
    return;
  }
  if ((value & kFcrClearRx) != 0) {
    clear_rx_locked();  // LSR.OE is not an RX FIFO byte: it survives until LSR is read
  }
  // kFcrClearTx: the TX FIFO is always empty already. The clear bits are self-clearing, so they are not stored.
  fcr_ = value & (kFcrEnable | kFcrDmaMode | kFcrTriggerMask);
}

void Uart16550::write_mcr_locked(std::uint8_t value) {
  const bool was_loopback = loopback_locked();
  mcr_ = value & kMcrMask;
  if (loopback_locked() || was_loopback) {
    set_modem_inputs_locked(loopback_locked() ? loopback_inputs(mcr_) : kIdleModemInputs);
  }
}

void Uart16550::set_modem_inputs_locked(std::uint8_t lines) {
  const std::uint8_t changed = msr_lines_ ^ lines;
  if ((changed & kMsrCts) != 0) {
    msr_delta_ |= kMsrDcts;
  }
  if ((changed & kMsrDsr) != 0) {
    msr_delta_ |= kMsrDdsr;
  }
  if ((changed & kMsrDcd) != 0) {
    msr_delta_ |= kMsrDdcd;
  }
  if ((msr_lines_ & kMsrRi) != 0 && (lines & kMsrRi) == 0) {
    msr_delta_ |= kMsrTeri;  // trailing edge only: the end of a ring
  }
  msr_lines_ = lines;
}

// --- receive FIFO ---------------------------------------------------------------------------------------------

std::size_t Uart16550::rx_capacity_locked() const {
  return fifo_enabled_locked() ? kFifoSize : 1;
}

std::size_t Uart16550::rx_trigger_locked() const {
  if (!fifo_enabled_locked()) {
    return 1;
  }
  constexpr std::array<std::size_t, 4> kTriggerLevels{1, 4, 8, 14};
  return kTriggerLevels[(fcr_ & kFcrTriggerMask) >> 6];
}

void Uart16550::push_rx_locked(std::uint8_t byte) {
  if (rx_count_ >= rx_capacity_locked()) {
    // A 16550A keeps the FIFO and loses the byte arriving in the shift register. (A 16450 would overwrite RBR; one
    // rule for both modes is simpler, and a VMM that respects rx_free() never overruns.)
    overrun_ = true;
    ++rx_overruns_;
    return;
  }
  rx_[(rx_head_ + rx_count_) % rx_.size()] = byte;
  ++rx_count_;
  ++rx_bytes_;
}

std::uint8_t Uart16550::pop_rx_locked() {
  if (rx_count_ == 0) {
    return 0;
  }
  const std::uint8_t byte = rx_[rx_head_];
  rx_head_ = (rx_head_ + 1) % rx_.size();
  --rx_count_;
  return byte;
}

void Uart16550::clear_rx_locked() {
  rx_head_ = 0;
  rx_count_ = 0;
}

std::size_t Uart16550::enqueue_input(std::span<const std::uint8_t> bytes) {
  std::size_t accepted = 0;
  {
    std::lock_guard lock(mutex_);
    if (loopback_locked()) {
      return 0;  // the receiver listens to the transmitter, not the line: the bytes are lost on the wire
    }
    const std::size_t before = rx_bytes_;
    for (const std::uint8_t byte : bytes) {
      push_rx_locked(byte);
    }
    accepted = rx_bytes_ - before;
  }
  if (!bytes.empty()) {
    sync_irq();
  }
  return accepted;
}

std::size_t Uart16550::rx_free() const {
  std::lock_guard lock(mutex_);
  return loopback_locked() ? 0 : rx_capacity_locked() - rx_count_;
}

// --- status and interrupts -------------------------------------------------------------------------------------

std::uint8_t Uart16550::lsr_locked() const {
  // The transmitter is infinitely fast, so THRE and TEMT are always set. PE, FE and BI never happen without a wire,
  // so bit 7 (an error in the RX FIFO) never does either.
  std::uint8_t lsr = kLsrThre | kLsrTemt;
  if (rx_count_ > 0) {
    lsr |= kLsrDr;
  }
  if (overrun_) {
    lsr |= kLsrOe;
  }
  return lsr;
}

std::uint8_t Uart16550::iir_locked() const {
  std::uint8_t id = kIirNoInterrupt;
  if ((ier_ & kIerElsi) != 0 && overrun_) {
    id = kIirLineStatus;
  } else if ((ier_ & kIerErbfi) != 0 && rx_count_ > 0) {
    // Without a clock the character timeout has always expired (see the class comment): data below the trigger
    // level interrupts too, reported as a timeout.
    id = rx_count_ >= rx_trigger_locked() ? kIirRxData : kIirRxTimeout;
  } else if ((ier_ & kIerEtbei) != 0 && thre_pending_) {
    id = kIirThrEmpty;
  } else if ((ier_ & kIerEdssi) != 0 && msr_delta_ != 0) {
    id = kIirModemStatus;
  }
  return fifo_enabled_locked() ? id | kIirFifoEnabled : id;
}

bool Uart16550::irq_wanted_locked() const {
  // OUT2 gates the interrupt onto the PC's bus; loopback forces the OUT2 pin inactive, closing the gate.
  const bool pending = (iir_locked() & kIirNoInterrupt) == 0;
  return pending && (mcr_ & kMcrOut2) != 0 && !loopback_locked();
}

void Uart16550::sync_irq() {
  // irq_mutex_ serializes updates of the line; the registers are sampled under it, so whichever thread updates last
  // drives the level of the latest state, and a raise computed from stale state can never follow a newer lower.
  std::lock_guard irq_lock(irq_mutex_);
  bool wanted = false;
  {
    std::lock_guard lock(mutex_);
    wanted = irq_wanted_locked();
  }
  if (wanted == irq_asserted_.load(std::memory_order_relaxed)) {
    return;  // level-triggered: nothing to do while the level is right
  }
  auto rc = wanted ? irq_.raise() : irq_.lower();
  if (!rc) {
    // Keep the old level: the next access sees the mismatch and tries again. The VMM reports the error.
    last_irq_error_ = std::move(rc.error());
    return;
  }
  irq_asserted_.store(wanted, std::memory_order_relaxed);
}

std::optional<Error> Uart16550::last_irq_error() const {
  std::lock_guard irq_lock(irq_mutex_);
  return last_irq_error_;
}

void Uart16550::emit(std::uint8_t byte) {
  std::lock_guard sink_lock(sink_mutex_);
  if (sink_) {
    sink_(std::span<const std::uint8_t>(&byte, 1));
  }
}

// --- inspection -----------------------------------------------------------------------------------------------

Uart16550State Uart16550::state() const {
  std::lock_guard lock(mutex_);
  return Uart16550State{
      .ier = ier_,
      .iir = iir_locked(),
      .fcr = fcr_,
      .lcr = lcr_,
      .mcr = mcr_,
      .lsr = lsr_locked(),
      .msr = static_cast<std::uint8_t>(msr_lines_ | msr_delta_),
      .scr = scr_,
      .dll = dll_,
      .dlm = dlm_,
      .thre_pending = thre_pending_,
      .irq_pending = (iir_locked() & kIirNoInterrupt) == 0,
      .irq_asserted = irq_asserted_.load(std::memory_order_relaxed),
      .rx_count = rx_count_,
      .rx_capacity = rx_capacity_locked(),
      .rx_trigger = rx_trigger_locked(),
      .tx_bytes = tx_bytes_,
      .rx_bytes = rx_bytes_,
      .rx_overruns = rx_overruns_,
  };
}

std::string to_string(const Uart16550State& s) {
  return fmt::format(
      "IER={:#04x} IIR={:#04x} FCR={:#04x} LCR={:#04x} MCR={:#04x} LSR={:#04x} MSR={:#04x} SCR={:#04x} "
      "DL={:#06x} THRE-pending={} pending={} line={} RX {}/{} (trigger {}) tx={} rx={} overruns={}",
      s.ier, s.iir, s.fcr, s.lcr, s.mcr, s.lsr, s.msr, s.scr, (s.dlm << 8) | s.dll, s.thre_pending ? "yes" : "no",
      s.irq_pending ? "yes" : "no", s.irq_asserted ? "high" : "low", s.rx_count, s.rx_capacity, s.rx_trigger,
      s.tx_bytes, s.rx_bytes, s.rx_overruns);
}

}  // namespace vmm::devices
