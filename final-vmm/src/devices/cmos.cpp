#include "vmm/devices/cmos/cmos.hpp"

#include <ctime>
#include <utility>

namespace vmm::devices {
namespace {

std::uint8_t bcd(int value) {
  return static_cast<std::uint8_t>(((value / 10) << 4) | (value % 10));
}

}  // namespace

Cmos::Cmos(Clock clock) : clock_(std::move(clock)) {
  ram_[cmos::kStatusA] = 0x26;  // 32.768 kHz time base, 1024 Hz rate; UIP clear
  ram_[cmos::kStatusB] = 0x02;  // 24-hour, BCD, no interrupts
  ram_[cmos::kStatusD] = 0x80;  // valid RAM and time
}

std::uint8_t Cmos::read_register(std::uint8_t index) const {
  if (index > cmos::kYear && index != cmos::kCentury) {
    return ram_[index];
  }
  const std::time_t now = std::chrono::system_clock::to_time_t(clock_());
  std::tm tm{};
  gmtime_r(&now, &tm);
  switch (index) {
    case cmos::kSeconds:
      return bcd(tm.tm_sec);
    case cmos::kMinutes:
      return bcd(tm.tm_min);
    case cmos::kHours:
      return bcd(tm.tm_hour);
    case cmos::kWeekday:
      return bcd(tm.tm_wday + 1);
    case cmos::kDay:
      return bcd(tm.tm_mday);
    case cmos::kMonth:
      return bcd(tm.tm_mon + 1);
    case cmos::kYear:
      return bcd(tm.tm_year % 100);
    case cmos::kCentury:
      return bcd((tm.tm_year + 1900) / 100);
    default:
      return 0;  // the alarm registers (1, 3, 5): no alarm set
  }
}

void Cmos::read(std::uint64_t offset, std::span<std::uint8_t> data) {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = 0xff;
    if (offset + i == 0) {
      data[i] = index_;
    } else if (offset + i == 1) {
      data[i] = read_register(index_);
    }
  }
}

void Cmos::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < data.size(); ++i) {
    if (offset + i == 0) {
      index_ = data[i] & cmos::kIndexMask;
    } else if (offset + i == 1 && index_ > cmos::kYear && index_ != cmos::kCentury && index_ != cmos::kStatusA &&
               index_ != cmos::kStatusC && index_ != cmos::kStatusD) {
      ram_[index_] = data[i];  // status A, C and D are read-only; the clock ignores writes
    }
  }
}

}  // namespace vmm::devices
