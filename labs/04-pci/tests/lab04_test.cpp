// Lab 04's checks. Built twice: against your code in exercises/ (lab04_tests_exercises) and against the reference in
// solutions/ (lab04_tests_solutions). See labs/04-pci/README.md.
#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <guest/enumerate.hpp>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "fake_msi_sink.hpp"  // stage04-pci/tests
#include "guest_listing.hpp"  // stage04-pci/tests
#include "lab04.hpp"
#include "pci_vm.hpp"
#include "vmm/devices/bus.hpp"
#include "vmm/pci/pci_root.hpp"
#include "vmm/testing/guest_console.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::pci {
// How gtest shows a BarMapping in a failure message.
void PrintTo(const BarMapping& m, std::ostream* os) {
  *os << "{slot " << int{m.device_number} << " BAR" << int{m.bar_index} << (m.space == BarSpace::Io ? " io" : " mem")
      << " at 0x" << std::hex << m.base << " size 0x" << m.size << std::dec << "}";
}
}  // namespace vmm::pci

namespace {

using namespace std::chrono_literals;
using vmm::pci::BarMapping;
using vmm::pci::BarSpace;
using vmm::pci::PciTestDevice;

// ---- Exercise 1: a second test device, enumerated by stage04's guest ---------------------------------------------

using Console = vmm::testing::GuestConsole;

using vmm::pci::testing::guest_bars;  // stage04-pci/tests/guest_listing.hpp

constexpr std::uint8_t kSecondSlot = 5;

class Exercise1 : public ::testing::Test {
 protected:
  void SetUp() override {
    VMMLAB_REQUIRE_KVM();
    auto vm = vmm::stage04::PciVm::create(
        vmm::guest::enumerate(), [this](std::span<const std::uint8_t> b) { console_.append(b); },
        [this](std::uint32_t status) { console_.exited(status); });
    ASSERT_TRUE(vm) << vm.error().message();
    vm_ = std::move(*vm);
    // The second device's messages go to the guest too: KVM_SIGNAL_MSI, like the first one's.
    sink_ = std::make_unique<vmm::pci::KvmSignalMsi>(vm_->serial().vm().vm());
    auto second = lab04::add_second_test_device(*vm_, *sink_, kSecondSlot);
    ASSERT_TRUE(second) << second.error().message();
    ASSERT_TRUE(*second) << "add_second_test_device returned a null device";
    second_ = std::move(*second);
    ASSERT_EQ(vm_->root().device(kSecondSlot), second_) << "the device is not the one in slot 5";
    ASSERT_TRUE(vm_->start([](const vmm::Result<vmm::machine::VcpuOutcome>&) {}));
    ASSERT_TRUE(console_.wait_for_exit()) << "no exit; output so far: " << console_.output;
    vm_->stop();
  }
  void TearDown() override {
    if (vm_) {
      vm_->stop();
    }
  }

  Console console_;
  std::unique_ptr<vmm::pci::KvmSignalMsi> sink_;  // declared before vm_: outlives the machine that holds the device
  std::unique_ptr<vmm::stage04::PciVm> vm_;
  std::shared_ptr<PciTestDevice> second_;
};

TEST_F(Exercise1, TheGuestListsTwoTestDevices) {
  EXPECT_EQ(console_.exit_status, 0u) << console_.output;
  EXPECT_NE(console_.output.find("00:03.0 1af4:10f1 class ff0000\n"), std::string::npos) << console_.output;
  EXPECT_NE(console_.output.find("00:05.0 1af4:10f1 class ff0000\n"), std::string::npos) << console_.output;
  const auto reports = vm_->serial().report().values();
  ASSERT_EQ(reports.size(), 2u) << console_.output;
  EXPECT_EQ(reports[0], 3u) << "devices found: the host bridge and two test devices";
  // The guest drives the last test device it found: the interrupt came from slot 5.
  EXPECT_EQ(second_->fired(), 1u);
  EXPECT_EQ(vm_->test_device().fired(), 0u);
}

TEST_F(Exercise1, BothDevicesHaveTheirBarsMappedWithoutOverlap) {
  const auto mappings = vm_->root().mappings();
  EXPECT_EQ(guest_bars(console_.output), mappings) << console_.output;
  EXPECT_TRUE(vm_->root().mapping_errors().empty());
  ASSERT_EQ(mappings.size(), 6u) << "three BARs for each test device";
  for (const std::uint8_t slot : {vmm::stage04::kTestDeviceSlot, kSecondSlot}) {
    EXPECT_EQ(std::ranges::count(mappings, slot, &BarMapping::device_number), 3) << "slot " << int{slot};
  }
  for (std::size_t i = 0; i < mappings.size(); ++i) {
    for (std::size_t j = i + 1; j < mappings.size(); ++j) {
      const auto& a = mappings[i];
      const auto& b = mappings[j];
      if (a.space == b.space) {
        EXPECT_TRUE(a.base + a.size <= b.base || b.base + b.size <= a.base)
            << "BAR" << int{a.bar_index} << " of slot " << int{a.device_number} << " overlaps BAR" << int{b.bar_index}
            << " of slot " << int{b.device_number};
      }
    }
  }
  // Slot order, natural alignment: slot 5's BARs follow slot 3's.
  EXPECT_EQ(mappings[3], (BarMapping{kSecondSlot, 0, BarSpace::Memory, 0xc000'2000, 0x1000}));
  EXPECT_EQ(mappings[4], (BarMapping{kSecondSlot, 1, BarSpace::Io, 0xc010, 0x10}));
  EXPECT_EQ(mappings[5], (BarMapping{kSecondSlot, 2, BarSpace::Memory, 0xc000'3000, 0x1000}));
}

// ---- Exercise 2: a 64-bit BAR, sized and placed through 0xCF8/0xCFC -----------------------------------------------

constexpr std::uint8_t kScratchSlot = 4;

class Exercise2 : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(io_.insert(std::make_shared<vmm::pci::ConfigMechanism1>(root_), vmm::pci::ConfigMechanism1::kBase,
                           vmm::pci::ConfigMechanism1::kSize, "pci-conf1"));
    ASSERT_TRUE(root_.add_device(device_, kScratchSlot));
  }
  void TearDown() override { (void)io_.remove(vmm::pci::ConfigMechanism1::kBase); }

  // What a guest does: select the register at 0xCF8, then move a dword through 0xCFC.
  void select(std::uint16_t reg) {
    write_port(0xcf8, 0x8000'0000u | std::uint32_t{kScratchSlot} << 11 | (reg & 0xfcu));
  }
  std::uint32_t config_read32(std::uint16_t reg) {
    select(reg);
    return read_port(0xcfc);
  }
  void config_write32(std::uint16_t reg, std::uint32_t value) {
    select(reg);
    write_port(0xcfc, value);
  }
  void write_port(std::uint16_t port, std::uint32_t value) {
    const std::array<std::uint8_t, 4> b{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8),
                                        static_cast<std::uint8_t>(value >> 16), static_cast<std::uint8_t>(value >> 24)};
    io_.write(port, b);
  }
  std::uint32_t read_port(std::uint16_t port) {
    std::array<std::uint8_t, 4> b{};
    io_.read(port, b);
    return std::uint32_t{b[0]} | std::uint32_t{b[1]} << 8 | std::uint32_t{b[2]} << 16 | std::uint32_t{b[3]} << 24;
  }

  vmm::devices::IoBus io_;
  vmm::devices::MmioBus mmio_;
  vmm::pci::PciRoot root_{io_, mmio_};
  std::shared_ptr<lab04::Scratch64Device> device_ = std::make_shared<lab04::Scratch64Device>();
};

constexpr std::uint64_t kAbove4G = 0x1'0000'4000;

TEST_F(Exercise2, SizingRevealsA16KiB64BitPrefetchableBar) {
  EXPECT_EQ(config_read32(PCI_VENDOR_ID), 0x10f2'1af4u);
  EXPECT_EQ(config_read32(PCI_BASE_ADDRESS_0), 0x0000'000cu) << "BAR0 before sizing: type bits 64-bit, prefetchable";
  config_write32(PCI_BASE_ADDRESS_0, 0xffff'ffff);
  const std::uint32_t low = config_read32(PCI_BASE_ADDRESS_0);
  config_write32(PCI_BASE_ADDRESS_1, 0xffff'ffff);
  const std::uint32_t high = config_read32(PCI_BASE_ADDRESS_1);
  EXPECT_EQ(low, 0xffff'c00cu) << "BAR0 after writing all-ones";
  EXPECT_EQ(high, 0xffff'ffffu) << "BAR1 (the high dword) after writing all-ones";
  const std::uint64_t mask = (std::uint64_t{high} << 32 | low) & ~std::uint64_t{0xf};
  EXPECT_EQ(~mask + 1, lab04::Scratch64Device::kBarSize) << "the size the guest computes";
}

TEST_F(Exercise2, ProgrammedAbove4GiBTheBarIsOnTheMmioBus) {
  config_write32(PCI_BASE_ADDRESS_0, static_cast<std::uint32_t>(kAbove4G));
  config_write32(PCI_BASE_ADDRESS_1, static_cast<std::uint32_t>(kAbove4G >> 32));
  EXPECT_TRUE(root_.mappings().empty()) << "mapped before PCI_COMMAND_MEMORY was set";
  config_write32(PCI_COMMAND, PCI_COMMAND_MEMORY);
  EXPECT_EQ(config_read32(PCI_BASE_ADDRESS_0), 0x0000'400cu);
  EXPECT_EQ(config_read32(PCI_BASE_ADDRESS_1), 0x0000'0001u);
  const std::vector<BarMapping> expected{{kScratchSlot, 0, BarSpace::Memory, kAbove4G, 0x4000}};
  EXPECT_EQ(root_.mappings(), expected) << "mappings after programming 0x1_0000_4000 and enabling memory decoding";
  EXPECT_TRUE(root_.mapping_errors().empty());

  const std::array<std::uint8_t, 8> written{1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_TRUE(mmio_.write(kAbove4G + 0x3ff8, written));
  std::array<std::uint8_t, 8> read{};
  EXPECT_TRUE(mmio_.read(kAbove4G + 0x3ff8, read));
  EXPECT_EQ(read, written) << "the device's memory, read back through the MMIO bus";

  config_write32(PCI_COMMAND, 0);
  EXPECT_TRUE(root_.mappings().empty()) << "still mapped with decoding off";
}

// ---- Exercise 3: a masked vector, its pending bit, and the message --------------------------------------------

TEST(Exercise3, LapicMsiPutsTheDestinationInBits19To12AndTheVectorInData) {
  EXPECT_EQ(lab04::lapic_msi(0, 0x50), (vmm::pci::MsiMessage{0xfee0'0000, 0x50}));
  EXPECT_EQ(lab04::lapic_msi(3, 0x61), (vmm::pci::MsiMessage{0xfee0'3000, 0x61}));
  EXPECT_EQ(lab04::lapic_msi(0xff, 0xef), (vmm::pci::MsiMessage{0xfeef'f000, 0xef}));
}

TEST(Exercise3, AMaskedVectorSetsItsPendingBitInsteadOfFiring) {
  vmm::pci::testing::FakeMsiSink sink;
  auto device = PciTestDevice::create(sink);
  ASSERT_TRUE(device);
  const vmm::pci::MsiMessage message{0xfee0'3000, 0x61};
  const std::uint64_t pba = lab04::fire_masked_and_read_pba(**device, message);
  EXPECT_EQ(pba, 0b10u) << "PBA after firing masked vector 1";
  EXPECT_TRUE(sink.signals().empty()) << "a masked vector reached the sink";
  auto& msix = (*device)->msix();
  EXPECT_TRUE(msix.enabled());
  EXPECT_FALSE(msix.function_masked());
  EXPECT_EQ(msix.entry(1), (vmm::pci::MsixEntry{0xfee0'3000, 0x61, PCI_MSIX_ENTRY_CTRL_MASKBIT}));
  EXPECT_EQ((*device)->fired(), 0u);
}

TEST(Exercise3, UnmaskingDeliversThePendingMessageOnce) {
  vmm::pci::testing::FakeMsiSink sink;
  auto device = PciTestDevice::create(sink);
  ASSERT_TRUE(device);
  const vmm::pci::MsiMessage message{0xfee0'3000, 0x61};
  ASSERT_EQ(lab04::fire_masked_and_read_pba(**device, message), 0b10u) << "PBA after firing masked vector 1";
  lab04::unmask_vector(**device, 1);
  using Signal = vmm::pci::testing::FakeMsiSink::Signal;
  EXPECT_EQ(sink.signals(), (std::vector<Signal>{{message, 1}})) << "messages after unmasking vector 1";
  EXPECT_FALSE((*device)->msix().pending(1)) << "the pending bit survived the delivery";
  lab04::unmask_vector(**device, 1);
  EXPECT_EQ(sink.signals().size(), 1u) << "unmasking again delivered again";
}

}  // namespace
