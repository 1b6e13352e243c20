#pragma once
/// @file
/// @brief Lab 03's exercise interface: the functions you write (exercises/) and the reference (solutions/) share it.

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "lab03_guest.h"  // LAB03_COM2, LAB03_COM2_IRQ, LAB03_COM2_MESSAGE (shared with guests/com2.c)
#include "serial_vm.hpp"
#include "vmm/devices/bus.hpp"
#include "vmm/devices/bus_device.hpp"
#include "vmm/devices/serial/uart16550.hpp"
#include "vmm/error.hpp"

namespace lab03 {

inline constexpr std::uint16_t kCom2Base = LAB03_COM2;     ///< 0x2f8.
inline constexpr std::uint32_t kCom2Irq = LAB03_COM2_IRQ;  ///< IRQ 3 (GSI 3).

// --- Exercise 1 ------------------------------------------------------------------------------------------------

/// @brief Exercise 1: give `vm` a second 16550A, COM2, at ports [0x2f8, 0x300) interrupting on IRQ 3, whose output
///        goes to `sink`. Returns the UART (the test reads its state).
///
/// A `Uart16550` only holds a *reference* to its `IrqLine`, so the line must live at least as long as the UART —
/// and the UART lives as long as anything holds it: the bus does, for as long as `vm` exists, and so may the caller.
/// Design the ownership so that no holder can outlive the line (hint: std::shared_ptr's aliasing constructor).
[[nodiscard]] vmm::Result<std::shared_ptr<vmm::devices::Uart16550>> add_com2(vmm::stage03::SerialVm& vm,
                                                                             vmm::devices::Uart16550::OutputSink sink);

// --- Exercise 2 ------------------------------------------------------------------------------------------------

/// @brief Exercise 2: a deliberately minimal UART. As given it transmits (a THR write goes to the sink), reports an
///        always-empty transmitter (LSR = THRE | TEMT) and no interrupt (IIR = 0x01, no FIFOs), and nothing else:
///        every other register reads 0xff (a floating bus) and ignores writes.
///
/// Linux's 8250 driver would not even believe there is a UART here. Add what its probe needs (see README.md): IER
/// (the four low bits hold what was written, the high four read 0), LCR (reads back), the scratch register, and the
/// divisor latch behind LCR.DLAB (offsets 0 and 1 become DLL and DLM; a DLL write is not a byte to transmit).
class MiniUart final : public vmm::devices::BusDevice {
 public:
  /// @brief Transmits to `sink` (an empty sink discards output).
  explicit MiniUart(vmm::devices::Uart16550::OutputSink sink) : sink_(std::move(sink)) {}

  void read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

 private:
  std::mutex mutex_;  // vCPU threads may call read/write at once
  vmm::devices::Uart16550::OutputSink sink_;
  // The registers you add. The reset values are the 16550A's (the divisor is the datasheet's "undefined": 0 here).
  std::uint8_t ier_ = 0;
  std::uint8_t lcr_ = 0;
  std::uint8_t scr_ = 0;
  std::uint8_t dll_ = 0;
  std::uint8_t dlm_ = 0;
};

// --- Exercise 3 ------------------------------------------------------------------------------------------------

/// @brief Accesses to a UART's eight ports, by offset (0 = RBR/THR/DLL ... 7 = SCR): one KVM_EXIT_IO each.
struct ExitCounts {
  std::array<std::uint64_t, 8> reads{};   ///< IN from base + i.
  std::array<std::uint64_t, 8> writes{};  ///< OUT to base + i.
  /// @brief Every access counted.
  [[nodiscard]] std::uint64_t total() const {
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < reads.size(); ++i) {
      n += reads[i] + writes[i];
    }
    return n;
  }
  friend bool operator==(const ExitCounts&, const ExitCounts&) = default;
};

/// @brief Exercise 3: a `BusDevice` that forwards every access to `inner` and counts it, per offset.
///
/// Accesses at offsets outside [0, 8) are forwarded but not counted.
class CountingDevice final : public vmm::devices::BusDevice {
 public:
  explicit CountingDevice(std::shared_ptr<vmm::devices::BusDevice> inner) : inner_(std::move(inner)) {}

  void read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

  /// @brief The counts so far (a copy, safe to take while a vCPU runs).
  [[nodiscard]] ExitCounts counts() const;
  /// @brief The device it counts for.
  [[nodiscard]] const std::shared_ptr<vmm::devices::BusDevice>& inner() const noexcept { return inner_; }

 private:
  std::shared_ptr<vmm::devices::BusDevice> inner_;
  mutable std::mutex mutex_;
  ExitCounts counts_;
};

/// @brief Exercise 3: put a `CountingDevice` in front of the device at `base` of `bus`: same range, same name, so
///        the guest cannot tell. Call it before the vCPU starts.
[[nodiscard]] vmm::Result<std::shared_ptr<CountingDevice>> count_exits(vmm::devices::Bus& bus, std::uint64_t base);

/// @brief Exercise 3: your theory, as code. What COM1 sees while the echo guest (stage03-serial/guest/echo.c with
///        lib/uart.c), waiting in uart_getline, receives `typed` characters (none of them '\r' or '\n') one at a
///        time, each typed only once the guest has finished with the one before (echoed it, and halted again).
///        Derive it from uart.c: README.md walks you through it.
[[nodiscard]] ExitCounts predict_echo_exits(std::uint64_t typed);

}  // namespace lab03
