#pragma once
/// @file
/// @brief `ConsoleInput`: the host's stdin fed to a guest's UART at the pace its FIFO takes it, with Ctrl-A x to quit.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>

#include "vmm/devices/serial/uart16550.hpp"
#include "vmm/error.hpp"
#include "vmm/event/escape.hpp"
#include "vmm/event/event_loop.hpp"

namespace vmm::event {

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

  /// @brief Reads the host's stdin on `loop` into this input, and pumps it every `pump_period`. `on_quit` runs (on
  ///        the loop's thread) when Ctrl-A x is typed. At the end of input the guest runs on without it. A stdin that
  ///        epoll cannot watch (a regular file, /dev/null: always "ready") is read to its end at once.
  [[nodiscard]] Result<void> watch_stdin(EventLoop& loop, std::function<void()> on_quit,
                                         std::chrono::milliseconds pump_period);

 private:
  void read_stdin(EventLoop& loop);

  devices::Uart16550& uart_;
  event::EscapeDetector escape_;
  std::deque<std::uint8_t> pending_;
  std::function<void()> on_quit_;
  bool stdin_open_ = false;
};

}  // namespace vmm::event
