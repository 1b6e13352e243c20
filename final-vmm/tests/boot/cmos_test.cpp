// The MC146818 RTC and CMOS RAM at ports 0x70/0x71, read the way Linux's mc146818_get_time() reads it: select a
// register on the index port, read it on the data port, BCD in 24-hour mode (the datasheet's register map).
#include <gtest/gtest.h>

#include <array>
#include <chrono>

#include "vmm/devices/cmos/cmos.hpp"

namespace vmm::devices {
namespace {

using namespace std::chrono;

// 2026-11-22 13:45:56 UTC, a Sunday (day 1 of the RTC's week).
constexpr sys_days kDay{year{2026} / November / 22};
static_assert(weekday{kDay} == Sunday);
const system_clock::time_point kNow = kDay + hours{13} + minutes{45} + seconds{56};

class CmosPorts : public ::testing::Test {
 protected:
  std::uint8_t read(std::uint8_t index) {
    select(index);
    std::array<std::uint8_t, 1> byte{0};
    cmos_.read(1, byte);
    return byte[0];
  }
  void write(std::uint8_t index, std::uint8_t value) {
    select(index);
    const std::array<std::uint8_t, 1> byte{value};
    cmos_.write(1, byte);
  }
  void select(std::uint8_t index) {
    const std::array<std::uint8_t, 1> byte{index};
    cmos_.write(0, byte);
  }

  system_clock::time_point now_ = kNow;
  Cmos cmos_{[this] { return now_; }};
};

TEST_F(CmosPorts, TimeAndDateAreBcd) {
  EXPECT_EQ(read(0x00), 0x56) << "seconds";
  EXPECT_EQ(read(0x02), 0x45) << "minutes";
  EXPECT_EQ(read(0x04), 0x13) << "hours, 24-hour mode";
  EXPECT_EQ(read(0x06), 0x01) << "day of week: Sunday = 1";
  EXPECT_EQ(read(0x07), 0x22) << "day of month";
  EXPECT_EQ(read(0x08), 0x11) << "month";
  EXPECT_EQ(read(0x09), 0x26) << "year in the century";
  EXPECT_EQ(read(0x32), 0x20) << "century";
}

TEST_F(CmosPorts, TheClockIsReadAtEachAccess) {
  now_ = sys_days{year{1999} / December / 31} + hours{23} + minutes{59} + seconds{9};
  static_assert(weekday{sys_days{year{1999} / December / 31}} == Friday);
  EXPECT_EQ(read(0x00), 0x09);
  EXPECT_EQ(read(0x02), 0x59);
  EXPECT_EQ(read(0x04), 0x23);
  EXPECT_EQ(read(0x06), 0x06) << "Friday = 6";
  EXPECT_EQ(read(0x07), 0x31);
  EXPECT_EQ(read(0x08), 0x12);
  EXPECT_EQ(read(0x09), 0x99);
  EXPECT_EQ(read(0x32), 0x19);
}

TEST_F(CmosPorts, StatusRegistersSayValidBcd24HourAndNoUpdateInProgress) {
  // A: bit 7 (UIP) set would make Linux wait for the update to end; B: bit 1 24-hour, bit 2 clear BCD;
  // D: bit 7 (VRT) says the battery kept the time and RAM valid.
  EXPECT_EQ(read(0x0a) & 0x80, 0);
  EXPECT_EQ(read(0x0b) & 0x02, 0x02);
  EXPECT_EQ(read(0x0b) & 0x04, 0);
  EXPECT_EQ(read(0x0d), 0x80);
}

TEST_F(CmosPorts, NvramBytesAreRam) {
  write(0x40, 0x5a);
  write(0x7f, 0xa5);  // the last of the 128 bytes
  EXPECT_EQ(read(0x40), 0x5a);
  EXPECT_EQ(read(0x7f), 0xa5);
}

TEST_F(CmosPorts, TimeRegisterWritesAreIgnored) {
  // The guest cannot set the host's clock.
  write(0x00, 0x00);
  write(0x04, 0x01);
  write(0x09, 0x99);
  write(0x32, 0x19);
  EXPECT_EQ(read(0x00), 0x56);
  EXPECT_EQ(read(0x04), 0x13);
  EXPECT_EQ(read(0x09), 0x26);
  EXPECT_EQ(read(0x32), 0x20);
}

TEST_F(CmosPorts, ReadOnlyStatusRegistersIgnoreWrites) {
  write(0x0a, 0x80);  // an attempt at UIP
  write(0x0d, 0x00);
  EXPECT_EQ(read(0x0a) & 0x80, 0);
  EXPECT_EQ(read(0x0d), 0x80);
}

TEST_F(CmosPorts, IndexBit7IsTheNmiMaskNotPartOfTheIndex) {
  // Linux writes the index with bit 7 set or clear depending on NMI masking; 0xc0 is register 0x40.
  write(0x40, 0x33);
  EXPECT_EQ(read(0x80 | 0x40), 0x33);
  write(0x80 | 0x41, 0x44);
  EXPECT_EQ(read(0x41), 0x44);
  EXPECT_EQ(read(0x80 | 0x00), 0x56) << "seconds";
}

}  // namespace
}  // namespace vmm::devices
