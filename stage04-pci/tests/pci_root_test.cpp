// PciRoot: host bridge, configuration mechanism #1 and ECAM, absent devices, and BARs moving on real IoBus/MmioBus.
#include <gtest/gtest.h>

#include <linux/pci_regs.h>

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "vmm/devices/bus.hpp"
#include "vmm/pci/pci_root.hpp"

namespace vmm::pci {
namespace {

// A device with a given set of BARs that records every BAR access and config write. Reads return 0xB0 | bar index in
// every byte, so a test sees which BAR the bus reached.
class FakeDevice final : public PciDevice {
 public:
  struct Access {
    std::size_t bar;
    std::uint64_t offset;
    std::size_t size;
    bool write;
    bool operator==(const Access&) const = default;
  };

  explicit FakeDevice(const std::vector<Bar>& bars, std::size_t config_size = ConfigSpace::kConventionalSize)
      : config_(config_size) {
    config_.set_header(0x1af4, 0x10f0, 0xff, 0x00, 0x00, 0x02, PCI_HEADER_TYPE_NORMAL);
    for (const auto& bar : bars) {
      EXPECT_TRUE(config_.add_bar(bar));
    }
  }
  ConfigSpace& config() override { return config_; }
  void bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) override {
    std::lock_guard lock(mutex_);
    accesses.push_back({bar_index, offset, data.size(), false});
    std::ranges::fill(data, static_cast<std::uint8_t>(0xb0 | bar_index));
  }
  void bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) override {
    std::lock_guard lock(mutex_);
    accesses.push_back({bar_index, offset, data.size(), true});
  }
  void config_written(std::uint16_t offset, std::size_t size) override {
    std::lock_guard lock(mutex_);
    config_writes.emplace_back(offset, size);
  }
  [[nodiscard]] std::string name() const override { return "fake"; }

  std::mutex mutex_;
  std::vector<Access> accesses;
  std::vector<std::pair<std::uint16_t, std::size_t>> config_writes;

 private:
  ConfigSpace config_;
};

constexpr std::uint64_t kEcamBase = EcamWindow::kDefaultBase;

// The machine a guest enumerator would see: both buses, the root, CF8/CFC on the I/O bus and ECAM on the MMIO bus.
// Buses first: they must outlive the root.
struct Machine {
  devices::IoBus io;
  devices::MmioBus mmio;
  PciRoot root{io, mmio};

  Machine() {
    EXPECT_TRUE(io.insert(std::make_shared<ConfigMechanism1>(root), ConfigMechanism1::kBase, ConfigMechanism1::kSize,
                          "pci-cf8"));
    EXPECT_TRUE(mmio.insert(std::make_shared<EcamWindow>(root), kEcamBase, EcamWindow::kSize, "pci-ecam"));
  }

  // Guest port I/O, as the vCPU loop would dispatch it.
  void out(std::uint16_t port, std::uint32_t value, std::size_t size) {
    std::array<std::uint8_t, 4> b{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8),
                                  static_cast<std::uint8_t>(value >> 16), static_cast<std::uint8_t>(value >> 24)};
    io.write(port, std::span(b).first(size));
  }
  std::uint32_t in(std::uint16_t port, std::size_t size) {
    std::array<std::uint8_t, 4> b{};
    io.read(port, std::span(b).first(size));
    return static_cast<std::uint32_t>(b[0] | b[1] << 8 | b[2] << 16) | static_cast<std::uint32_t>(b[3]) << 24;
  }
  static std::uint32_t address(std::uint8_t bus, std::uint8_t dev, std::uint8_t fn, std::uint16_t reg) {
    return ConfigMechanism1::kEnable | static_cast<std::uint32_t>(bus) << 16 | static_cast<std::uint32_t>(dev) << 11 |
           static_cast<std::uint32_t>(fn) << 8 | (reg & 0xfcU);
  }
  // Config accesses through mechanism #1, of any width, at the data port the offset's low bits select.
  std::uint32_t cfg_read(std::uint8_t dev, std::uint16_t reg, std::size_t size = 4, std::uint8_t fn = 0,
                         std::uint8_t bus = 0) {
    out(0xcf8, address(bus, dev, fn, reg), 4);
    return in(static_cast<std::uint16_t>(0xcfc + (reg & 3)), size);
  }
  void cfg_write(std::uint8_t dev, std::uint16_t reg, std::uint32_t value, std::size_t size = 4) {
    out(0xcf8, address(0, dev, 0, reg), 4);
    out(static_cast<std::uint16_t>(0xcfc + (reg & 3)), value, size);
  }
  // Config accesses through ECAM.
  std::uint32_t ecam_read(std::uint8_t dev, std::uint8_t fn, std::uint16_t reg, std::size_t size = 4) {
    std::array<std::uint8_t, 4> b{};
    mmio.read(kEcamBase + (static_cast<std::uint64_t>(dev) << 15 | static_cast<std::uint64_t>(fn) << 12 | reg),
              std::span(b).first(size));
    return static_cast<std::uint32_t>(b[0] | b[1] << 8 | b[2] << 16) | static_cast<std::uint32_t>(b[3]) << 24;
  }
  void ecam_write(std::uint8_t dev, std::uint16_t reg, std::uint32_t value) {
    std::array<std::uint8_t, 4> b{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8),
                                  static_cast<std::uint8_t>(value >> 16), static_cast<std::uint8_t>(value >> 24)};
    mmio.write(kEcamBase + (static_cast<std::uint64_t>(dev) << 15 | reg), b);
  }
  std::shared_ptr<FakeDevice> plug(std::uint8_t slot, const std::vector<Bar>& bars,
                                   std::size_t config_size = ConfigSpace::kConventionalSize) {
    auto device = std::make_shared<FakeDevice>(bars, config_size);
    EXPECT_TRUE(root.add_device(device, slot));
    return device;
  }
  std::uint8_t mmio_byte(std::uint64_t address) {
    std::uint8_t b = 0;
    mmio.read(address, std::span(&b, 1));
    return b;
  }
};

constexpr Bar kMem32{.index = 0, .kind = BarKind::Memory32, .size = 0x1000};
constexpr Bar kIo{.index = 1, .kind = BarKind::Io, .size = 0x20};
constexpr Bar kMem64{.index = 2, .kind = BarKind::Memory64, .prefetchable = true, .size = 0x4000};

TEST(PciRoot, HostBridgeAnswersAt00_00_0) {
  Machine m;
  EXPECT_EQ(m.cfg_read(0, PCI_VENDOR_ID),
            static_cast<std::uint32_t>(HostBridge::kDeviceId) << 16 | HostBridge::kVendorId);
  EXPECT_EQ(m.cfg_read(0, PCI_CLASS_REVISION) >> 8, 0x06'00'00u) << "class 06 (bridge), subclass 00 (host)";
  EXPECT_EQ(m.cfg_read(0, PCI_HEADER_TYPE, 1), PCI_HEADER_TYPE_NORMAL) << "single-function: no probing of 1..7";
  EXPECT_EQ(m.root.device(0)->name(), "host-bridge");
}

TEST(PciRoot, AddDeviceRefusesBadSlots) {
  Machine m;
  auto device = std::make_shared<FakeDevice>(std::vector<Bar>{});
  EXPECT_FALSE(m.root.add_device(device, 0)) << "the host bridge's";
  EXPECT_FALSE(m.root.add_device(device, 32));
  EXPECT_FALSE(m.root.add_device(nullptr, 3));
  ASSERT_TRUE(m.root.add_device(device, 3));
  auto taken = m.root.add_device(std::make_shared<FakeDevice>(std::vector<Bar>{}), 3);
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().message(), "pci: add device 00:03.0: the slot holds fake");
  EXPECT_EQ(m.root.device(3), device);
}

TEST(ConfigMechanism1, ByteWordAndDwordAccessesAtEveryDataPort) {
  Machine m;
  auto device = m.plug(3, {});
  EXPECT_EQ(m.cfg_read(3, PCI_VENDOR_ID), 0x10f0'1af4u);
  EXPECT_EQ(m.cfg_read(3, 0, 1), 0xf4u) << "0xCFC";
  EXPECT_EQ(m.cfg_read(3, 1, 1), 0x1au) << "0xCFD";
  EXPECT_EQ(m.cfg_read(3, 2, 1), 0xf0u) << "0xCFE";
  EXPECT_EQ(m.cfg_read(3, 3, 1), 0x10u) << "0xCFF";
  EXPECT_EQ(m.cfg_read(3, 0, 2), 0x1af4u) << "word at 0xCFC";
  EXPECT_EQ(m.cfg_read(3, 2, 2), 0x10f0u) << "word at 0xCFE";
  EXPECT_EQ(m.cfg_read(3, PCI_HEADER_TYPE, 1), PCI_HEADER_TYPE_NORMAL);

  m.cfg_write(3, PCI_COMMAND + 1, PCI_COMMAND_SERR >> 8, 1);  // byte at 0xCFD: the command register's high byte
  EXPECT_EQ(device->config().read16(PCI_COMMAND), PCI_COMMAND_SERR);
  m.cfg_write(3, PCI_LATENCY_TIMER, 0x40, 1);       // byte at 0xCFD of dword 0x0c
  m.cfg_write(3, PCI_INTERRUPT_LINE + 3, 0x99, 1);  // 0xCFF: max latency, read-only
  EXPECT_EQ(device->config().read8(PCI_LATENCY_TIMER), 0x40);
  EXPECT_EQ(device->config().read8(PCI_INTERRUPT_LINE + 3), 0);
  device->config().set16(PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_SIG_TARGET_ABORT);
  m.cfg_write(3, PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT, 2);  // word at 0xCFE, write-1-to-clear
  EXPECT_EQ(m.cfg_read(3, PCI_STATUS, 2), PCI_STATUS_SIG_TARGET_ABORT);
  EXPECT_EQ(device->config_writes,
            (std::vector<std::pair<std::uint16_t, std::size_t>>{
                {PCI_COMMAND + 1, 1}, {PCI_LATENCY_TIMER, 1}, {PCI_INTERRUPT_LINE + 3, 1}, {PCI_STATUS, 2}}))
      << "the device hears of every write, with the register and width the guest used";
}

TEST(ConfigMechanism1, AddressRegisterIsADwordWithReservedBitsZero) {
  Machine m;
  m.out(0xcf8, 0xffff'ffff, 4);
  EXPECT_EQ(m.in(0xcf8, 4), 0x80ff'fffcu);
  m.out(0xcf8, 0x8000'0000, 4);
  m.out(0xcf9, 0x06, 1);  // the PC's reset control register: not the address register
  m.out(0xcf8, 0xffff, 2);
  EXPECT_EQ(m.in(0xcf8, 4), 0x8000'0000u) << "byte and word accesses do not touch the address";
  EXPECT_EQ(m.in(0xcf9, 1), 0xffu);
  EXPECT_EQ(m.in(0xcfa, 2), 0xffffu);
}

TEST(ConfigMechanism1, DisabledOrStraddlingDataAccessesAreAllOnes) {
  Machine m;
  auto device = m.plug(3, {});
  m.out(0xcf8, Machine::address(0, 3, 0, PCI_VENDOR_ID) & ~ConfigMechanism1::kEnable, 4);
  EXPECT_EQ(m.in(0xcfc, 4), 0xffff'ffffu) << "enable bit clear";
  m.out(0xcf8, Machine::address(0, 3, 0, PCI_INTERRUPT_LINE) & ~ConfigMechanism1::kEnable, 4);
  m.out(0xcfc, 0x5, 1);
  EXPECT_EQ(device->config().read8(PCI_INTERRUPT_LINE), 0) << "write dropped";
  m.out(0xcf8, Machine::address(0, 3, 0, PCI_VENDOR_ID), 4);
  EXPECT_EQ(m.in(0xcfd, 4), 0xffff'ffffu) << "a dword at 0xCFD runs past 0xCFF: nobody claims it";
  EXPECT_EQ(m.in(0xcfc, 4), 0x10f0'1af4u) << "and the latched address still works";
}

TEST(PciRoot, AbsentFunctionsReadAllOnesAndIgnoreWrites) {
  Machine m;
  m.plug(3, {});
  EXPECT_EQ(m.cfg_read(5, PCI_VENDOR_ID), 0xffff'ffffu) << "empty slot";
  EXPECT_EQ(m.cfg_read(3, PCI_VENDOR_ID, 4, 1), 0xffff'ffffu) << "function 1";
  EXPECT_EQ(m.cfg_read(0, PCI_VENDOR_ID, 4, 0, 1), 0xffff'ffffu) << "bus 1";
  EXPECT_EQ(m.cfg_read(31, PCI_VENDOR_ID, 2), 0xffffu);
  m.cfg_write(5, PCI_COMMAND, 0xffff);
  EXPECT_EQ(m.ecam_read(5, 0, PCI_VENDOR_ID), 0xffff'ffffu);
  EXPECT_EQ(m.ecam_read(3, 7, PCI_VENDOR_ID), 0xffff'ffffu);
  EXPECT_EQ(m.io.unclaimed().reads, 0u) << "all-ones came from the root, not from an unclaimed bus";
}

TEST(EcamWindow, ReachesEveryDeviceAndTheExtendedSpace) {
  Machine m;
  auto conventional = m.plug(3, {});
  auto express = m.plug(4, {}, ConfigSpace::kExpressSize);
  express->config().set_writable32(0x100, 0xffff'ffff);
  EXPECT_EQ(m.ecam_read(0, 0, PCI_VENDOR_ID),
            static_cast<std::uint32_t>(HostBridge::kDeviceId) << 16 | HostBridge::kVendorId);
  EXPECT_EQ(m.ecam_read(3, 0, PCI_VENDOR_ID), 0x10f0'1af4u);
  EXPECT_EQ(m.ecam_read(3, 0, PCI_VENDOR_ID + 2, 2), 0x10f0u);
  EXPECT_EQ(m.ecam_read(3, 0, PCI_HEADER_TYPE, 1), PCI_HEADER_TYPE_NORMAL);
  m.ecam_write(4, 0x100, 0x1234'5678);
  EXPECT_EQ(m.ecam_read(4, 0, 0x100), 0x1234'5678u) << "extended space: ECAM only";
  EXPECT_EQ(express->config().read32(0x100), 0x1234'5678u);
  EXPECT_EQ(m.ecam_read(3, 0, 0x100), 0xffff'ffffu) << "a conventional device has no extended space";
  EXPECT_EQ(m.ecam_read(4, 0, 0xffe, 4), 0xffff'0000u) << "past the 4 KiB of the function: all-ones";
  m.ecam_write(3, PCI_COMMAND, PCI_COMMAND_MASTER);
  EXPECT_EQ(conventional->config().read16(PCI_COMMAND), PCI_COMMAND_MASTER);
  EXPECT_EQ(m.cfg_read(3, PCI_COMMAND, 2), PCI_COMMAND_MASTER) << "both paths reach the same registers";
}

TEST(PciRoot, MalformedConfigWritesNeverCrashOrLeak) {
  Machine m;
  auto device = m.plug(3, {kMem32});
  const std::array<std::uint8_t, 8> ones{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  m.root.config_write(0, 3, 0, 0xfff, ones);                                       // past 256
  m.root.config_write(0, 3, 0, 0xffff, ones);                                      // past 4096
  m.root.config_write(0, 3, 0, PCI_HEADER_TYPE, std::span(ones).first(3));         // odd size, unaligned
  m.root.config_write(0, 3, 0, PCI_VENDOR_ID, std::span(ones).first(0));           // empty
  m.root.config_write(0, 3, 0, PCI_BASE_ADDRESS_0 - 2, std::span(ones).first(5));  // unaligned into BAR0
  m.root.config_write(9, 3, 0, PCI_COMMAND, ones);                                 // bus 9
  m.root.config_write(0, 200, 0, PCI_COMMAND, ones);                               // device out of range
  m.root.config_write(0, 3, 9, PCI_COMMAND, ones);                                 // function out of range
  EXPECT_EQ(device->config().read32(PCI_VENDOR_ID), 0x10f0'1af4u);
  EXPECT_EQ(device->config().read8(PCI_HEADER_TYPE), PCI_HEADER_TYPE_NORMAL);
  EXPECT_EQ(device->config().read8(PCI_BIST), 0) << "not writable";
  EXPECT_EQ(device->config().read32(PCI_BASE_ADDRESS_0), 0x00ff'f000u) << "only the three BAR bytes the write covered";
  EXPECT_EQ(device->config().read16(PCI_COMMAND), 0);
  std::array<std::uint8_t, 8> out{};
  m.root.config_read(0, 3, 0, 0xfffe, out);
  EXPECT_EQ(out, ones);
  m.ecam_write(3, 0xffe, 0xffff'ffff);  // crosses into device 3 function 1 at 0x1000
  EXPECT_TRUE(m.root.mappings().empty());
}

// ---- BAR placement -----------------------------------------------------------------------------------------------

TEST(BarMapping, MemoryBarIsPlacedOnlyWhileMemoryDecodingIsOn) {
  Machine m;
  auto device = m.plug(3, {kMem32, kIo});
  m.cfg_write(3, PCI_BASE_ADDRESS_0, 0xc000'0000);
  EXPECT_FALSE(m.mmio.find(0xc000'0000)) << "programmed, but decoding is off";
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_IO, 2);
  EXPECT_FALSE(m.mmio.find(0xc000'0000)) << "I/O decoding does not enable memory BARs";
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  auto entry = m.mmio.find(0xc000'0fff);
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->range.base, 0xc000'0000u);
  EXPECT_EQ(entry->range.size, 0x1000u);
  EXPECT_EQ(entry->name, "fake 00:03.0 BAR0");
  EXPECT_EQ(m.mmio_byte(0xc000'0010), 0xb0);
  const std::array<std::uint8_t, 4> word{1, 2, 3, 4};
  m.mmio.write(0xc000'0ffc, word);
  EXPECT_EQ(device->accesses, (std::vector<FakeDevice::Access>{{0, 0x10, 1, false}, {0, 0xffc, 4, true}}))
      << "the device sees offsets into its BAR, not guest addresses";
  EXPECT_EQ(m.root.mappings(),
            (std::vector<BarMapping>{
                {.device_number = 3, .bar_index = 0, .space = BarSpace::Memory, .base = 0xc000'0000, .size = 0x1000}}));
  EXPECT_TRUE(m.io.entries().size() == 1) << "the I/O BAR is at 0 (unassigned): only CF8 is on the I/O bus";
  m.cfg_write(3, PCI_COMMAND, 0, 2);
  EXPECT_FALSE(m.mmio.find(0xc000'0000)) << "decoding off: removed";
  EXPECT_EQ(m.mmio_byte(0xc000'0010), 0xff);
}

TEST(BarMapping, IoBarIsPlacedOnTheIoBusWhileIoDecodingIsOn) {
  Machine m;
  auto device = m.plug(3, {kMem32, kIo});
  m.cfg_write(3, PCI_BASE_ADDRESS_1, 0xc040);
  EXPECT_EQ(m.cfg_read(3, PCI_BASE_ADDRESS_1), 0xc041u) << "the I/O type bit stays";
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  EXPECT_FALSE(m.io.find(0xc040));
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_IO, 2);
  ASSERT_TRUE(m.io.find(0xc05f));
  EXPECT_FALSE(m.io.find(0xc060));
  EXPECT_EQ(m.in(0xc044, 2), 0xb1b1u);
  EXPECT_EQ(device->accesses.back(), (FakeDevice::Access{1, 4, 2, false}));
  m.cfg_write(3, PCI_COMMAND, 0, 2);
  EXPECT_FALSE(m.io.find(0xc040));
}

TEST(BarMapping, ReprogrammingABarMovesTheDevice) {
  Machine m;
  auto device = m.plug(3, {kMem32});
  m.cfg_write(3, PCI_BASE_ADDRESS_0, 0xc000'0000);
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  ASSERT_TRUE(m.mmio.find(0xc000'0000));
  m.cfg_write(3, PCI_BASE_ADDRESS_0, 0xc010'0000);  // with decoding on, as a careless guest would
  EXPECT_FALSE(m.mmio.find(0xc000'0000)) << "the old range is gone";
  EXPECT_EQ(m.mmio_byte(0xc000'0000), 0xff);
  EXPECT_EQ(m.mmio_byte(0xc010'0000), 0xb0);
  EXPECT_EQ(m.root.mappings().at(0).base, 0xc010'0000u);
  // A byte write to the BAR's second byte moves it too (the register is assembled from what is written).
  m.cfg_write(3, PCI_BASE_ADDRESS_0 + 2, 0x20, 1);
  EXPECT_EQ(m.root.mappings().at(0).base, 0xc020'0000u);
  EXPECT_EQ(m.mmio.entries().size(), 2u) << "ECAM and the one BAR: nothing left behind";
}

TEST(BarMapping, SizingUnmapsAndRestoringMapsAgain) {
  Machine m;
  auto device = m.plug(3, {kMem32});
  m.cfg_write(3, PCI_BASE_ADDRESS_0, 0xc000'0000);
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  m.cfg_write(3, PCI_BASE_ADDRESS_0, 0xffff'ffff);
  EXPECT_EQ(m.cfg_read(3, PCI_BASE_ADDRESS_0), 0xffff'f000u);
  EXPECT_TRUE(m.root.mappings().empty()) << "all-ones is a size query, not an address";
  EXPECT_FALSE(m.mmio.find(0xffff'f000));
  EXPECT_TRUE(m.root.mapping_errors().empty());
  m.cfg_write(3, PCI_BASE_ADDRESS_0, 0xc000'0000);
  EXPECT_TRUE(m.mmio.find(0xc000'0000));
}

TEST(BarMapping, OverlapsAreRefusedRecordedAndRetriedOnlyWhenTheBarChanges) {
  Machine m;
  auto a = m.plug(3, {kMem32});
  auto b = m.plug(4, {{.index = 0, .kind = BarKind::Memory32, .size = 0x2000}});
  m.cfg_write(3, PCI_BASE_ADDRESS_0, 0xc000'1000);
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  m.cfg_write(4, PCI_BASE_ADDRESS_0, 0xc000'0000);  // [0xc0000000, 0xc0002000) covers a's BAR
  m.cfg_write(4, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  EXPECT_EQ(m.root.mappings().size(), 1u);
  EXPECT_EQ(m.mmio_byte(0xc000'1000), 0xb0) << "the first device keeps its range";
  EXPECT_EQ(m.mmio_byte(0xc000'0000), 0xff) << "the refused BAR does not answer";
  auto errors = m.root.mapping_errors();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].message(),
            "mmio bus: insert fake 00:04.0 BAR0: [0xc0000000, 0xc0002000) overlaps fake 00:03.0 BAR0 at "
            "[0xc0001000, 0xc0002000); pci: fake 00:04.0 BAR0 stays unmapped");
  m.cfg_write(4, PCI_INTERRUPT_LINE, 5, 1);
  EXPECT_EQ(m.root.mapping_errors().size(), 1u) << "an unrelated write does not retry (and report) the same placement";
  m.cfg_write(4, PCI_BASE_ADDRESS_0, 0xc000'4000);
  EXPECT_EQ(m.mmio.find(0xc000'4000)->name, "fake 00:04.0 BAR0") << "moved somewhere free: placed";
  EXPECT_EQ(m.root.mappings().size(), 2u);
}

// Something the VMM placed on a bus itself (a UART, a ROM window).
class Occupant final : public devices::BusDevice {
 public:
  void read(std::uint64_t /*offset*/, std::span<std::uint8_t> data) override {
    std::ranges::fill(data, std::uint8_t{0x5a});
  }
  void write(std::uint64_t /*offset*/, std::span<const std::uint8_t> /*data*/) override {}
};

TEST(BarMapping, ABarOverTheVmmsOwnDevicesIsRefused) {
  Machine m;
  ASSERT_TRUE(m.io.insert(std::make_shared<Occupant>(), 0x3f8, 8, "serial0"));
  m.plug(3, {kIo});
  m.cfg_write(3, PCI_BASE_ADDRESS_1, 0x3e0);  // [0x3e0, 0x400) covers the UART
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_IO, 2);
  EXPECT_EQ(m.in(0x3f8, 1), 0x5au) << "the UART keeps its ports";
  EXPECT_TRUE(m.root.mappings().empty());
  ASSERT_EQ(m.root.mapping_errors().size(), 1u);
  EXPECT_NE(m.root.mapping_errors()[0].message().find("overlaps serial0"), std::string::npos);
  // Turning decoding off and on again is a fresh attempt (the guest may have moved the UART's neighbour meanwhile).
  m.cfg_write(3, PCI_COMMAND, 0, 2);
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_IO, 2);
  EXPECT_EQ(m.root.mapping_errors().size(), 2u);
}

TEST(BarMapping, IoBarBeyondThePortSpaceStaysUnmapped) {
  Machine m;
  m.plug(3, {kIo});
  m.cfg_write(3, PCI_BASE_ADDRESS_1, 0x1'0000);
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_IO, 2);
  EXPECT_TRUE(m.root.mappings().empty());
  ASSERT_EQ(m.root.mapping_errors().size(), 1u);
  EXPECT_EQ(m.root.mapping_errors()[0].message(),
            "pci: map fake 00:03.0 BAR1: [0x10000, +0x20) is outside the I/O space");
  m.cfg_write(3, PCI_BASE_ADDRESS_1, 0xffe0);  // the last 32 ports: fits exactly
  EXPECT_TRUE(m.io.find(0xffff));
}

TEST(BarMapping, SixtyFourBitBarMovesOnlyWhenBothHalvesAreWritten) {
  Machine m;
  auto device = m.plug(3, {kMem64});
  const std::uint16_t low = PCI_BASE_ADDRESS_2;
  const std::uint16_t high = PCI_BASE_ADDRESS_3;
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  // Sizing both halves, as Linux does: nothing may appear at 0xffffffff_ffffc000.
  m.cfg_write(3, low, 0xffff'ffff);
  EXPECT_EQ(m.cfg_read(3, low), 0xffff'c00cu) << "64-bit, prefetchable";
  m.cfg_write(3, high, 0xffff'ffff);
  EXPECT_EQ(m.cfg_read(3, high), 0xffff'ffffu);
  EXPECT_TRUE(m.root.mappings().empty());
  // Placing it above 4 GiB: low first. Half-written, it must not appear at 0xffffffff_00010000.
  m.cfg_write(3, low, 0x0001'0000);
  EXPECT_TRUE(m.root.mappings().empty());
  EXPECT_FALSE(m.mmio.find(0xffff'ffff'0001'0000));
  m.cfg_write(3, high, 0x8);
  ASSERT_EQ(m.root.mappings().size(), 1u);
  EXPECT_EQ(m.root.mappings()[0].base, 0x8'0001'0000u);
  EXPECT_EQ(m.mmio_byte(0x8'0001'3fff), 0xb2) << "BAR2's index reaches the device";
  // Moving it, high first this time: it stays where it was until the low half is written.
  m.cfg_write(3, high, 0x9);
  EXPECT_EQ(m.root.mappings()[0].base, 0x8'0001'0000u);
  EXPECT_FALSE(m.mmio.find(0x9'0001'0000));
  m.cfg_write(3, low, 0x0002'0000);
  EXPECT_EQ(m.root.mappings()[0].base, 0x9'0002'0000u);
  EXPECT_FALSE(m.mmio.find(0x8'0001'0000));
  // A guest that writes one half only is done when it writes the command register.
  m.cfg_write(3, low, 0x0003'0000);
  EXPECT_EQ(m.root.mappings()[0].base, 0x9'0002'0000u);
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  EXPECT_EQ(m.root.mappings()[0].base, 0x9'0003'0000u);
  // A 64-bit BAR may also sit below 4 GiB, high half zero.
  m.cfg_write(3, PCI_COMMAND, 0, 2);
  m.cfg_write(3, low, 0xc000'0000);
  m.cfg_write(3, high, 0);
  EXPECT_TRUE(m.root.mappings().empty());
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  EXPECT_EQ(m.root.mappings()[0].base, 0xc000'0000u);
  EXPECT_EQ(m.mmio.entries().size(), 2u) << "ECAM and the BAR: every move removed the old range";
}

TEST(BarMapping, BarsEnabledBeforePluggingArePlacedAndTheRootCleansUp) {
  devices::IoBus io;
  devices::MmioBus mmio;
  auto device = std::make_shared<FakeDevice>(std::vector<Bar>{kMem32, kIo});
  device->config().write32(PCI_BASE_ADDRESS_0, 0xc000'0000);
  device->config().write32(PCI_BASE_ADDRESS_1, 0x6000);
  device->config().write16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
  {
    PciRoot root(io, mmio);
    ASSERT_TRUE(root.add_device(device, 7));
    EXPECT_TRUE(mmio.find(0xc000'0000));
    EXPECT_TRUE(io.find(0x6000));
  }
  EXPECT_TRUE(mmio.entries().empty()) << "the root removed what it placed";
  EXPECT_TRUE(io.entries().empty());
}

TEST(PciRoot, CapabilityListIsWalkableThroughPortIo) {
  Machine m;
  auto device = m.plug(3, {});
  const std::array<std::uint8_t, 2> vendor{4, 0};
  const std::array<std::uint8_t, 10> msix{};
  ASSERT_TRUE(device->config().add_capability(PCI_CAP_ID_VNDR, vendor));
  ASSERT_TRUE(device->config().add_capability(PCI_CAP_ID_MSIX, msix));
  // What a guest enumerator does: read the 256 bytes through CF8/CFC, then walk them.
  std::array<std::uint8_t, 256> bytes{};
  for (std::uint16_t reg = 0; reg < bytes.size(); reg += 4) {
    const std::uint32_t dword = m.cfg_read(3, reg);
    for (std::size_t i = 0; i < 4; ++i) {
      bytes[reg + i] = static_cast<std::uint8_t>(dword >> (8 * i));
    }
  }
  EXPECT_EQ(walk_capabilities(bytes), (std::vector<Capability>{{.offset = 0x40, .id = PCI_CAP_ID_VNDR},
                                                               {.offset = 0x44, .id = PCI_CAP_ID_MSIX}}));
  EXPECT_EQ(walk_capabilities(bytes), device->config().capabilities());
}

// A device whose configuration space has a live window (virtio's PCI configuration access capability): the root
// hands it every read after serving it from the config space, and the device may replace the bytes.
class WindowDevice final : public PciDevice {
 public:
  WindowDevice() {
    config_.set_header(0x1af4, 0x10f0, 0xff, 0x00, 0x00, 0x02, PCI_HEADER_TYPE_NORMAL);
    config_.set32(kWindow, 0x4433'2211);  // what the window held last
  }
  ConfigSpace& config() override { return config_; }
  void bar_read(std::size_t /*bar_index*/, std::uint64_t /*offset*/, std::span<std::uint8_t> data) override {
    std::ranges::fill(data, std::uint8_t{0});
  }
  void bar_write(std::size_t /*bar_index*/, std::uint64_t /*offset*/, std::span<const std::uint8_t> /*data*/) override {
  }
  void config_read(std::uint16_t offset, std::span<std::uint8_t> data) override {
    std::lock_guard lock(mutex_);
    reads.emplace_back(offset, std::vector<std::uint8_t>(data.begin(), data.end()));
    for (std::size_t i = 0; i < data.size(); ++i) {
      if (offset + i >= kWindow && offset + i < kWindow + 4) {
        data[i] = static_cast<std::uint8_t>(0xc0 + (offset + i - kWindow));  // live bytes, not the stored ones
      }
    }
  }
  static constexpr std::uint16_t kWindow = 0x50;
  std::mutex mutex_;
  std::vector<std::pair<std::uint16_t, std::vector<std::uint8_t>>> reads;

 private:
  ConfigSpace config_;
};

TEST(PciRoot, ConfigReadHookSeesAndMayReplaceTheBytesRead) {
  Machine m;
  auto device = std::make_shared<WindowDevice>();
  ASSERT_TRUE(m.root.add_device(device, 3));
  EXPECT_EQ(m.cfg_read(3, PCI_VENDOR_ID), 0x10f0'1af4u) << "bytes outside the window pass through";
  EXPECT_EQ(m.cfg_read(3, WindowDevice::kWindow), 0xc3c2'c1c0u);
  EXPECT_EQ(m.cfg_read(3, WindowDevice::kWindow + 2, 1), 0xc2u);
  EXPECT_EQ(m.ecam_read(3, 0, WindowDevice::kWindow + 1, 2), 0xc2c1u) << "ECAM reads go through the hook too";
  EXPECT_EQ(device->reads, (std::vector<std::pair<std::uint16_t, std::vector<std::uint8_t>>>{
                               {PCI_VENDOR_ID, {0xf4, 0x1a, 0xf0, 0x10}},
                               {WindowDevice::kWindow, {0x11, 0x22, 0x33, 0x44}},
                               {WindowDevice::kWindow + 2, {0x33}},
                               {WindowDevice::kWindow + 1, {0x22, 0x33}}}))
      << "the hook gets the register and width the guest used, with the bytes the config space gave";
  EXPECT_EQ(m.cfg_read(5, WindowDevice::kWindow), 0xffff'ffffu);
  EXPECT_EQ(device->reads.size(), 4u) << "another slot's reads are not this device's";
}

TEST(BarMapping, TheObserverHearsEveryPlacementAndRemovalInOrder) {
  Machine m;
  std::vector<std::pair<BarMapping, bool>> seen;
  m.root.set_bar_observer([&](const BarMapping& mapping, bool placed) { seen.emplace_back(mapping, placed); });
  auto device = m.plug(3, {kMem32, kIo});
  m.cfg_write(3, PCI_BASE_ADDRESS_0, 0xc000'0000);
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  m.cfg_write(3, PCI_BASE_ADDRESS_0, 0xc010'0000);     // a move: removal, then placement
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);  // no change: nothing reported
  m.cfg_write(3, PCI_COMMAND, 0, 2);
  const BarMapping old_place{
      .device_number = 3, .bar_index = 0, .space = BarSpace::Memory, .base = 0xc000'0000, .size = 0x1000};
  BarMapping new_place = old_place;
  new_place.base = 0xc010'0000;
  EXPECT_EQ(seen, (std::vector<std::pair<BarMapping, bool>>{
                      {old_place, true}, {old_place, false}, {new_place, true}, {new_place, false}}));

  // A placement the bus refuses is not reported; removing the observer stops the reports.
  seen.clear();
  auto other = m.plug(4, {kMem32});
  m.cfg_write(4, PCI_BASE_ADDRESS_0, kEcamBase);  // over ECAM: refused
  m.cfg_write(4, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  EXPECT_TRUE(seen.empty());
  EXPECT_EQ(m.root.mapping_errors().size(), 1u);
  m.root.set_bar_observer(nullptr);
  m.cfg_write(3, PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  EXPECT_TRUE(seen.empty());
  EXPECT_EQ(m.root.mappings().size(), 1u);
}

}  // namespace
}  // namespace vmm::pci
