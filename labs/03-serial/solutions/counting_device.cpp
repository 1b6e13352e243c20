// Lab 03, exercise 3 (reference): count the exits a UART driver costs.
#include <fmt/format.h>

#include "lab03.hpp"

namespace lab03 {

using namespace vmm::devices::uart;  // register offsets

void CountingDevice::read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (offset < kPortCount) {
    std::lock_guard lock(mutex_);
    ++counts_.reads[offset];
  }
  inner_->read(offset, data);  // outside the lock: the device may take its time (and its own locks)
}

void CountingDevice::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (offset < kPortCount) {
    std::lock_guard lock(mutex_);
    ++counts_.writes[offset];
  }
  inner_->write(offset, data);
}

ExitCounts CountingDevice::counts() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

vmm::Result<std::shared_ptr<CountingDevice>> count_exits(vmm::devices::Bus& bus, std::uint64_t base) {
  auto entry = bus.find(base);
  if (!entry || entry->range.base != base) {
    return vmm::logic_error("count_exits", fmt::format("no device starts at {:#x} on the {} bus", base, bus.name()));
  }
  auto inner = bus.remove(base);
  if (!inner) {
    return std::unexpected(inner.error());
  }
  auto counter = std::make_shared<CountingDevice>(std::move(*inner));
  if (auto rc = bus.insert(counter, entry->range.base, entry->range.size, entry->name); !rc) {
    return std::unexpected(rc.error());
  }
  return counter;
}

ExitCounts predict_echo_exits(std::uint64_t typed) {
  ExitCounts c;
  // One character arrives while the guest halts in uart_getline: the receive interrupt reads IIR (data available),
  // LSR (DR set), RBR (the byte), LSR (DR clear: the FIFO is empty), IIR (nothing pending). Five exits.
  c.reads[kIirFcr] = 2 * typed;
  c.reads[kLsr] = 2 * typed;
  c.reads[kRbrThr] = typed;
  // uart_getline echoes it: uart_write queues one byte and writes IER = 0x07 (THRI on; the UART interrupts at once).
  // The THRE interrupt reads IIR (THR empty: that read lowers the line), writes THR (THR is empty again at once, so
  // the line goes up again), finds the ring empty and writes IER = 0x05 (THRI off: the line goes down), reads IIR
  // (nothing pending). Five exits. But the 8259 is edge-triggered and latched that brief rise while the handler ran:
  // after the EOI it interrupts once more, and the handler reads IIR once, finds nothing, and returns. Six.
  c.writes[kIer] = 2 * typed;
  c.reads[kIirFcr] += 3 * typed;
  c.writes[kRbrThr] = typed;
  return c;
}

}  // namespace lab03
