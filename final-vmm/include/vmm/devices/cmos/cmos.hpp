#pragma once
/// @file
/// @brief `Cmos`: the PC's MC146818 real-time clock and its battery-backed RAM at ports 0x70-0x71.

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>

#include "vmm/devices/bus_device.hpp"

namespace vmm::devices {

/// @brief MC146818 register indexes (the datasheet's names; Linux's include/linux/mc146818rtc.h).
namespace cmos {
inline constexpr std::uint64_t kBase = 0x70;      ///< Index port; the data port is kBase + 1.
inline constexpr std::uint64_t kSize = 2;         ///< Two ports.
inline constexpr std::uint8_t kSeconds = 0x00;    ///< Time and date registers, BCD.
inline constexpr std::uint8_t kMinutes = 0x02;    ///< Minutes.
inline constexpr std::uint8_t kHours = 0x04;      ///< Hours (24-hour mode).
inline constexpr std::uint8_t kWeekday = 0x06;    ///< 1 = Sunday.
inline constexpr std::uint8_t kDay = 0x07;        ///< Day of the month.
inline constexpr std::uint8_t kMonth = 0x08;      ///< Month.
inline constexpr std::uint8_t kYear = 0x09;       ///< Year within the century.
inline constexpr std::uint8_t kStatusA = 0x0a;    ///< Bit 7 UIP: an update is in progress (never, here).
inline constexpr std::uint8_t kStatusB = 0x0b;    ///< Bit 1: 24-hour mode; bit 2 clear: BCD.
inline constexpr std::uint8_t kStatusC = 0x0c;    ///< Interrupt flags (none: no alarm or periodic interrupt).
inline constexpr std::uint8_t kStatusD = 0x0d;    ///< Bit 7 VRT: the battery is fine, time and RAM are valid.
inline constexpr std::uint8_t kCentury = 0x32;    ///< Century (the ACPI FADT's usual CENTURY index).
inline constexpr std::uint8_t kIndexMask = 0x7f;  ///< Bit 7 of the index port is the NMI mask, not the index.
}  // namespace cmos

/// @brief A read-only clock (the host's UTC time, read at each access) and 128 bytes of CMOS RAM.
///
/// Without it, Linux's rtc_cmos driver reads all-ones from the floating bus, takes "update in progress" for an
/// answer and waits for it to end: several seconds of boot, then "rtc_cmos: broken or not accessible". The time
/// registers ignore writes (the guest cannot set the host's clock); the other bytes are plain RAM. No interrupts.
/// Thread-safe.
class Cmos final : public BusDevice {
 public:
  /// @brief Where the time comes from (tests pass a fixed clock).
  using Clock = std::function<std::chrono::system_clock::time_point()>;
  /// @brief A CMOS with the system clock.
  explicit Cmos(Clock clock = std::chrono::system_clock::now);
  /// @brief Offset 0: the index port (reads back the index); 1: the data port.
  void read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  /// @brief Offset 0 selects a register; 1 writes it.
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

 private:
  [[nodiscard]] std::uint8_t read_register(std::uint8_t index) const;

  Clock clock_;
  mutable std::mutex mutex_;
  std::uint8_t index_ = 0;
  std::array<std::uint8_t, 128> ram_{};
};

}  // namespace vmm::devices
