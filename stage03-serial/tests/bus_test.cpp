// Bus: overlap rejection, dispatch with offsets, unclaimed accesses, concurrent dispatch.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "vmm/devices/bus.hpp"
#include "vmm/devices/report_channel.hpp"

namespace vmm::devices {
namespace {

// Records every access; reads return the offset's low byte, so the test sees which offset the bus passed.
class RecordingDevice final : public BusDevice {
 public:
  void read(std::uint64_t offset, std::span<std::uint8_t> data) override {
    std::lock_guard lock(mutex_);
    reads.push_back({offset, data.size()});
    for (auto& b : data)
      b = static_cast<std::uint8_t>(offset);
  }
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    std::lock_guard lock(mutex_);
    writes.push_back({offset, data.size()});
    last_written.assign(data.begin(), data.end());
  }
  struct Access {
    std::uint64_t offset;
    std::size_t size;
    bool operator==(const Access&) const = default;
  };
  std::mutex mutex_;
  std::vector<Access> reads, writes;
  std::vector<std::uint8_t> last_written;
};

TEST(Bus, DispatchesWithOffsetsIntoTheDevice) {
  IoBus bus;
  auto uart = std::make_shared<RecordingDevice>();
  ASSERT_TRUE(bus.insert(uart, 0x3f8, 8, "serial0"));
  std::uint8_t byte = 0;
  EXPECT_TRUE(bus.read(0x3fd, std::span(&byte, 1)));
  EXPECT_EQ(byte, 5) << "port 0x3fd is offset 5 of a device at 0x3f8";
  const std::uint8_t out[] = {'A'};
  EXPECT_TRUE(bus.write(0x3f8, out));
  ASSERT_EQ(uart->writes.size(), 1u);
  EXPECT_EQ(uart->writes[0], (RecordingDevice::Access{0, 1}));
  EXPECT_EQ(uart->last_written, std::vector<std::uint8_t>{'A'});
}

TEST(Bus, OverlapsAreRefusedNamingBothDevices) {
  MmioBus bus;
  ASSERT_TRUE(bus.insert(std::make_shared<RecordingDevice>(), 0x1000, 0x100, "a"));
  auto rc = bus.insert(std::make_shared<RecordingDevice>(), 0x10f0, 0x20, "b");
  ASSERT_FALSE(rc);
  EXPECT_EQ(rc.error().message(), "mmio bus: insert b: [0x10f0, 0x1110) overlaps a at [0x1000, 0x1100)");
  auto below = bus.insert(std::make_shared<RecordingDevice>(), 0xff0, 0x11, "c");
  ASSERT_FALSE(below);
  EXPECT_NE(below.error().message().find("overlaps a"), std::string::npos);
  EXPECT_TRUE(bus.insert(std::make_shared<RecordingDevice>(), 0x1100, 0x10, "adjacent")) << "touching is fine";
  EXPECT_TRUE(bus.insert(std::make_shared<RecordingDevice>(), 0xff0, 0x10, "adjacent below"));
  EXPECT_FALSE(bus.insert(std::make_shared<RecordingDevice>(), ~0ull - 4, 0x10, "wraps"));
  EXPECT_FALSE(bus.insert(std::make_shared<RecordingDevice>(), 0x5000, 0, "empty"));
  EXPECT_EQ(bus.entries().size(), 3u);
}

TEST(Bus, UnclaimedAccessesReadAllOnesAndAreCounted) {
  IoBus bus;
  auto dev = std::make_shared<RecordingDevice>();
  ASSERT_TRUE(bus.insert(dev, 0x60, 4, "dev"));
  std::uint8_t word[2] = {0, 0};
  EXPECT_FALSE(bus.read(0x80, word));
  EXPECT_EQ(word[0], 0xff);
  EXPECT_EQ(word[1], 0xff);
  // An access that starts inside a device but runs past its end is not the device's either.
  std::uint8_t dword[4] = {};
  EXPECT_FALSE(bus.read(0x62, dword));
  const std::uint8_t b[] = {1};
  EXPECT_FALSE(bus.write(0x64, b));
  EXPECT_EQ(bus.unclaimed().reads, 2u);
  EXPECT_EQ(bus.unclaimed().writes, 1u);
  EXPECT_TRUE(dev->reads.empty());
}

TEST(Bus, RemoveFreesTheRange) {
  IoBus bus;
  ASSERT_TRUE(bus.insert(std::make_shared<RecordingDevice>(), 0x2f8, 8, "serial1"));
  EXPECT_FALSE(bus.remove(0x2f9)) << "remove needs the exact base";
  auto removed = bus.remove(0x2f8);
  ASSERT_TRUE(removed);
  EXPECT_NE(*removed, nullptr);
  std::uint8_t byte = 0;
  EXPECT_FALSE(bus.read(0x2f8, std::span(&byte, 1)));
  EXPECT_TRUE(bus.insert(std::make_shared<RecordingDevice>(), 0x2f8, 8, "again"));
}

TEST(Bus, FindReturnsTheEntry) {
  IoBus bus;
  ASSERT_TRUE(bus.insert(std::make_shared<RecordingDevice>(), 0x3f8, 8, "serial0"));
  auto entry = bus.find(0x3ff);
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->name, "serial0");
  EXPECT_EQ(entry->range.base, 0x3f8u);
  EXPECT_FALSE(bus.find(0x400));
}

TEST(Bus, ConcurrentDispatchAndInsertion) {
  IoBus bus;
  auto dev = std::make_shared<RecordingDevice>();
  ASSERT_TRUE(bus.insert(dev, 0x100, 16, "dev"));
  std::atomic<bool> go{true};
  std::thread vcpu([&] {
    std::uint8_t b = 0;
    for (int i = 0; i < 20000; ++i)
      bus.read(0x100 + (i % 16), std::span(&b, 1));
    go = false;
  });
  int inserted = 0;
  while (go) {  // the "main thread" moves another device around meanwhile
    if (bus.insert(std::make_shared<RecordingDevice>(), 0x200, 8, "moving")) {
      ++inserted;
      ASSERT_TRUE(bus.remove(0x200));
    }
  }
  vcpu.join();
  EXPECT_EQ(dev->reads.size(), 20000u);
  EXPECT_GT(inserted, 0);
}

TEST(ReportChannel, ValuesAndExitStatus) {
  std::uint32_t seen = 0;
  ReportChannel channel([&](std::uint32_t status) { seen = status + 1; });
  IoBus bus;
  auto shared = std::shared_ptr<ReportChannel>(&channel, [](ReportChannel*) {});
  ASSERT_TRUE(bus.insert(shared, ReportChannel::kBase, ReportChannel::kSize, "report"));
  const std::uint8_t seven[] = {7, 0, 0, 0};
  const std::uint8_t zero[] = {0, 0, 0, 0};
  bus.write(0xf0, seven);
  bus.write(0xf0, std::span(seven).first(1));  // a byte write is not a report
  EXPECT_FALSE(channel.exit_status());
  bus.write(0xf4, zero);
  EXPECT_EQ(channel.values(), std::vector<std::uint32_t>{7});
  EXPECT_EQ(channel.exit_status(), 0u);
  EXPECT_EQ(seen, 1u);
}

}  // namespace
}  // namespace vmm::devices
