#pragma once
/// @file
/// @brief `GuestConsole`: what a test sees of a guest on the UART (stage03 on): its output and its exit status.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "vmm/devices/serial/uart16550.hpp"

namespace vmm::testing {

/// @brief Collects a UART's output and the guest's exit status (both arrive on the vCPU thread) and lets the test
///        thread wait for either.
struct GuestConsole {
  std::mutex mutex;                          ///< Guards the fields below.
  std::condition_variable changed;           ///< Notified on every output or exit.
  std::string output;                        ///< Everything the guest sent so far.
  std::optional<std::uint32_t> exit_status;  ///< Set when the guest writes its exit port.

  /// @brief Appends output (the UART's sink calls it).
  void append(std::span<const std::uint8_t> bytes) {
    std::lock_guard lock(mutex);
    output.append(bytes.begin(), bytes.end());
    changed.notify_all();
  }
  /// @brief A sink for `Uart16550` that appends here.
  [[nodiscard]] devices::Uart16550::OutputSink sink() {
    return [this](std::span<const std::uint8_t> bytes) { append(bytes); };
  }
  /// @brief Records the exit status (the report channel's callback calls it).
  void exited(std::uint32_t status) {
    std::lock_guard lock(mutex);
    exit_status = status;
    changed.notify_all();
  }
  /// @brief A copy of the output so far.
  [[nodiscard]] std::string text() {
    std::lock_guard lock(mutex);
    return output;
  }
  /// @brief Waits until `pred(*this)` holds (checked under the lock) or `timeout` passes; false on timeout.
  template <typename Pred>
  bool wait(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return pred(*this); });
  }
  /// @brief Waits for the exit status; false on timeout.
  bool wait_for_exit(std::chrono::milliseconds timeout = std::chrono::seconds(90)) {
    return wait([](GuestConsole& c) { return c.exit_status.has_value(); }, timeout);
  }
};

}  // namespace vmm::testing
