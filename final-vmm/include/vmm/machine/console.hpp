#pragma once
/// @file
/// @brief `ConsoleInput`: the host's stdin fed to the guest's UART at the pace its FIFO takes it, with Ctrl-A x
///        to quit; and `PanicWatch`, which notices a kernel panic in the console output.

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string>

#include "vmm/devices/serial/uart16550.hpp"
#include "vmm/event/escape.hpp"

namespace vmm::machine {

/// @brief Bytes typed on the host, on their way into COM1's receive FIFO.
///
/// A 16550's FIFO holds 16 bytes; a paste is longer. What does not fit waits here and `pump` (called on every input
/// and from a timer) moves more as the guest reads. Nothing is fed before the guest's driver enables receive
/// interrupts: the driver's initialisation clears the FIFO, so earlier bytes would be lost. Ctrl-A x asks to quit,
/// Ctrl-A Ctrl-A sends one Ctrl-A (the `EscapeDetector` of stage03).
class ConsoleInput {
 public:
  /// @brief Feeds `uart`, which must outlive this object.
  explicit ConsoleInput(devices::Uart16550& uart) : uart_(uart) {}
  /// @brief Takes bytes read from the host; returns true when they contained the quit sequence.
  bool feed(std::span<const std::uint8_t> bytes);
  /// @brief Moves what the FIFO can take now.
  void pump();
  /// @brief Bytes waiting.
  [[nodiscard]] std::size_t pending() const noexcept { return pending_.size(); }

 private:
  devices::Uart16550& uart_;
  event::EscapeDetector escape_;
  std::deque<std::uint8_t> pending_;
};

/// @brief Watches console output for "Kernel panic - not syncing: ..." and keeps that line.
///
/// With `panic=1` Linux reboots one second after a panic, which looks like any other reboot to the VMM; the
/// console is the only place that says why. Thread-safe (the UART's sink runs on vCPU threads).
class PanicWatch {
 public:
  /// @brief Looks at the next bytes of output.
  void observe(std::span<const std::uint8_t> bytes);
  /// @brief The panic line, if one was seen.
  [[nodiscard]] std::string panic_line() const;

 private:
  mutable std::mutex mutex_;
  std::string line_;   // the current line so far
  std::string panic_;  // the first panic line
};

}  // namespace vmm::machine
