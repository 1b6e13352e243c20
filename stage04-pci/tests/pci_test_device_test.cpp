// PciTestDevice on a real PciRoot with real IoBus/MmioBus: what a guest enumerator and driver would do, from BAR
// sizing to an MSI-X message with the address and data it programmed.
#include <gtest/gtest.h>

#include <linux/pci_regs.h>

#include <array>
#include <cstdint>
#include <memory>

#include "fake_msi_sink.hpp"
#include "vmm/devices/bus.hpp"
#include "vmm/pci/pci_root.hpp"
#include "vmm/pci/pci_test_device.hpp"

namespace vmm::pci {
namespace {

using testing::FakeMsiSink;
using Signal = FakeMsiSink::Signal;

constexpr std::uint8_t kSlot = 3;
constexpr std::uint64_t kBar0 = 0xc000'0000;
constexpr std::uint64_t kBar2 = 0xc000'1000;
constexpr std::uint16_t kIoBase = 0xc000;

std::uint64_t le(std::span<const std::uint8_t> b) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    v |= std::uint64_t{b[i]} << (8 * i);
  }
  return v;
}

// Buses first: they must outlive the root.
struct Machine {
  FakeMsiSink sink;
  devices::IoBus io;
  devices::MmioBus mmio;
  PciRoot root{io, mmio};
  std::shared_ptr<PciTestDevice> device;

  Machine() {
    EXPECT_TRUE(io.insert(std::make_shared<ConfigMechanism1>(root), ConfigMechanism1::kBase, ConfigMechanism1::kSize,
                          "pci-cf8"));
    auto created = PciTestDevice::create(sink);
    EXPECT_TRUE(created) << created.error().message();
    device = *created;
    EXPECT_TRUE(root.add_device(device, kSlot));
  }

  void out(std::uint16_t port, std::uint32_t value, std::size_t size) {
    std::array<std::uint8_t, 4> b{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8),
                                  static_cast<std::uint8_t>(value >> 16), static_cast<std::uint8_t>(value >> 24)};
    io.write(port, std::span(b).first(size));
  }
  std::uint32_t in(std::uint16_t port, std::size_t size) {
    std::array<std::uint8_t, 4> b{};
    io.read(port, std::span(b).first(size));
    return static_cast<std::uint32_t>(le(std::span(b).first(size)));
  }
  std::uint32_t cfg_read(std::uint16_t reg, std::size_t size = 4) {
    out(0xcf8, ConfigMechanism1::kEnable | std::uint32_t{kSlot} << 11 | (reg & 0xfcU), 4);
    return in(static_cast<std::uint16_t>(0xcfc + (reg & 3)), size);
  }
  void cfg_write(std::uint16_t reg, std::uint32_t value, std::size_t size = 4) {
    out(0xcf8, ConfigMechanism1::kEnable | std::uint32_t{kSlot} << 11 | (reg & 0xfcU), 4);
    out(static_cast<std::uint16_t>(0xcfc + (reg & 3)), value, size);
  }
  std::uint64_t mmio_read(std::uint64_t address, std::size_t size = 4) {
    std::array<std::uint8_t, 8> b{};
    mmio.read(address, std::span(b).first(size));
    return le(std::span(b).first(size));
  }
  void mmio_write(std::uint64_t address, std::uint64_t value, std::size_t size = 4) {
    std::array<std::uint8_t, 8> b{};
    for (std::size_t i = 0; i < 8; ++i) {
      b[i] = static_cast<std::uint8_t>(value >> (8 * i));
    }
    mmio.write(address, std::span(b).first(size));
  }
  // The sizing protocol: write all-ones, read back, restore.
  std::uint32_t size_bar(std::uint8_t index) {
    const auto reg = static_cast<std::uint16_t>(PCI_BASE_ADDRESS_0 + 4 * index);
    const std::uint32_t old = cfg_read(reg);
    cfg_write(reg, 0xffff'ffff);
    const std::uint32_t mask = cfg_read(reg);
    cfg_write(reg, old);
    return mask;
  }
  // What firmware does: place BAR0, BAR1, BAR2 and turn on decoding.
  void program() {
    cfg_write(PCI_BASE_ADDRESS_0, static_cast<std::uint32_t>(kBar0));
    cfg_write(PCI_BASE_ADDRESS_1, kIoBase);
    cfg_write(PCI_BASE_ADDRESS_2, static_cast<std::uint32_t>(kBar2));
    cfg_write(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_IO | PCI_COMMAND_MASTER, 2);
  }
  std::uint8_t msix_cap() { return device->msix_capability(); }
};

TEST(PciTestDevice, EnumeratesWithItsIdsClassAndCapability) {
  Machine m;
  EXPECT_EQ(m.cfg_read(PCI_VENDOR_ID), std::uint32_t{PciTestDevice::kDeviceId} << 16 | PciTestDevice::kVendorId);
  EXPECT_EQ(m.cfg_read(PCI_CLASS_REVISION) >> 24, 0xffu);
  EXPECT_TRUE(m.cfg_read(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
  const auto cap = static_cast<std::uint8_t>(m.cfg_read(PCI_CAPABILITY_LIST, 1));
  EXPECT_EQ(cap, m.msix_cap());
  EXPECT_EQ(m.cfg_read(cap, 1), PCI_CAP_ID_MSIX);
  EXPECT_EQ(m.cfg_read(cap + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_QSIZE, PciTestDevice::kVectors - 1u);
  EXPECT_EQ(m.cfg_read(cap + PCI_MSIX_TABLE), 0x0000'0002u) << "table at 0 in BAR2";
  EXPECT_EQ(m.cfg_read(cap + PCI_MSIX_PBA), 0x0000'0802u) << "PBA at 0x800 in BAR2";
  EXPECT_EQ(m.device->name(), "pci-test");
}

TEST(PciTestDevice, BarSizing) {
  Machine m;
  EXPECT_EQ(m.size_bar(0), 0xffff'f000u) << "4 KiB, 32-bit memory, not prefetchable";
  EXPECT_EQ(m.size_bar(1), 0xffff'fff0u | PCI_BASE_ADDRESS_SPACE_IO) << "16 ports";
  EXPECT_EQ(m.size_bar(2), 0xffff'f000u);
  EXPECT_EQ(m.size_bar(3), 0u) << "no BAR3";
}

TEST(PciTestDevice, RegistersThroughTheBuses) {
  Machine m;
  m.program();
  EXPECT_EQ(m.root.mappings().size(), 3u);
  EXPECT_EQ(m.mmio_read(kBar0 + PciTestDevice::kRegId), PciTestDevice::kIdValue);
  m.mmio_write(kBar0 + PciTestDevice::kRegId, 0);
  EXPECT_EQ(m.mmio_read(kBar0 + PciTestDevice::kRegId), PciTestDevice::kIdValue) << "read-only";

  m.mmio_write(kBar0 + PciTestDevice::kRegScratch, 0x1234'5678);
  EXPECT_EQ(m.mmio_read(kBar0 + PciTestDevice::kRegScratch), 0x1234'5678u);
  EXPECT_EQ(m.in(kIoBase, 4), 0x1234'5678u) << "the I/O BAR mirrors scratch";
  EXPECT_EQ(m.in(kIoBase + 1, 1), 0x56u);
  m.out(kIoBase + 2, 0xabcd, 2);
  EXPECT_EQ(m.mmio_read(kBar0 + PciTestDevice::kRegScratch), 0xabcd'5678u);
  EXPECT_EQ(m.in(kIoBase + 4, 4), 0xffff'ffffu) << "ports past the mirror";
  EXPECT_EQ(m.in(kIoBase + 3, 2), 0xffffu) << "straddling the mirror's end";

  EXPECT_EQ(m.mmio_read(kBar0 + 1, 2), 0xffffu) << "odd-size registers accesses read all-ones";
  EXPECT_EQ(m.mmio_read(kBar0 + 0x100), 0xffff'ffffu);
  EXPECT_EQ(m.mmio_read(kBar0 + PciTestDevice::kRegFired), 0u);
}

TEST(PciTestDevice, DoorbellDeliversTheProgrammedMessage) {
  Machine m;
  m.program();
  // A driver programs vector 1 through BAR2, unmasks it, then enables MSI-X in Message Control.
  const std::uint64_t entry1 = kBar2 + PciTestDevice::kTableOffset + 1 * PCI_MSIX_ENTRY_SIZE;
  EXPECT_EQ(m.mmio_read(entry1 + PCI_MSIX_ENTRY_VECTOR_CTRL), PCI_MSIX_ENTRY_CTRL_MASKBIT);
  m.mmio_write(entry1 + PCI_MSIX_ENTRY_LOWER_ADDR, 0xfee0'0000);
  m.mmio_write(entry1 + PCI_MSIX_ENTRY_UPPER_ADDR, 0);
  m.mmio_write(entry1 + PCI_MSIX_ENTRY_DATA, 0x41);
  m.mmio_write(entry1 + PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
  EXPECT_EQ(m.mmio_read(entry1, 8), 0xfee0'0000u);

  m.mmio_write(kBar0 + PciTestDevice::kRegDoorbell, 1);
  EXPECT_TRUE(m.sink.signals().empty()) << "MSI-X not enabled yet";

  m.cfg_write(m.msix_cap() + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
  EXPECT_TRUE(m.device->msix().enabled());
  m.mmio_write(kBar0 + PciTestDevice::kRegDoorbell, 1);
  EXPECT_EQ(m.sink.signals(), (std::vector<Signal>{{{0xfee0'0000, 0x41}, 1}}));
  EXPECT_EQ(m.mmio_read(kBar0 + PciTestDevice::kRegFired), 1u);

  m.mmio_write(kBar0 + PciTestDevice::kRegDoorbell, 7);  // no vector 7
  m.mmio_write(kBar0 + PciTestDevice::kRegDoorbell, 0x10001);
  EXPECT_EQ(m.sink.signals().size(), 1u);
}

TEST(PciTestDevice, FunctionMaskThroughConfigSpaceHoldsAndReleases) {
  Machine m;
  m.program();
  const std::uint64_t entry0 = kBar2 + PciTestDevice::kTableOffset;
  m.mmio_write(entry0 + PCI_MSIX_ENTRY_LOWER_ADDR, 0xfee0'1000, 8);
  m.mmio_write(entry0 + PCI_MSIX_ENTRY_DATA, 0x50, 8);  // data 0x50, vector control 0: unmasked
  m.cfg_write(m.msix_cap() + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL, 2);

  m.mmio_write(kBar0 + PciTestDevice::kRegDoorbell, 0);
  EXPECT_TRUE(m.sink.signals().empty());
  EXPECT_EQ(m.mmio_read(kBar2 + PciTestDevice::kPbaOffset, 8), 1u) << "pending, as the guest sees the PBA";
  m.mmio_write(kBar2 + PciTestDevice::kPbaOffset, 0, 8);
  EXPECT_EQ(m.mmio_read(kBar2 + PciTestDevice::kPbaOffset, 8), 1u) << "the PBA is read-only";

  // A dword write over ID/next/Message Control, as some drivers do.
  const std::uint32_t dword = m.cfg_read(m.msix_cap());
  m.cfg_write(m.msix_cap(), dword & ~(std::uint32_t{PCI_MSIX_FLAGS_MASKALL} << 16));
  EXPECT_EQ(m.sink.signals(), (std::vector<Signal>{{{0xfee0'1000, 0x50}, 0}}));
  EXPECT_EQ(m.mmio_read(kBar2 + PciTestDevice::kPbaOffset, 8), 0u);
  EXPECT_EQ(m.mmio_read(kBar0 + PciTestDevice::kRegFired), 1u) << "released messages count";
}

TEST(PciTestDevice, MaskedVectorFiresWhenTheGuestUnmasksItThroughTheBar) {
  Machine m;
  m.program();
  const std::uint64_t entry3 = kBar2 + 3 * PCI_MSIX_ENTRY_SIZE;
  m.mmio_write(entry3 + PCI_MSIX_ENTRY_LOWER_ADDR, 0xfee0'0000);
  m.mmio_write(entry3 + PCI_MSIX_ENTRY_DATA, 0x63);
  m.cfg_write(m.msix_cap() + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
  m.mmio_write(kBar0 + PciTestDevice::kRegDoorbell, 3);
  EXPECT_EQ(m.mmio_read(kBar2 + PciTestDevice::kPbaOffset), 0b1000u);
  m.mmio_write(entry3 + PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
  EXPECT_EQ(m.sink.signals(), (std::vector<Signal>{{{0xfee0'0000, 0x63}, 3}}));
  EXPECT_EQ(m.mmio_read(kBar2 + PciTestDevice::kPbaOffset), 0u);
}

TEST(PciTestDevice, HostileMsixBarAccessesChangeNothing) {
  Machine m;
  m.program();
  m.mmio_write(kBar2 + 2, 0, 2);
  m.mmio_write(kBar2 + PCI_MSIX_ENTRY_VECTOR_CTRL, 0, 1);
  m.mmio_write(kBar2 + 0x400, 0, 4);  // between the table and the PBA
  m.mmio_write(kBar2 + 0xff8, 0, 8);  // past the PBA
  EXPECT_EQ(m.mmio_read(kBar2 + PCI_MSIX_ENTRY_VECTOR_CTRL), PCI_MSIX_ENTRY_CTRL_MASKBIT);
  EXPECT_EQ(m.mmio_read(kBar2 + 0x400), 0xffff'ffffu);
  EXPECT_EQ(m.mmio_read(kBar2 + 0xffc), 0xffff'ffffu);
  EXPECT_EQ(m.mmio_read(kBar2 + 1, 1), 0xffu);
  for (std::uint16_t v = 0; v < PciTestDevice::kVectors; ++v) {
    EXPECT_EQ(m.device->msix().entry(v), MsixEntry{}) << v;
  }
}

}  // namespace
}  // namespace vmm::pci
