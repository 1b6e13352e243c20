// Lab 03, exercise 2 (reference): the registers Linux's 8250 probe needs, in a minimal UART.
#include <algorithm>

#include "lab03.hpp"

namespace lab03 {

using namespace vmm::devices::uart;  // register offsets and bits, as in the datasheet

void MiniUart::read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (data.empty()) {
    return;
  }
  std::ranges::fill(data, std::uint8_t{0xff});  // a byte-wide device: the rest of a wider access floats
  std::lock_guard lock(mutex_);
  const bool dlab = (lcr_ & kLcrDlab) != 0;
  switch (offset) {
    case kRbrThr:
      data[0] = dlab ? dll_ : 0x00;  // no receiver: an empty RBR reads 0
      break;
    case kIer:
      data[0] = dlab ? dlm_ : ier_;
      break;
    case kIirFcr:
      data[0] = kIirNoInterrupt;  // nothing pending, no FIFOs: IIR bits 6-7 clear say "not a 16550A"
      break;
    case kLcr:
      data[0] = lcr_;
      break;
    case kLsr:
      data[0] = kLsrThre | kLsrTemt;  // the transmitter is always idle
      break;
    case kScr:
      data[0] = scr_;
      break;
    default:
      break;  // MCR and MSR are not modelled: the floating bus
  }
}

void MiniUart::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (data.empty()) {
    return;
  }
  std::unique_lock lock(mutex_);
  const bool dlab = (lcr_ & kLcrDlab) != 0;
  const std::uint8_t value = data[0];
  switch (offset) {
    case kRbrThr:
      if (dlab) {
        dll_ = value;  // the divisor's low byte, not a character
        return;
      }
      lock.unlock();  // never call out while holding the lock
      if (sink_) {
        sink_(std::span(&value, 1));
      }
      return;
    case kIer:
      if (dlab) {
        dlm_ = value;
      } else {
        ier_ = value & kIerMask;  // bits 4-7 do not exist on a 16550A: Linux's probe checks they read 0
      }
      return;
    case kLcr:
      lcr_ = value;
      return;
    case kScr:
      scr_ = value;
      return;
    default:
      return;  // FCR, MCR: not modelled; LSR, MSR: read-only
  }
}

}  // namespace lab03
