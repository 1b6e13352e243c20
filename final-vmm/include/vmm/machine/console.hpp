#pragma once
/// @file
/// @brief `PanicWatch`, which notices a kernel panic in the console output.

#include <cstdint>
#include <mutex>
#include <span>
#include <string>

namespace vmm::machine {

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
