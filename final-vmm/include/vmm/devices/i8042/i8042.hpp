#pragma once
/// @file
/// @brief `I8042`: the PC keyboard controller, here for one wire: the CPU reset line Linux pulls to reboot
///        (`reboot=k`).

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>

#include "vmm/devices/bus_device.hpp"
#include "vmm/devices/irq_line.hpp"

namespace vmm::devices {

/// @brief i8042 ports, commands and status bits (the IBM PC/AT technical reference; Linux's drivers/input/serio/
///        i8042.h uses the same names).
namespace i8042 {
inline constexpr std::uint64_t kDataPort = 0x60;     ///< Data: controller answers, keyboard bytes.
inline constexpr std::uint64_t kCommandPort = 0x64;  ///< Read: status. Write: a controller command.
inline constexpr std::uint32_t kKeyboardIrq = 1;     ///< ISA IRQ of the keyboard port.

inline constexpr std::uint8_t kStatusOutputFull = 0x01;  ///< A byte waits in the data port.
inline constexpr std::uint8_t kStatusInputFull = 0x02;   ///< The controller has not taken the last write (never).
inline constexpr std::uint8_t kStatusSystem = 0x04;      ///< Self-test passed.
inline constexpr std::uint8_t kStatusCommand = 0x08;     ///< The last write was to the command port.
inline constexpr std::uint8_t kStatusUnlocked = 0x10;    ///< Keyboard not inhibited.

inline constexpr std::uint8_t kCtrKeyboardIrq = 0x01;      ///< Controller config byte: IRQ 1 on keyboard data.
inline constexpr std::uint8_t kCtrSystem = 0x04;           ///< System flag.
inline constexpr std::uint8_t kCtrKeyboardDisable = 0x10;  ///< Keyboard clock off.
inline constexpr std::uint8_t kCtrAuxDisable = 0x20;       ///< Aux (mouse) clock off.
inline constexpr std::uint8_t kCtrTranslate = 0x40;        ///< Scan code set 2 -> 1 translation.

inline constexpr std::uint8_t kCmdReadCtr = 0x20;          ///< Answer the config byte.
inline constexpr std::uint8_t kCmdWriteCtr = 0x60;         ///< The next data byte is the config byte.
inline constexpr std::uint8_t kCmdAuxDisable = 0xa7;       ///< Aux port off.
inline constexpr std::uint8_t kCmdAuxEnable = 0xa8;        ///< Aux port on.
inline constexpr std::uint8_t kCmdSelfTest = 0xaa;         ///< Answer 0x55.
inline constexpr std::uint8_t kCmdKeyboardTest = 0xab;     ///< Answer 0x00 (no clock or data line stuck).
inline constexpr std::uint8_t kCmdKeyboardDisable = 0xad;  ///< Keyboard port off.
inline constexpr std::uint8_t kCmdKeyboardEnable = 0xae;   ///< Keyboard port on.
inline constexpr std::uint8_t kCmdReadOutput = 0xd0;       ///< Answer the output port.
inline constexpr std::uint8_t kCmdWriteOutput = 0xd1;      ///< The next data byte is the output port; bit 0 = reset.
inline constexpr std::uint8_t kCmdWriteKeyboard = 0xd2;    ///< The next data byte appears as if from the keyboard.
inline constexpr std::uint8_t kCmdPulseReset = 0xfe;       ///< Pulse output line 0: reset the CPU.
inline constexpr std::uint8_t kSelfTestPassed = 0x55;      ///< Answer to kCmdSelfTest.
inline constexpr std::uint8_t kKeyboardAck = 0xfa;         ///< A keyboard's answer to any command.
}  // namespace i8042

/// @brief The 8042 keyboard controller at ports 0x60 and 0x64, without a keyboard behind it.
///
/// Linux reboots a PC with `reboot=k` by writing 0xFE (pulse the reset line) to port 0x64 after waiting for the
/// input buffer to be empty; the controller here calls `on_reset` then, and the VMM ends the VM. It also answers
/// the controller commands Linux's i8042 driver sends while probing (self-test, config byte, port tests), so the
/// driver finds a controller instead of timing out, and acknowledges keyboard commands (0xFA, on IRQ 1) so atkbd
/// does not wait for answers that never come. There are no keys and no aux (mouse) port.
///
/// Insert `data_port()` at 0x60 and `command_port()` at 0x64, one port each. Thread-safe.
class I8042 {
 public:
  /// @brief `irq` is ISA IRQ 1 (pulsed when a keyboard byte is queued and the config byte allows it); `on_reset`
  ///        runs on the vCPU thread that pulled the reset line.
  I8042(IrqLine& irq, std::function<void()> on_reset);

  /// @brief The device to insert at port 0x60.
  [[nodiscard]] std::shared_ptr<BusDevice> data_port() { return data_; }
  /// @brief The device to insert at port 0x64.
  [[nodiscard]] std::shared_ptr<BusDevice> command_port() { return command_; }

  /// @brief A read of port 0x60: the oldest queued byte (or the last one again, as hardware does when empty).
  std::uint8_t read_data();
  /// @brief A read of port 0x64: the status byte.
  std::uint8_t read_status();
  /// @brief A write to port 0x60: a command's argument, or a keyboard command.
  void write_data(std::uint8_t value);
  /// @brief A write to port 0x64: a controller command.
  void write_command(std::uint8_t value);

  /// @brief How many times the guest pulled the reset line.
  [[nodiscard]] std::uint64_t resets() const;
  /// @brief The controller configuration byte.
  [[nodiscard]] std::uint8_t config_byte() const;

 private:
  class Port;
  void queue_locked(std::uint8_t byte, bool from_keyboard);
  void reset_cpu();

  IrqLine& irq_;
  std::function<void()> on_reset_;
  std::shared_ptr<BusDevice> data_;
  std::shared_ptr<BusDevice> command_;

  mutable std::mutex mutex_;
  std::deque<std::uint8_t> output_;
  std::uint8_t last_output_ = 0;
  std::uint8_t ctr_ = i8042::kCtrKeyboardIrq | i8042::kCtrSystem | i8042::kCtrTranslate;
  std::uint8_t status_ = i8042::kStatusSystem | i8042::kStatusUnlocked;
  std::optional<std::uint8_t> pending_command_;  // a command waiting for its data byte
  std::uint64_t resets_ = 0;
};

}  // namespace vmm::devices
