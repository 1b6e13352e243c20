// QEMU's edu device (docs/specs/edu.rst in QEMU) driven through the VFIO wrappers, inside the rig's vfio flavour:
// q35 with an intel-iommu (interrupt remapping on) and edu bound to vfio-pci. tools/rig exports the device's address
// in VMMLAB_RIG_EDU_BDF and its IOMMU group in VMMLAB_RIG_EDU_GROUP.
//
// Registered only as a rig test. Run by hand on a host without VFIO it fails (it does not skip) and says why.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include "vmm/event/event_fd.hpp"
#include "vmm/vfio/container.hpp"
#include "vmm/vfio/device.hpp"
#include "vmm/vfio/group.hpp"

namespace vmm::vfio {
namespace {

// edu's BAR0 registers (4-byte accesses only below 0x80).
constexpr std::uint64_t kId = 0x00;
constexpr std::uint64_t kLiveness = 0x04;
constexpr std::uint64_t kFactorial = 0x08;
constexpr std::uint64_t kStatus = 0x20;  // bit 0x01: computing the factorial
constexpr std::uint64_t kIrqStatus = 0x24;
constexpr std::uint64_t kIrqRaise = 0x60;
constexpr std::uint64_t kIrqAck = 0x64;
constexpr std::uint64_t kDmaSrc = 0x80;
constexpr std::uint64_t kDmaDst = 0x88;
constexpr std::uint64_t kDmaCount = 0x90;
constexpr std::uint64_t kDmaCmd = 0x98;  // bit0 start, bit1 direction (1: edu to RAM), bit2 raise irq 0x100
constexpr std::uint64_t kEduBuffer = 0x40000;
constexpr std::uint32_t kEduId = 0x010000ed;

constexpr std::uint16_t kCommandMemory = 0x2;     // PCI command register: Memory Space
constexpr std::uint16_t kCommandBusMaster = 0x4;  // and Bus Master (no DMA and no MSI without it)

constexpr auto kTimeout = std::chrono::seconds(10);  // TCG is slow; edu's work is on a QEMU timer or thread

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

class EduVfio : public ::testing::Test {
 protected:
  void SetUp() override {
    // Container first: on a host without VFIO this is the failure a learner sees, with what to do about it.
    auto container = Container::open();
    ASSERT_TRUE(container) << container.error().message();
    container_ = std::move(*container);

    bdf_ = env("VMMLAB_RIG_EDU_BDF");
    ASSERT_FALSE(bdf_.empty()) << "VMMLAB_RIG_EDU_BDF is not set: this test drives QEMU's edu device, run it in the "
                                  "rig: tools/rig --flavour vfio -- stage08_vfio_rig_tests";
    auto group = Group::open_for_device(bdf_);
    ASSERT_TRUE(group) << group.error().message();
    group_ = std::move(*group);
    ASSERT_EQ(std::to_string(group_->number()), env("VMMLAB_RIG_EDU_GROUP"));

    ASSERT_TRUE(group_->set_container(*container_));
    auto set = container_->set_iommu(VFIO_TYPE1v2_IOMMU);
    ASSERT_TRUE(set) << set.error().message();
    auto device = group_->device(bdf_);
    ASSERT_TRUE(device) << device.error().message();
    device_ = std::move(*device);
    auto bar0 = device_->region_info(VFIO_PCI_BAR0_REGION_INDEX);
    ASSERT_TRUE(bar0) << bar0.error().message();
    bar0_ = *bar0;
  }

  std::uint32_t bar0_read(std::uint64_t offset) {
    auto value = device_->read_value(bar0_, offset, 4);
    EXPECT_TRUE(value) << value.error().message();
    return value.value_or(0xdeadbeef);
  }
  void bar0_write(std::uint64_t offset, std::uint32_t value) {
    auto ok = device_->write_value(bar0_, offset, 4, value);
    ASSERT_TRUE(ok) << ok.error().message();
  }
  void enable_memory_and_bus_master() {
    auto command = device_->config_read(PCI_COMMAND_OFFSET, 2);
    ASSERT_TRUE(command) << command.error().message();
    auto ok = device_->config_write(PCI_COMMAND_OFFSET, 2, *command | kCommandMemory | kCommandBusMaster);
    ASSERT_TRUE(ok) << ok.error().message();
    auto after = device_->config_read(PCI_COMMAND_OFFSET, 2);
    ASSERT_TRUE(after) << after.error().message();
    ASSERT_EQ(*after & (kCommandMemory | kCommandBusMaster), kCommandMemory | kCommandBusMaster);
  }
  // Polls BAR0 `offset` until (value & mask) == 0; false on timeout.
  bool wait_clear(std::uint64_t offset, std::uint32_t mask) {
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if ((bar0_read(offset) & mask) == 0) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }

  static constexpr int PCI_COMMAND_OFFSET = 0x04;

  // Declared in this order so that they close in reverse: device, group, then container.
  std::optional<Container> container_;
  std::optional<Group> group_;
  std::optional<Device> device_;
  std::string bdf_;
  RegionInfo bar0_;
};

TEST_F(EduVfio, ContainerSpeaksTheApiAndTypeOneVersionTwo) {
  auto version = container_->api_version();
  ASSERT_TRUE(version) << version.error().message();
  EXPECT_EQ(*version, VFIO_API_VERSION);
  auto v2 = container_->has_extension(VFIO_TYPE1v2_IOMMU);
  ASSERT_TRUE(v2) << v2.error().message();
  EXPECT_TRUE(*v2);
  auto bogus = container_->has_extension(0x7fff);
  ASSERT_TRUE(bogus) << bogus.error().message();
  EXPECT_FALSE(*bogus);
  EXPECT_EQ(container_->iommu_type(), VFIO_TYPE1v2_IOMMU);
}

TEST_F(EduVfio, GroupIsViableAndAttached) {
  auto status = group_->status();
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_TRUE(status->viable);
  EXPECT_TRUE(status->container_set);
  // A group has one owner: opening it again is refused, naming the group.
  auto again = Group::open(group_->number());
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find(fmt::format("group {} is already open", group_->number())), std::string::npos)
      << again.error().message();
}

TEST_F(EduVfio, IommuInfoHasFourKibPages) {
  auto info = container_->iommu_info();
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_NE(info->page_sizes & 0x1000, 0U) << fmt::format("page sizes 0x{:x}", info->page_sizes);
  EXPECT_EQ(info->min_page_size(), 0x1000U);
  if (info->iova_ranges) {
    ASSERT_FALSE(info->iova_ranges->empty());
    EXPECT_EQ(info->iova_ranges->front().start, 0U);  // low memory, where edu's 28-bit DMA goes, is usable
    EXPECT_GE(info->iova_ranges->front().last, 0x0fffffffU);
  }
}

TEST_F(EduVfio, DeviceInfoIsAPciDeviceWithNineRegionsAndFiveIrqs) {
  auto info = device_->info();
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_TRUE(info->is_pci());
  EXPECT_EQ(info->num_regions, 9U);  // 6 BARs, ROM, config, VGA
  EXPECT_EQ(info->num_irqs, 5U);     // INTx, MSI, MSI-X, ERR, REQ
}

TEST_F(EduVfio, BarZeroIsOneMibAndMappable) {
  EXPECT_EQ(bar0_.size, 1U << 20);
  EXPECT_TRUE(bar0_.readable());
  EXPECT_TRUE(bar0_.writable());
  EXPECT_TRUE(bar0_.mappable());
  auto bar1 = device_->region_info(VFIO_PCI_BAR1_REGION_INDEX);  // edu has only BAR0
  ASSERT_TRUE(bar1) << bar1.error().message();
  EXPECT_EQ(bar1->size, 0U);
  auto config = device_->region_info(VFIO_PCI_CONFIG_REGION_INDEX);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_GE(config->size, 256U);
  EXPECT_FALSE(config->mappable());
  auto map_config = device_->mmap(*config, 0, 4096);
  ASSERT_FALSE(map_config);
  EXPECT_NE(map_config.error().message().find("cannot be mmap-ed"), std::string::npos);
}

TEST_F(EduVfio, ConfigSpaceHasEdusVendorAndDeviceId) {
  auto ids = device_->config_read(0, 4);
  ASSERT_TRUE(ids) << ids.error().message();
  EXPECT_EQ(*ids, 0x11e81234U);
  auto vendor = device_->config_read(0, 2);
  ASSERT_TRUE(vendor) << vendor.error().message();
  EXPECT_EQ(*vendor, 0x1234U);
}

TEST_F(EduVfio, IdRegisterViaReadAndViaMmap) {
  enable_memory_and_bus_master();
  EXPECT_EQ(bar0_read(kId), kEduId);

  auto mapped = device_->mmap(bar0_, 0, bar0_.size);
  ASSERT_TRUE(mapped) << mapped.error().message();
  const auto* regs = reinterpret_cast<const volatile std::uint32_t*>(mapped->data());
  EXPECT_EQ(regs[kId / 4], kEduId);
}

TEST_F(EduVfio, AccessesOutsideTheRegionAreRefused) {
  std::uint32_t value = 0;
  auto past = device_->read(bar0_, bar0_.size - 2, std::as_writable_bytes(std::span(&value, 1)));
  ASSERT_FALSE(past);
  EXPECT_NE(past.error().message().find("outside the region's 0x100000 bytes"), std::string::npos);
  auto map_past = device_->mmap(bar0_, 0, bar0_.size + 4096);
  ASSERT_FALSE(map_past);
}

TEST_F(EduVfio, LivenessRegisterInvertsWhatIsWritten) {
  enable_memory_and_bus_master();
  bar0_write(kLiveness, 0x12345678);
  EXPECT_EQ(bar0_read(kLiveness), ~0x12345678U);
  bar0_write(kLiveness, 0);
  EXPECT_EQ(bar0_read(kLiveness), 0xffffffffU);
}

TEST_F(EduVfio, FactorialOfFiveIs120) {
  enable_memory_and_bus_master();
  bar0_write(kFactorial, 5);
  ASSERT_TRUE(wait_clear(kStatus, 0x01)) << "edu still computing after " << kTimeout.count() << " s";
  EXPECT_EQ(bar0_read(kFactorial), 120U);
}

TEST_F(EduVfio, RaisedInterruptArrivesAsMsiOnTheEventfd) {
  enable_memory_and_bus_master();
  auto msi = device_->irq_info(VFIO_PCI_MSI_IRQ_INDEX);
  ASSERT_TRUE(msi) << msi.error().message();
  ASSERT_GE(msi->count, 1U);
  ASSERT_TRUE(msi->eventfd());

  auto eventfd = event::EventFd::create();
  ASSERT_TRUE(eventfd) << eventfd.error().message();
  const int fds[] = {eventfd->fd()};
  auto set = device_->set_irqs_eventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, fds);
  ASSERT_TRUE(set) << set.error().message();

  // Nothing yet.
  auto before = eventfd->read();
  ASSERT_TRUE(before) << before.error().message();
  EXPECT_FALSE(before->has_value());

  bar0_write(kIrqRaise, 0x5);
  pollfd pfd{eventfd->fd(), POLLIN, 0};
  const int ready = ::poll(&pfd, 1, static_cast<int>(std::chrono::milliseconds(kTimeout).count()));
  ASSERT_EQ(ready, 1) << "no MSI on the eventfd within " << kTimeout.count() << " s";
  auto count = eventfd->read();
  ASSERT_TRUE(count) << count.error().message();
  EXPECT_EQ(count->value_or(0), 1U);
  EXPECT_EQ(bar0_read(kIrqStatus), 0x5U);
  bar0_write(kIrqAck, 0x5);
  EXPECT_EQ(bar0_read(kIrqStatus), 0U);

  auto disabled = device_->disable_irqs(VFIO_PCI_MSI_IRQ_INDEX);
  ASSERT_TRUE(disabled) << disabled.error().message();
}

TEST_F(EduVfio, DmaRoundTripThroughTheIommu) {
  enable_memory_and_bus_master();
  // Two pages of host memory; edu's DMA mask is 28 bits, so both IOVAs are below 256 MiB.
  constexpr std::uint64_t kSrcIova = 0x100000;
  constexpr std::uint64_t kDstIova = 0x200000;
  constexpr std::uint32_t kLength = 256;
  auto src = Mmap::anonymous(4096);
  auto dst = Mmap::anonymous(4096);
  ASSERT_TRUE(src && dst);
  for (std::size_t i = 0; i < kLength; ++i) {
    src->data()[i] = static_cast<std::byte>(i * 7 + 3);
  }
  std::memset(dst->data(), 0xee, 4096);

  // Mapped before edu is told to use them: an unmapped IOVA would be a DMA fault in the IOMMU.
  auto map_src = container_->map_dma(kSrcIova, 4096, src->data(), /*readable=*/true, /*writable=*/false);
  ASSERT_TRUE(map_src) << map_src.error().message();
  auto map_dst = container_->map_dma(kDstIova, 4096, dst->data());
  ASSERT_TRUE(map_dst) << map_dst.error().message();
  ASSERT_EQ(container_->mappings().size(), 2U);

  // RAM -> edu's buffer.
  bar0_write(kDmaSrc, static_cast<std::uint32_t>(kSrcIova));
  bar0_write(kDmaDst, static_cast<std::uint32_t>(kEduBuffer));
  bar0_write(kDmaCount, kLength);
  bar0_write(kDmaCmd, 0x1);
  ASSERT_TRUE(wait_clear(kDmaCmd, 0x1)) << "DMA to edu did not finish";
  // edu's buffer -> RAM, at the other IOVA.
  bar0_write(kDmaSrc, static_cast<std::uint32_t>(kEduBuffer));
  bar0_write(kDmaDst, static_cast<std::uint32_t>(kDstIova));
  bar0_write(kDmaCount, kLength);
  bar0_write(kDmaCmd, 0x1 | 0x2);
  ASSERT_TRUE(wait_clear(kDmaCmd, 0x1)) << "DMA from edu did not finish";

  EXPECT_EQ(std::memcmp(src->data(), dst->data(), kLength), 0);
  EXPECT_EQ(dst->data()[kLength], std::byte{0xee});  // and not a byte more

  auto unmap_src = container_->unmap_dma(kSrcIova, 4096);
  ASSERT_TRUE(unmap_src) << unmap_src.error().message();
  auto unmap_dst = container_->unmap_dma(kDstIova, 4096);
  ASSERT_TRUE(unmap_dst) << unmap_dst.error().message();
  EXPECT_TRUE(container_->mappings().empty());
}

TEST_F(EduVfio, OverlappingOrUnknownDmaRangesAreRefusedBeforeTheKernel) {
  auto page = Mmap::anonymous(2 * 4096);
  ASSERT_TRUE(page);
  ASSERT_TRUE(container_->map_dma(0x300000, 2 * 4096, page->data()));
  auto overlap = container_->map_dma(0x301000, 4096, page->data());
  ASSERT_FALSE(overlap);
  EXPECT_NE(overlap.error().message().find("overlaps the existing mapping"), std::string::npos);
  auto unknown = container_->unmap_dma(0x400000, 4096);
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message().find("nothing is mapped at IOVA 0x400000"), std::string::npos);
  ASSERT_TRUE(container_->unmap_dma(0x300000, 2 * 4096));
}

TEST_F(EduVfio, ResetBringsTheDeviceBack) {
  enable_memory_and_bus_master();
  bar0_write(kLiveness, 0xabcd);
  auto info = device_->info();
  ASSERT_TRUE(info) << info.error().message();
  auto reset = device_->reset();
  if (info->can_reset()) {
    ASSERT_TRUE(reset) << reset.error().message();
  } else {
    ASSERT_FALSE(reset);  // the kernel says so up front, and the ioctl agrees
    EXPECT_NE(reset.error().message().find("VFIO_DEVICE_RESET"), std::string::npos);
  }
  // Either way the device still answers.
  enable_memory_and_bus_master();
  EXPECT_EQ(bar0_read(kId), kEduId);
}

}  // namespace
}  // namespace vmm::vfio
