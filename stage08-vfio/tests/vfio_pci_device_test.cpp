// VfioPciDevice against a fake VFIO device, plugged into a real PciRoot: what the guest sees of config space, what
// reaches the device, BARs becoming memory slots, MSI and MSI-X becoming routes and SET_IRQS eventfds.

#include "vmm/vfio/vfio_pci_device.hpp"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <poll.h>

#include <array>
#include <chrono>
#include <memory>
#include <thread>

#include "fake_vfio_device.hpp"
#include "rng_on_msix_routes.hpp"  // stage06's RoutingRecorder and AcceptingBinder
#include "vmm/devices/bus.hpp"
#include "vmm/pci/pci_root.hpp"

namespace vmm::vfio {
namespace {

using stage06::testing::AcceptingBinder;
using stage06::testing::RoutingRecorder;
using testing::FakeVfioDevice;
using testing::RecordingSlots;

constexpr std::uint8_t kSlot = 5;
constexpr std::uint64_t kBar0Size = 1 << 20;
constexpr std::uint64_t kBar2Size = 16 << 10;
constexpr std::uint64_t kBar4Size = 32;
constexpr std::uint8_t kMsiCap = 0x40;
constexpr std::uint8_t kVendorCap = 0x60;
constexpr std::uint8_t kMsixCap = 0x70;

// An edu-like device: BAR0 32-bit memory, BAR2 64-bit prefetchable, BAR4 I/O; MSI; a vendor capability.
std::shared_ptr<FakeVfioDevice> edu_like() {
  auto device = std::make_shared<FakeVfioDevice>();
  device->add_bar(0, kBar0Size, PCI_BASE_ADDRESS_SPACE_MEMORY);
  device->add_bar(2, kBar2Size, PCI_BASE_ADDRESS_MEM_TYPE_64 | PCI_BASE_ADDRESS_MEM_PREFETCH);
  device->add_bar(4, kBar4Size, PCI_BASE_ADDRESS_SPACE_IO, /*mappable=*/false);
  device->add_msi(kMsiCap, /*log2_vectors=*/2, /*is_64bit=*/true, /*maskable=*/true);
  device->add_vendor_cap(kVendorCap, 8);
  return device;
}

// A device with MSI-X: 4 vectors, table at BAR0+0x2000, PBA at BAR0+0x3000, BAR0 16 KiB.
std::shared_ptr<FakeVfioDevice> msix_device() {
  auto device = std::make_shared<FakeVfioDevice>();
  device->add_bar(0, 16 << 10, PCI_BASE_ADDRESS_SPACE_MEMORY);
  device->add_msix(kMsixCap, 4, 0, 0x2000, 0x3000);
  return device;
}

class Passthrough : public ::testing::Test {
 protected:
  void plug(std::shared_ptr<FakeVfioDevice> device, bool slots = true) {
    fake_ = std::move(device);
    auto created = VfioPciDevice::create(fake_, {&routing_, &binder_, slots ? &slots_ : nullptr});
    ASSERT_TRUE(created) << created.error().message();
    device_ = *created;
    ASSERT_TRUE(root_.add_device(device_, kSlot));
    root_.set_bar_observer([this](const pci::BarMapping& mapping, bool placed) {
      if (mapping.device_number == kSlot) {
        device_->bar_placed(mapping.bar_index, placed ? std::optional(mapping.base) : std::nullopt);
      }
    });
  }
  void TearDown() override { root_.set_bar_observer(nullptr); }

  std::uint32_t read(std::uint16_t reg, std::size_t width = 4) {
    std::array<std::uint8_t, 4> data{};
    root_.config_read(0, kSlot, 0, reg, std::span(data).first(width));
    std::uint32_t value = 0;
    std::memcpy(&value, data.data(), width);
    return value;
  }
  void write(std::uint16_t reg, std::uint32_t value, std::size_t width = 4) {
    std::array<std::uint8_t, 4> data{};
    std::memcpy(data.data(), &value, width);
    root_.config_write(0, kSlot, 0, reg, std::span(data).first(width));
  }
  std::uint64_t size_bar(std::uint16_t reg) {
    write(reg, 0xffff'ffff);
    const std::uint32_t low = read(reg);
    write(reg, 0);
    return low;
  }

  RoutingRecorder recorder_;
  irq::GsiRouting routing_{recorder_.apply()};
  AcceptingBinder binder_;
  RecordingSlots slots_;
  devices::IoBus io_;
  devices::MmioBus mmio_;
  pci::PciRoot root_{io_, mmio_};
  std::shared_ptr<FakeVfioDevice> fake_;
  std::shared_ptr<VfioPciDevice> device_;
};

// ---- config space ----

TEST_F(Passthrough, BarSizingAnswersWithTheRegionSizesAndNeverReachesTheDevice) {
  plug(edu_like());
  EXPECT_EQ(size_bar(PCI_BASE_ADDRESS_0), static_cast<std::uint32_t>(~(kBar0Size - 1)));
  // 64-bit prefetchable: the type bits stay, the high dword sizes to all-ones (16 KiB < 4 GiB).
  EXPECT_EQ(size_bar(PCI_BASE_ADDRESS_2), static_cast<std::uint32_t>(~(kBar2Size - 1)) | PCI_BASE_ADDRESS_MEM_TYPE_64 |
                                              PCI_BASE_ADDRESS_MEM_PREFETCH);
  EXPECT_EQ(size_bar(PCI_BASE_ADDRESS_3), 0xffff'ffffU);
  EXPECT_EQ(size_bar(PCI_BASE_ADDRESS_4), static_cast<std::uint32_t>(~(kBar4Size - 1)) | PCI_BASE_ADDRESS_SPACE_IO);
  EXPECT_EQ(size_bar(PCI_BASE_ADDRESS_1), 0U) << "BAR1 is not implemented";
  EXPECT_TRUE(fake_->config_writes_touching(PCI_BASE_ADDRESS_0, 24).empty())
      << "the guest's BAR addresses must not reach the device";
  const auto bars = device_->bars_info();
  ASSERT_EQ(bars.size(), 3U);
  EXPECT_EQ(bars[0].bar.size, kBar0Size);
  EXPECT_EQ(bars[1].bar.kind, pci::BarKind::Memory64);
  EXPECT_TRUE(bars[1].bar.prefetchable);
  EXPECT_EQ(bars[2].bar.kind, pci::BarKind::Io);
}

TEST_F(Passthrough, IdentityAndCapabilityBytesAreReadLiveFromTheDevice) {
  plug(edu_like());
  EXPECT_EQ(read(PCI_VENDOR_ID), 0x11e8'1234U);
  // A change in the device after creation shows: the bytes are not a snapshot.
  fake_->config_bytes()[kVendorCap + 4] = 0x5a;
  EXPECT_EQ(read(kVendorCap + 4, 1), 0x5aU);
  EXPECT_TRUE(device_->live_byte(kVendorCap + 4));
  EXPECT_FALSE(device_->live_byte(PCI_BASE_ADDRESS_0));
  // The capability list as the guest walks it: the device's own chain.
  EXPECT_EQ(read(PCI_CAPABILITY_LIST, 1), kMsiCap);
  EXPECT_EQ(read(kMsiCap + 1, 1), kVendorCap);
}

TEST_F(Passthrough, WritesToLiveRegistersAreForwardedWithTheGuestsBytes) {
  plug(edu_like());
  write(kVendorCap + 4, 0xdeadbeef);
  const auto writes = fake_->config_writes_touching(kVendorCap + 4, 4);
  ASSERT_EQ(writes.size(), 1U);
  EXPECT_EQ(writes[0].offset, kVendorCap + 4U);
  EXPECT_EQ(writes[0].bytes, (std::vector<std::uint8_t>{0xef, 0xbe, 0xad, 0xde}));
  // Status: the device's write-1-to-clear bits are the device's business.
  fake_->config_bytes()[PCI_STATUS + 1] = 0x20;  // received master abort
  EXPECT_EQ(read(PCI_STATUS + 1, 1) & 0x20U, 0x20U);
  write(PCI_STATUS, 0x2000, 2);
  EXPECT_EQ(read(PCI_STATUS + 1, 1) & 0x20U, 0U);
}

TEST_F(Passthrough, HeaderRegistersTheVmmOwnsAreVirtual) {
  plug(edu_like());
  EXPECT_EQ(read(PCI_HEADER_TYPE, 1), 0U) << "single function: the root has no functions 1-7";
  EXPECT_EQ(read(PCI_INTERRUPT_PIN, 1), 0U) << "no INTx offered";
  write(PCI_ROM_ADDRESS, 0xffff'ffff);
  EXPECT_EQ(read(PCI_ROM_ADDRESS), 0U) << "no expansion ROM for the guest";
  write(PCI_INTERRUPT_LINE, 11, 1);
  EXPECT_EQ(read(PCI_INTERRUPT_LINE, 1), 11U);
  EXPECT_TRUE(fake_->config_writes_touching(PCI_ROM_ADDRESS, 4).empty());
  EXPECT_TRUE(fake_->config_writes_touching(PCI_INTERRUPT_LINE, 2).empty());
  EXPECT_EQ(fake_->resets(), 1) << "the device starts from reset";
}

TEST_F(Passthrough, CommandDecidesDecodingInTheCopyAndReachesTheDevice) {
  plug(edu_like());
  write(PCI_BASE_ADDRESS_0, 0xc000'0000);
  EXPECT_TRUE(root_.mappings().empty());
  write(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | 0x8000 /* not writable */, 2);
  EXPECT_EQ(read(PCI_COMMAND, 2), static_cast<std::uint32_t>(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER));
  EXPECT_EQ(fake_->get16(PCI_COMMAND), PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)
      << "memory decoding and bus mastering must be on in the device too";
  ASSERT_EQ(root_.mappings().size(), 1U);
  EXPECT_EQ(root_.mappings()[0].base, 0xc000'0000U);
}

// ---- BARs and memory slots ----

TEST_F(Passthrough, PlacedMemoryBarBecomesASlotOverTheDevicesMmapAndFollowsMoves) {
  plug(edu_like());
  write(PCI_BASE_ADDRESS_0, 0xc000'0000);
  write(PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  auto slots = slots_.slots();
  ASSERT_EQ(slots.size(), 1U);
  const auto& slot = slots.begin()->second;
  EXPECT_EQ(slot.guest_address, 0xc000'0000U);
  EXPECT_EQ(slot.size, kBar0Size);
  EXPECT_EQ(slot.host, fake_->mmaps().at({0, 0}));

  write(PCI_BASE_ADDRESS_0, 0xd000'0000);  // moved while decoding is on
  slots = slots_.slots();
  ASSERT_EQ(slots.size(), 1U);
  EXPECT_EQ(slots.begin()->second.guest_address, 0xd000'0000U);
  write(PCI_COMMAND, 0, 2);
  EXPECT_TRUE(slots_.slots().empty());
  EXPECT_EQ(device_->stats().slot_maps, 2U);
  EXPECT_EQ(device_->stats().slot_unmaps, 2U);
}

TEST_F(Passthrough, TrappedBarAccessesGoToTheDeviceRegion) {
  plug(edu_like(), /*slots=*/false);
  write(PCI_BASE_ADDRESS_0, 0xc000'0000);
  write(PCI_BASE_ADDRESS_4, 0xc100);
  write(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_IO, 2);
  EXPECT_TRUE(slots_.slots().empty());
  fake_->bar(0)[0x10] = 0x42;
  std::array<std::uint8_t, 4> data{};
  ASSERT_TRUE(mmio_.read(0xc000'0010, data));
  EXPECT_EQ(data[0], 0x42);
  const std::array<std::uint8_t, 2> out{0x11, 0x22};
  ASSERT_TRUE(io_.write(0xc104, out));
  EXPECT_EQ(fake_->bar(4)[4], 0x11);
  EXPECT_EQ(fake_->bar(4)[5], 0x22);
  EXPECT_EQ(device_->stats().bar_reads, 1U);
  EXPECT_EQ(device_->stats().bar_writes, 1U);
}

TEST_F(Passthrough, ADeviceThatStopsAnsweringReadsAllOnesAndTheVmmGoesOn) {
  plug(edu_like(), /*slots=*/false);
  write(PCI_BASE_ADDRESS_0, 0xc000'0000);
  write(PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  fake_->unplug();
  std::array<std::uint8_t, 4> data{};
  ASSERT_TRUE(mmio_.read(0xc000'0000, data));
  EXPECT_EQ(data, (std::array<std::uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
  EXPECT_EQ(read(PCI_VENDOR_ID), 0xffff'ffffU);
  write(kVendorCap + 4, 1);
  EXPECT_GE(device_->stats().errors, 3U);
  ASSERT_TRUE(device_->last_error());
  EXPECT_NE(device_->last_error()->message().find("ENODEV"), std::string::npos) << device_->last_error()->message();
}

// ---- MSI ----

TEST_F(Passthrough, MsiCapabilityIsVirtualAndHidesPerVectorMasking) {
  plug(edu_like());
  const std::uint32_t flags = read(kMsiCap + PCI_MSI_FLAGS, 2);
  EXPECT_EQ(flags & PCI_MSI_FLAGS_MASKBIT, 0U);
  EXPECT_EQ(flags & PCI_MSI_FLAGS_QMASK, 2U << 1) << "4 vectors capable, as the device";
  EXPECT_NE(flags & PCI_MSI_FLAGS_64BIT, 0U);
  write(kMsiCap + PCI_MSI_ADDRESS_LO, 0xfee0'0003);
  EXPECT_EQ(read(kMsiCap + PCI_MSI_ADDRESS_LO), 0xfee0'0000U) << "the address is dword-aligned";
  write(kMsiCap + PCI_MSI_MASK_64, 0xffff'ffff);
  EXPECT_EQ(read(kMsiCap + PCI_MSI_MASK_64), 0U);
  EXPECT_TRUE(fake_->config_writes_touching(kMsiCap, 24).empty()) << "MSI writes never reach the device";
}

TEST_F(Passthrough, EnablingMsiRoutesEachVectorAndHandsVfioTheIrqfds) {
  plug(edu_like());
  write(kMsiCap + PCI_MSI_ADDRESS_LO, 0xfee0'1000);
  write(kMsiCap + PCI_MSI_ADDRESS_HI, 0);
  write(kMsiCap + PCI_MSI_DATA_64, 0x40, 2);
  EXPECT_TRUE(fake_->irq_sets().empty()) << "nothing before Enable";
  write(kMsiCap + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | (1U << 4), 2);  // 2 vectors

  auto* routes = device_->msi_routes();
  ASSERT_NE(routes, nullptr);
  ASSERT_EQ(routes->vectors(), 4U);
  EXPECT_EQ(routes->route(0)->message, (pci::MsiMessage{0xfee0'1000, 0x40}));
  EXPECT_EQ(routes->route(1)->message, (pci::MsiMessage{0xfee0'1000, 0x41})) << "vector number in the data";
  EXPECT_FALSE(routes->route(2)->message) << "only the enabled vectors route";
  EXPECT_EQ(routing_.msi(routes->route(0)->gsi), (pci::MsiMessage{0xfee0'1000, 0x40}));

  auto sets = fake_->irq_sets();
  ASSERT_EQ(sets.size(), 1U);
  EXPECT_EQ(sets[0].index, static_cast<std::uint32_t>(VFIO_PCI_MSI_IRQ_INDEX));
  EXPECT_EQ(sets[0].fds, (std::vector<int>{routes->irqfd(0)->fd(), routes->irqfd(1)->fd()}));

  // The guest retargets while enabled: the route changes, VFIO keeps its eventfds.
  write(kMsiCap + PCI_MSI_DATA_64, 0x50, 2);
  EXPECT_EQ(routes->route(0)->message, (pci::MsiMessage{0xfee0'1000, 0x50}));
  EXPECT_EQ(fake_->irq_sets().size(), 1U);

  write(kMsiCap + PCI_MSI_FLAGS, 0, 2);
  sets = fake_->irq_sets();
  ASSERT_EQ(sets.size(), 2U);
  EXPECT_TRUE(sets[1].disable);
  EXPECT_FALSE(routes->route(0)->message);
  EXPECT_FALSE(routing_.msi(routes->route(0)->gsi));
}

TEST_F(Passthrough, AReservedMultipleMessageEnableIsClampedToWhatTheDeviceCan) {
  plug(edu_like());
  write(kMsiCap + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE, 2);  // 7: reserved
  const auto sets = fake_->irq_sets();
  ASSERT_EQ(sets.size(), 1U);
  EXPECT_EQ(sets[0].fds.size(), 4U);
}

// ---- MSI-X ----

void write_entry(devices::MmioBus& mmio, std::uint64_t table, std::uint16_t vector, std::uint64_t address,
                 std::uint32_t data, std::uint32_t control) {
  const std::uint64_t entry = table + vector * PCI_MSIX_ENTRY_SIZE;
  const auto put = [&](std::uint64_t at, std::uint32_t value) {
    std::array<std::uint8_t, 4> bytes{};
    std::memcpy(bytes.data(), &value, 4);
    ASSERT_TRUE(mmio.write(at, bytes));
  };
  put(entry + PCI_MSIX_ENTRY_LOWER_ADDR, static_cast<std::uint32_t>(address));
  put(entry + PCI_MSIX_ENTRY_UPPER_ADDR, static_cast<std::uint32_t>(address >> 32));
  put(entry + PCI_MSIX_ENTRY_DATA, data);
  put(entry + PCI_MSIX_ENTRY_VECTOR_CTRL, control);
}

TEST_F(Passthrough, MsixTableAndPbaPagesAreLeftOutOfTheSlots) {
  plug(msix_device());
  const auto bars = device_->bars_info();
  ASSERT_EQ(bars.size(), 1U);
  EXPECT_EQ(bars[0].mapped_areas, (std::vector<BarArea>{{0, 0x2000}})) << "pages 0x2000 and 0x3000 trap";
  write(PCI_BASE_ADDRESS_0, 0xc000'0000);
  write(PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  const auto slots = slots_.slots();
  ASSERT_EQ(slots.size(), 1U);
  EXPECT_EQ(slots.begin()->second.size, 0x2000U);
}

TEST_F(Passthrough, MsixTableWritesAreEmulatedAndEnableHandsVfioIrqfdsOrRelays) {
  plug(msix_device());
  write(PCI_BASE_ADDRESS_0, 0xc000'0000);
  write(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
  write_entry(mmio_, 0xc000'2000, 0, 0xfee0'0000, 0x31, 0);  // vector 0 programmed, unmasked
  EXPECT_EQ(fake_->bar(0)[0x2000 + PCI_MSIX_ENTRY_DATA], 0) << "the table never reaches the device";
  EXPECT_EQ(device_->msix_table()->entry(0)->data, 0x31U);
  EXPECT_TRUE(fake_->irq_sets().empty());

  write(kMsixCap + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);
  auto* routes = device_->msix_routes();
  auto sets = fake_->irq_sets();
  ASSERT_EQ(sets.size(), 1U);
  EXPECT_EQ(sets[0].index, static_cast<std::uint32_t>(VFIO_PCI_MSIX_IRQ_INDEX));
  ASSERT_EQ(sets[0].fds.size(), 4U);
  EXPECT_EQ(sets[0].fds[0], routes->irqfd(0)->fd()) << "deliverable: straight to KVM";
  for (std::uint16_t v = 1; v < 4; ++v) {
    EXPECT_NE(sets[0].fds[v], routes->irqfd(v)->fd()) << "masked vector " << v << ": the VMM's relay";
    EXPECT_NE(sets[0].fds[v], -1);
  }
  EXPECT_EQ(routing_.msi(*routes->gsi(0)), (pci::MsiMessage{0xfee0'0000, 0x31}));

  // The guest masks vector 0: VFIO now signals its relay; unmask gives the irqfd back. One SET_IRQS each.
  write_entry(mmio_, 0xc000'2000, 0, 0xfee0'0000, 0x31, PCI_MSIX_ENTRY_CTRL_MASKBIT);
  sets = fake_->irq_sets();
  ASSERT_EQ(sets.size(), 2U);
  EXPECT_EQ(sets[1].start, 0U);
  ASSERT_EQ(sets[1].fds.size(), 1U);
  EXPECT_EQ(sets[1].fds[0], device_->msix_vfio_eventfds()[0]);
  EXPECT_NE(sets[1].fds[0], routes->irqfd(0)->fd());
  write_entry(mmio_, 0xc000'2000, 0, 0xfee0'0000, 0x31, 0);
  EXPECT_EQ(device_->msix_vfio_eventfds()[0], routes->irqfd(0)->fd());

  write(kMsixCap + PCI_MSIX_FLAGS, 0, 2);
  sets = fake_->irq_sets();
  EXPECT_TRUE(sets.back().disable);
  EXPECT_EQ(device_->msix_vfio_eventfds(), (std::vector<int>{-1, -1, -1, -1}));
}

TEST_F(Passthrough, AnInterruptOnAMaskedVectorBecomesPendingAndIsDeliveredOnUnmask) {
  plug(msix_device());
  write(PCI_BASE_ADDRESS_0, 0xc000'0000);
  write(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
  write_entry(mmio_, 0xc000'2000, 1, 0xfee0'0000, 0x32, PCI_MSIX_ENTRY_CTRL_MASKBIT);
  write(kMsixCap + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE, 2);

  // Play the kernel: the device fires vector 1, VFIO signals the eventfd it was given (the relay).
  const int relay = device_->msix_vfio_eventfds()[1];
  const std::uint64_t one = 1;
  ASSERT_EQ(::write(relay, &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!device_->msix_table()->pending(1) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(device_->msix_table()->pending(1)) << "the relay thread sets the pending bit";
  EXPECT_EQ(device_->stats().relayed, 1U);
  std::array<std::uint8_t, 8> pba{};
  ASSERT_TRUE(mmio_.read(0xc000'3000, pba));
  EXPECT_EQ(pba[0], 0x02) << "the guest sees it in the PBA";

  // Unmask: the table delivers the pending vector through the routes, which write its irqfd (KVM would inject).
  write_entry(mmio_, 0xc000'2000, 1, 0xfee0'0000, 0x32, 0);
  EXPECT_FALSE(device_->msix_table()->pending(1));
  auto count = device_->msix_routes()->irqfd(1)->read();
  ASSERT_TRUE(count);
  EXPECT_EQ(count->value_or(0), 1U);
}

TEST_F(Passthrough, HostileMsixAccessesGetAllOnesAndChangeNothing) {
  plug(msix_device());
  write(PCI_BASE_ADDRESS_0, 0xc000'0000);
  write(PCI_COMMAND, PCI_COMMAND_MEMORY, 2);
  std::array<std::uint8_t, 2> narrow{};
  ASSERT_TRUE(mmio_.read(0xc000'2000, narrow));  // 2 bytes: not allowed in the table
  EXPECT_EQ(narrow, (std::array<std::uint8_t, 2>{0xff, 0xff}));
  std::array<std::uint8_t, 8> straddle{};
  ASSERT_TRUE(mmio_.read(0xc000'1ffc, straddle));  // starts before the table, ends in it
  EXPECT_EQ(straddle[0], 0xff);
  const std::array<std::uint8_t, 4> junk{1, 2, 3, 4};
  ASSERT_TRUE(mmio_.write(0xc000'3000, junk));  // the PBA is read-only
  EXPECT_FALSE(device_->msix_table()->pending(0));
  EXPECT_EQ(fake_->bar(0)[0x3000], 0) << "nothing reached the device";
  // The capability's table offset/BIR are read-only.
  write(kMsixCap + PCI_MSIX_TABLE, 0x1000);
  EXPECT_EQ(read(kMsixCap + PCI_MSIX_TABLE), 0x2000U);
}

// ---- refusals ----

TEST(PassthroughCreate, RefusesMissingWiringAndBarsTheGuestCannotBeGiven) {
  RoutingRecorder recorder;
  irq::GsiRouting routing{recorder.apply()};
  AcceptingBinder binder;
  auto device = std::make_shared<FakeVfioDevice>();
  EXPECT_FALSE(VfioPciDevice::create(device, {nullptr, &binder, nullptr}));
  device->add_bar(0, 3000, PCI_BASE_ADDRESS_SPACE_MEMORY);  // not a power of two
  auto refused = VfioPciDevice::create(device, {&routing, &binder, nullptr});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("BAR0"), std::string::npos) << refused.error().message();
}

}  // namespace
}  // namespace vmm::vfio
