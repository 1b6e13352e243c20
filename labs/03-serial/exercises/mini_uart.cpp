// Lab 03, exercise 2: the registers Linux's 8250 probe needs, in a minimal UART. See labs/03-serial/README.md.
#include <algorithm>

#include "lab03.hpp"

namespace lab03 {

void MiniUart::read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (data.empty()) {
    return;
  }
  std::ranges::fill(data, std::uint8_t{0xff});  // a byte-wide device: the rest of a wider access floats
  std::lock_guard lock(mutex_);
  switch (offset) {
    case vmm::devices::uart::kIirFcr:
      data[0] = vmm::devices::uart::kIirNoInterrupt;  // nothing pending, no FIFOs
      break;
    case vmm::devices::uart::kLsr:
      data[0] = vmm::devices::uart::kLsrThre | vmm::devices::uart::kLsrTemt;  // the transmitter is always idle
      break;
    default:
      // TODO: IER (offset 1), LCR (3), SCR (7), and DLL/DLM at offsets 0/1 while LCR.DLAB is set.
      break;
  }
}

void MiniUart::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (data.empty()) {
    return;
  }
  std::unique_lock lock(mutex_);
  switch (offset) {
    case vmm::devices::uart::kRbrThr: {
      // TODO: with LCR.DLAB set this is DLL, not a byte to send.
      const std::uint8_t byte = data[0];
      lock.unlock();  // never call out while holding the lock
      if (sink_) {
        sink_(std::span(&byte, 1));
      }
      break;
    }
    default:
      // TODO: IER (keep bits 0-3), LCR, SCR, and DLM at offset 1 while LCR.DLAB is set.
      break;
  }
}

}  // namespace lab03
