#pragma once
/// @file
/// @brief `EscapeDetector`: finds the "Ctrl-A x" quit sequence in the keyboard input meant for the guest.

#include <cstdint>
#include <span>
#include <vector>

namespace vmm::event {

/// @brief What one `EscapeDetector::feed` produced.
struct EscapeResult {
  std::vector<std::uint8_t> forward;  ///< Bytes for the guest's serial port, in order.
  bool quit = false;                  ///< The user typed Ctrl-A x: stop the VM.
};

/// @brief Splits the host keyboard's input into bytes for the guest and commands for the VMM.
///
/// In raw mode every key, Ctrl-C included, goes to the guest, so the VMM needs one key of its own: Ctrl-A (0x01),
/// as in QEMU's `-serial mon:stdio` and screen. After Ctrl-A:
///   - `x` quits (bytes after it in the same input are dropped: the VM is going away);
///   - Ctrl-A sends one literal 0x01 to the guest;
///   - anything else is not a command: both bytes go to the guest unchanged.
///
/// The two bytes may arrive in different `feed` calls (a slow typist, or a read that ends between them): a Ctrl-A at
/// the end of an input is held back until the next byte decides what it was. Pure logic, no I/O.
class EscapeDetector {
 public:
  /// @brief The escape byte, Ctrl-A.
  static constexpr std::uint8_t kEscape = 0x01;
  /// @brief The byte that quits after the escape.
  static constexpr std::uint8_t kQuit = 'x';

  /// @brief Processes `input`: returns the bytes to forward and whether the user asked to quit.
  [[nodiscard]] EscapeResult feed(std::span<const std::uint8_t> input);

  /// @brief True when a Ctrl-A is held back, waiting for the next byte.
  [[nodiscard]] bool pending() const noexcept { return after_escape_; }

 private:
  bool after_escape_ = false;
};

}  // namespace vmm::event
