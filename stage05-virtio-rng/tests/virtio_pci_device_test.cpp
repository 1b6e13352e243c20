// VirtioPciDevice: the virtio-pci modern transport, driven the way a driver drives it (BAR and configuration space
// accesses), with a fake device model behind it and a recording MSI sink in front.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <linux/pci_regs.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "fake_msi_sink.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/memory/region.hpp"
#include "vmm/testing/virtio_pci_driver.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"

namespace vmm::virtio {
namespace {

using pci::testing::FakeMsiSink;
using ::testing::HasSubstr;

constexpr std::uint64_t kMemorySize = 1 << 20;

// Common configuration fields, by the kernel's struct.
constexpr std::uint64_t kDfSelect = offsetof(virtio_pci_common_cfg, device_feature_select);
constexpr std::uint64_t kDf = offsetof(virtio_pci_common_cfg, device_feature);
constexpr std::uint64_t kGfSelect = offsetof(virtio_pci_common_cfg, guest_feature_select);
constexpr std::uint64_t kGf = offsetof(virtio_pci_common_cfg, guest_feature);
constexpr std::uint64_t kMsixConfig = offsetof(virtio_pci_common_cfg, msix_config);
constexpr std::uint64_t kNumQueues = offsetof(virtio_pci_common_cfg, num_queues);
constexpr std::uint64_t kStatus = offsetof(virtio_pci_common_cfg, device_status);
constexpr std::uint64_t kGeneration = offsetof(virtio_pci_common_cfg, config_generation);
constexpr std::uint64_t kQSelect = offsetof(virtio_pci_common_cfg, queue_select);
constexpr std::uint64_t kQSize = offsetof(virtio_pci_common_cfg, queue_size);
constexpr std::uint64_t kQVector = offsetof(virtio_pci_common_cfg, queue_msix_vector);
constexpr std::uint64_t kQEnable = offsetof(virtio_pci_common_cfg, queue_enable);
constexpr std::uint64_t kQNotifyOff = offsetof(virtio_pci_common_cfg, queue_notify_off);
constexpr std::uint64_t kQDescLo = offsetof(virtio_pci_common_cfg, queue_desc_lo);
constexpr std::uint64_t kQDescHi = offsetof(virtio_pci_common_cfg, queue_desc_hi);
constexpr std::uint64_t kQDriverLo = offsetof(virtio_pci_common_cfg, queue_avail_lo);
constexpr std::uint64_t kQDriverHi = offsetof(virtio_pci_common_cfg, queue_avail_hi);
constexpr std::uint64_t kQDeviceLo = offsetof(virtio_pci_common_cfg, queue_used_lo);

constexpr std::uint8_t kAck = VIRTIO_CONFIG_S_ACKNOWLEDGE;
constexpr std::uint8_t kDriver = VIRTIO_CONFIG_S_DRIVER;
constexpr std::uint8_t kFeaturesOk = VIRTIO_CONFIG_S_FEATURES_OK;
constexpr std::uint8_t kDriverOk = VIRTIO_CONFIG_S_DRIVER_OK;
constexpr std::uint8_t kNeedsReset = VIRTIO_CONFIG_S_NEEDS_RESET;
constexpr std::uint8_t kFailed = VIRTIO_CONFIG_S_FAILED;

constexpr std::uint64_t kVersion1 = 1ULL << VIRTIO_F_VERSION_1;
constexpr std::uint64_t kEventIdx = 1ULL << VIRTIO_RING_F_EVENT_IDX;
constexpr std::uint64_t kIndirect = 1ULL << VIRTIO_RING_F_INDIRECT_DESC;

// A valid layout for a queue of `size` entries, at `base` in guest memory.
QueueLayout good_layout(std::uint16_t size = 16, std::uint64_t base = 0x1'0000) {
  QueueLayout layout;
  layout.size = size;
  layout.descriptor_table = memory::GuestAddress(base);
  layout.available_ring = memory::GuestAddress(base + 0x1000);
  layout.used_ring = memory::GuestAddress(base + 0x2000);
  return layout;
}

// A device model that records what the transport does to it.
class FakeDevice final : public VirtioDevice {
 public:
  std::uint16_t type = VIRTIO_ID_RNG;
  std::uint64_t offered = kCommonFeatures;
  std::vector<std::uint16_t> sizes{16};
  std::vector<std::uint8_t> config_bytes;
  bool fail_activation = false;
  std::function<void(std::uint16_t)> on_notify;  // runs inside queue_notify, with the device's lock held

  [[nodiscard]] std::uint16_t device_type() const override { return type; }
  [[nodiscard]] std::uint64_t features() const override { return offered; }
  [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override { return sizes; }
  [[nodiscard]] std::size_t config_size() const override { return config_bytes.size(); }
  void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const override {
    std::lock_guard lock(mutex);
    config_reads.emplace_back(offset, data.size());
    for (std::size_t i = 0; i < data.size(); ++i) {
      data[i] = offset + i < config_bytes.size() ? config_bytes[offset + i] : std::uint8_t{0xee};
    }
  }
  void write_config(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    std::lock_guard lock(mutex);
    config_writes.emplace_back(offset, std::vector<std::uint8_t>(data.begin(), data.end()));
  }
  Result<void> activate(Activation a) override {
    std::lock_guard lock(mutex);
    ++activations;
    if (fail_activation) {
      return logic_error("fake activate", "told to fail");
    }
    activation = std::move(a);
    return {};
  }
  void reset() override {
    std::lock_guard lock(mutex);
    ++resets;
    activation.reset();
  }
  void queue_notify(std::uint16_t queue_index) override {
    std::lock_guard lock(mutex);
    notifies.push_back(queue_index);
    if (on_notify) {
      on_notify(queue_index);
    }
  }
  [[nodiscard]] std::string name() const override { return "fake-virtio"; }

  mutable std::recursive_mutex mutex;
  int activations = 0;
  int resets = 0;
  std::optional<Activation> activation;
  std::vector<std::uint16_t> notifies;
  mutable std::vector<std::pair<std::uint64_t, std::size_t>> config_reads;
  std::vector<std::pair<std::uint64_t, std::vector<std::uint8_t>>> config_writes;
};

class VirtioPci : public ::testing::Test {
 protected:
  VirtioPci() {
    auto region = memory::GuestMemoryRegion::create(memory::GuestAddress(0), kMemorySize);
    EXPECT_TRUE(region);
    EXPECT_TRUE(memory.add_region(std::move(*region)));
  }

  // Creates the transport for `device` (which the test configured).
  void make() {
    auto created = VirtioPciDevice::create(device, memory, sink);
    ASSERT_TRUE(created) << created.error().message();
    pci = *created;
    driver.emplace(*pci);
  }

  // The driver's register accesses (vmm::testing::VirtioPciDriver), as fixture members so tests read like a driver.
  std::uint64_t read(std::uint64_t offset, std::size_t size, std::size_t bar = VirtioPciDevice::kRegionsBar) {
    return driver->read(offset, size, bar);
  }
  void write(std::uint64_t offset, std::uint64_t value, std::size_t size,
             std::size_t bar = VirtioPciDevice::kRegionsBar) {
    driver->write(offset, value, size, bar);
  }
  std::uint32_t cfg_read(std::uint16_t offset, std::size_t size) { return driver->config_read(offset, size); }
  void cfg_write(std::uint16_t offset, std::uint32_t value, std::size_t size) {
    driver->config_write(offset, value, size);
  }
  std::uint8_t status() { return driver->status(); }
  void set_status(std::uint8_t value) { driver->set_status(value); }
  void add_status(std::uint8_t bits) { driver->add_status(bits); }
  void write_features(std::uint64_t features) { driver->write_features(features); }
  void negotiate(std::uint64_t features = kVersion1) { driver->negotiate(features); }
  void program_queue(std::uint16_t index, const QueueLayout& layout) { driver->program_queue(index, layout); }
  void enable_queue(std::uint16_t index, const QueueLayout& layout = good_layout()) {
    driver->enable_queue(index, layout);
  }
  // The whole initialization: features, queue 0, DRIVER_OK.
  void bring_up(std::uint64_t features = kVersion1) {
    negotiate(features);
    enable_queue(0);
    add_status(kDriverOk);
    ASSERT_TRUE(pci->active());
  }
  void program_vector(std::uint16_t v, std::uint64_t address, std::uint32_t data) {
    driver->program_vector(v, address, data);
  }
  void enable_msix() {
    driver->enable_msix();
    ASSERT_TRUE(pci->msix().enabled());
  }

  // The virtio vendor capabilities in list order.
  std::vector<std::uint8_t> virtio_capabilities() {
    std::vector<std::uint8_t> offsets;
    for (const auto& cap : pci->config().capabilities()) {
      if (cap.id == PCI_CAP_ID_VNDR) {
        offsets.push_back(cap.offset);
      }
    }
    return offsets;
  }
  std::optional<std::uint8_t> find_virtio_capability(std::uint8_t cfg_type) {
    for (const std::uint8_t at : virtio_capabilities()) {
      if (pci->config().read8(at + offsetof(virtio_pci_cap, cfg_type)) == cfg_type) {
        return at;
      }
    }
    return std::nullopt;
  }

  memory::GuestMemory memory;
  FakeMsiSink sink;
  std::shared_ptr<FakeDevice> device = std::make_shared<FakeDevice>();
  std::shared_ptr<VirtioPciDevice> pci;
  std::optional<vmm::testing::VirtioPciDriver> driver;
};

// ---- Creation and PCI identity -----------------------------------------------------------------------------------

TEST_F(VirtioPci, CreateRefusesDevicesTheLayoutCannotHold) {
  const auto refused = [&](const std::string& what) {
    auto created = VirtioPciDevice::create(device, memory, sink);
    EXPECT_FALSE(created) << what;
    return created ? std::string() : created.error().message();
  };
  EXPECT_FALSE(VirtioPciDevice::create(nullptr, memory, sink));
  device->offered = kEventIdx;
  EXPECT_THAT(refused("no VERSION_1"), HasSubstr("VIRTIO_F_VERSION_1"));
  device->offered = kCommonFeatures;
  device->sizes = {};
  EXPECT_THAT(refused("no queue"), HasSubstr("0 queues"));
  device->sizes = {16, 24};
  EXPECT_THAT(refused("size 24"), HasSubstr("queue 1 has size 24"));
  device->sizes = {0};
  refused("size 0");
  device->sizes.assign(128, 16);
  EXPECT_THAT(refused("128 queues: 129 vectors do not fit below the PBA"), HasSubstr("128 queues"));
  device->sizes.assign(127, 16);
  EXPECT_TRUE(VirtioPciDevice::create(device, memory, sink)) << "127 queues and the config vector: 128 vectors fit";
  device->sizes = {16};
  device->config_bytes.assign(0x1001, 0);
  refused("configuration larger than its region");
}

TEST_F(VirtioPci, PciIdentity) {
  make();
  auto& config = pci->config();
  EXPECT_EQ(config.read16(PCI_VENDOR_ID), 0x1af4);
  EXPECT_EQ(config.read16(PCI_DEVICE_ID), 0x1040 + VIRTIO_ID_RNG);
  EXPECT_EQ(config.read8(PCI_REVISION_ID), 1) << "modern only";
  EXPECT_EQ(config.read16(PCI_SUBSYSTEM_VENDOR_ID), 0x1af4);
  EXPECT_EQ(config.read16(PCI_SUBSYSTEM_ID), 0x40);
  EXPECT_EQ(config.read32(PCI_CLASS_REVISION) >> 8, 0xff'00'00u) << "rng: unassigned class";
  EXPECT_EQ(config.read8(PCI_HEADER_TYPE), PCI_HEADER_TYPE_NORMAL);
  EXPECT_EQ(config.read16(PCI_STATUS) & PCI_STATUS_CAP_LIST, PCI_STATUS_CAP_LIST);
  const auto bars = pci->bars();
  ASSERT_EQ(bars.size(), 2u);
  EXPECT_EQ(bars[0].index, 0);
  EXPECT_EQ(bars[0].kind, pci::BarKind::Memory32);
  EXPECT_EQ(bars[0].size, 0x4000u);
  EXPECT_EQ(bars[1].index, 2);
  EXPECT_EQ(bars[1].kind, pci::BarKind::Memory32);
  EXPECT_EQ(bars[1].size, 0x1000u);
  EXPECT_EQ(pci->name(), "fake-virtio");
  EXPECT_EQ(&pci->device(), device.get());

  device->type = VIRTIO_ID_BLOCK;
  make();
  EXPECT_EQ(pci->config().read16(PCI_DEVICE_ID), 0x1042);
  EXPECT_EQ(pci->config().read32(PCI_CLASS_REVISION) >> 8, 0x01'00'00u) << "block: mass storage";
}

TEST_F(VirtioPci, CapabilitiesPointIntoTheBars) {
  device->sizes = {16, 32, 64};
  device->config_bytes.assign(12, 0);
  make();
  auto& config = pci->config();
  const auto caps = config.capabilities();
  ASSERT_EQ(caps.size(), 6u);
  EXPECT_EQ(caps[0].id, PCI_CAP_ID_MSIX) << "MSI-X first";
  EXPECT_EQ(caps[0].offset, pci->msix_capability());
  const std::uint8_t msix = caps[0].offset;
  EXPECT_EQ(config.read16(msix + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_QSIZE, 3) << "4 vectors: 3 queues + config";
  EXPECT_EQ(config.read32(msix + PCI_MSIX_TABLE), 0x0u | VirtioPciDevice::kMsixBar);
  EXPECT_EQ(config.read32(msix + PCI_MSIX_PBA), 0x800u | VirtioPciDevice::kMsixBar);
  EXPECT_EQ(pci->msix().vectors(), 4);

  struct Expected {
    std::uint8_t type;
    std::uint8_t cap_len;
    std::uint32_t offset;
    std::uint32_t length;
  };
  const std::vector<Expected> expected{
      {VIRTIO_PCI_CAP_COMMON_CFG, sizeof(virtio_pci_cap), 0x0, sizeof(virtio_pci_common_cfg)},
      {VIRTIO_PCI_CAP_NOTIFY_CFG, sizeof(virtio_pci_notify_cap), 0x3000, 3 * 4},
      {VIRTIO_PCI_CAP_ISR_CFG, sizeof(virtio_pci_cap), 0x1000, 1},
      {VIRTIO_PCI_CAP_DEVICE_CFG, sizeof(virtio_pci_cap), 0x2000, 12},
      {VIRTIO_PCI_CAP_PCI_CFG, sizeof(virtio_pci_cfg_cap), 0, 0},
  };
  for (std::size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(i);
    const std::uint8_t at = caps[i + 1].offset;
    EXPECT_EQ(caps[i + 1].id, PCI_CAP_ID_VNDR);
    EXPECT_EQ(at % 4, 0);
    EXPECT_EQ(config.read8(at + offsetof(virtio_pci_cap, cap_len)), expected[i].cap_len);
    EXPECT_EQ(config.read8(at + offsetof(virtio_pci_cap, cfg_type)), expected[i].type);
    EXPECT_EQ(config.read8(at + offsetof(virtio_pci_cap, bar)), 0);
    EXPECT_EQ(config.read32(at + offsetof(virtio_pci_cap, offset)), expected[i].offset);
    EXPECT_EQ(config.read32(at + offsetof(virtio_pci_cap, length)), expected[i].length);
  }
  const std::uint8_t notify = caps[2].offset;
  EXPECT_EQ(config.read32(notify + offsetof(virtio_pci_notify_cap, notify_off_multiplier)), 4u);
  // Each queue's notify_off is its index: its address is 0x3000 + 4 * index, inside the notify capability.
  for (std::uint16_t q = 0; q < 3; ++q) {
    write(kQSelect, q, 2);
    EXPECT_EQ(read(kQNotifyOff, 2), q);
  }
  EXPECT_EQ(read(kNumQueues, 2), 3u);
}

TEST_F(VirtioPci, NoDeviceConfigurationCapabilityWithoutConfiguration) {
  make();
  EXPECT_EQ(virtio_capabilities().size(), 4u);
  EXPECT_FALSE(find_virtio_capability(VIRTIO_PCI_CAP_DEVICE_CFG));
  EXPECT_TRUE(find_virtio_capability(VIRTIO_PCI_CAP_PCI_CFG));
  EXPECT_EQ(read(VirtioPciDevice::kDeviceConfigOffset, 4), 0u);
  write(VirtioPciDevice::kDeviceConfigOffset, 0x1234, 4);
  EXPECT_TRUE(device->config_reads.empty());
  EXPECT_TRUE(device->config_writes.empty());
}

TEST_F(VirtioPci, DeviceConfigurationIsForwardedWithinItsSize) {
  device->config_bytes = {0x10, 0x11, 0x12, 0x13, 0x14, 0x15};
  make();
  constexpr std::uint64_t kAt = VirtioPciDevice::kDeviceConfigOffset;
  EXPECT_EQ(read(kAt, 4), 0x1312'1110u);
  EXPECT_EQ(read(kAt + 5, 1), 0x15u);
  EXPECT_EQ(read(kAt + 2, 2), 0x1312u);
  EXPECT_EQ(read(kAt + 4, 4), 0x1514u) << "the two bytes past config_size read 0, not what the device would say";
  EXPECT_EQ(read(kAt + 8, 4), 0u);
  EXPECT_EQ(read(kAt + 1, 2), 0u) << "misaligned";
  EXPECT_EQ(read(kAt, 3), 0u) << "odd size";
  EXPECT_EQ(device->config_reads, (std::vector<std::pair<std::uint64_t, std::size_t>>{{0, 4}, {5, 1}, {2, 2}, {4, 2}}));
  write(kAt + 2, 0xabcd, 2);
  write(kAt + 4, 0x0102'0304, 4);
  write(kAt + 1, 0xff, 2);
  EXPECT_EQ(device->config_writes,
            (std::vector<std::pair<std::uint64_t, std::vector<std::uint8_t>>>{{2, {0xcd, 0xab}}, {4, {0x04, 0x03}}}));
}

// ---- Features ----------------------------------------------------------------------------------------------------

TEST_F(VirtioPci, FeaturePagesAreReadAndWritten32BitsAtATime) {
  device->offered = kCommonFeatures | (1ULL << 3) | (1ULL << 45);
  make();
  EXPECT_EQ(read(kDf, 4), device->offered & 0xffff'ffff) << "page 0 selected at reset";
  write(kDfSelect, 1, 4);
  EXPECT_EQ(read(kDfSelect, 4), 1u);
  EXPECT_EQ(read(kDf, 4), device->offered >> 32);
  write(kDfSelect, 2, 4);
  EXPECT_EQ(read(kDf, 4), 0u);
  write(kDfSelect, 0xffff'ffff, 4);
  EXPECT_EQ(read(kDf, 4), 0u);

  write(kGfSelect, 1, 4);
  write(kGf, kVersion1 >> 32, 4);
  write(kGfSelect, 0, 4);
  write(kGf, kEventIdx | (1ULL << 3), 4);
  write(kGfSelect, 2, 4);
  write(kGf, 0xffff'ffff, 4);
  EXPECT_EQ(read(kGf, 4), 0u) << "no feature bits past 63";
  EXPECT_EQ(pci->driver_features(), kVersion1 | kEventIdx | (1ULL << 3));
  write(kGfSelect, 1, 4);
  EXPECT_EQ(read(kGf, 4), kVersion1 >> 32);
  write(kGfSelect, 0, 4);
  EXPECT_EQ(read(kGf, 4), kEventIdx | (1ULL << 3));
  write(kDf, 0, 4);
  write(kDfSelect, 0, 4);
  EXPECT_EQ(read(kDf, 4), device->offered & 0xffff'ffff) << "device_feature is read-only";
}

TEST_F(VirtioPci, FeaturesOkIsRefusedWithoutVersion1) {
  make();
  add_status(kAck);
  add_status(kDriver);
  write_features(kEventIdx);
  add_status(kFeaturesOk);
  EXPECT_EQ(status(), kAck | kDriver) << "FEATURES_OK reads back clear: the driver must give up";
  ASSERT_TRUE(pci->last_error());
  EXPECT_THAT(pci->last_error()->message(), HasSubstr("VIRTIO_F_VERSION_1"));
  EXPECT_EQ(status() & kNeedsReset, 0) << "a refusal is not an error state";
}

TEST_F(VirtioPci, FeaturesOkIsRefusedWithBitsTheDeviceDoesNotOffer) {
  make();
  add_status(kAck | kDriver);
  write_features(kVersion1 | (1ULL << 5) | (1ULL << 50));
  add_status(kFeaturesOk);
  EXPECT_EQ(status(), kAck | kDriver);
  ASSERT_TRUE(pci->last_error());
  EXPECT_THAT(pci->last_error()->message(), HasSubstr("0x4000000000020"));
  // A subset of the offered features is accepted.
  write_features(kVersion1 | kIndirect);
  add_status(kFeaturesOk);
  EXPECT_EQ(status(), kAck | kDriver | kFeaturesOk);
}

TEST_F(VirtioPci, FeatureWritesAfterFeaturesOkAreIgnored) {
  make();
  negotiate(kVersion1 | kEventIdx);
  ASSERT_EQ(status() & kFeaturesOk, kFeaturesOk);
  write_features(kVersion1);
  EXPECT_EQ(pci->driver_features(), kVersion1 | kEventIdx);
}

// ---- The status machine ------------------------------------------------------------------------------------------

TEST_F(VirtioPci, StatusBitsAreAddedStepByStepAndNeverCleared) {
  make();
  EXPECT_EQ(status(), 0);
  set_status(kAck);
  EXPECT_EQ(status(), kAck);
  set_status(kAck | kDriver);
  EXPECT_EQ(status(), kAck | kDriver);
  set_status(kDriver);
  EXPECT_EQ(status(), kAck | kDriver) << "a write that clears ACKNOWLEDGE is ignored";
  write_features(kVersion1);
  set_status(kAck | kDriver | kFeaturesOk);
  EXPECT_EQ(status(), kAck | kDriver | kFeaturesOk);
  set_status(kAck | kFeaturesOk);
  EXPECT_EQ(status(), kAck | kDriver | kFeaturesOk);
  enable_queue(0);
  EXPECT_FALSE(pci->active());
  EXPECT_EQ(device->activations, 0);
  set_status(kAck | kDriver | kFeaturesOk | kDriverOk);
  EXPECT_EQ(status(), kAck | kDriver | kFeaturesOk | kDriverOk);
  EXPECT_TRUE(pci->active());
  EXPECT_EQ(device->activations, 1);
  set_status(kAck | kDriver | kFeaturesOk | kDriverOk);
  EXPECT_EQ(device->activations, 1) << "nothing new: no second activation";
  set_status(kAck | kDriver | kDriverOk);
  EXPECT_EQ(status(), kAck | kDriver | kFeaturesOk | kDriverOk) << "FEATURES_OK cannot be cleared";
  EXPECT_TRUE(pci->active());
  EXPECT_EQ(pci->status(), status());
}

TEST_F(VirtioPci, DriverOkWithoutFeaturesOkNeedsReset) {
  make();
  sink.clear();
  add_status(kAck | kDriver);
  write(kMsixConfig, 0, 2);
  program_vector(0, 0xfee0'0000, 0x41);
  enable_msix();
  add_status(kDriverOk);
  EXPECT_EQ(status(), kAck | kDriver | kNeedsReset);
  EXPECT_FALSE(pci->active());
  EXPECT_EQ(device->activations, 0);
  ASSERT_TRUE(pci->last_error());
  EXPECT_THAT(pci->last_error()->message(), HasSubstr("without FEATURES_OK"));
  EXPECT_EQ(sink.signals(), (std::vector<FakeMsiSink::Signal>{{{0xfee0'0000, 0x41}, 0}})) << "config vector";
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), VIRTIO_PCI_ISR_CONFIG);
  // Only a reset gets out of it: FEATURES_OK and DRIVER_OK are no longer accepted.
  write_features(kVersion1);
  add_status(kFeaturesOk);
  add_status(kDriverOk);
  EXPECT_EQ(status(), kAck | kDriver | kNeedsReset);
  EXPECT_EQ(device->activations, 0);
  set_status(0);
  EXPECT_EQ(status(), 0);
  bring_up();
}

TEST_F(VirtioPci, FailedIsRecordedAndLeavesTheDeviceAsItIs) {
  make();
  bring_up();
  add_status(kFailed);
  EXPECT_EQ(status(), kAck | kDriver | kFeaturesOk | kDriverOk | kFailed);
  EXPECT_TRUE(pci->active()) << "FAILED is the driver giving up: the device keeps running until the reset";
  EXPECT_EQ(device->resets, 0);
  set_status(0);
  EXPECT_EQ(device->resets, 1);

  // FAILED during initialization: nothing after it but a reset.
  add_status(kAck);
  add_status(kFailed);
  add_status(kDriver);
  EXPECT_EQ(status(), kAck | kFailed);
}

// Reset (writing 0) from each state the driver can leave the device in.
TEST_F(VirtioPci, ResetFromEveryState) {
  make();
  const std::vector<std::pair<std::string, std::function<void()>>> states{
      {"ACKNOWLEDGE", [&] { add_status(kAck); }},
      {"DRIVER", [&] { add_status(kAck | kDriver); }},
      {"FEATURES_OK", [&] { negotiate(kVersion1 | kEventIdx); }},
      {"queue enabled",
       [&] {
         negotiate();
         enable_queue(0, good_layout(8));
       }},
      {"DRIVER_OK", [&] { bring_up(kVersion1 | kIndirect); }},
      {"FAILED",
       [&] {
         add_status(kAck);
         add_status(kFailed);
       }},
      {"DEVICE_NEEDS_RESET",
       [&] {
         negotiate();
         enable_queue(0, good_layout(3));
       }},
  };
  int resets = 0;
  std::size_t records = 0;
  for (const auto& [name, enter] : states) {
    SCOPED_TRACE(name);
    write(kMsixConfig, 1, 2);
    write(kQSelect, 0, 2);
    write(kQVector, 1, 2);
    enter();
    ASSERT_NE(status(), 0);
    const bool was_active = pci->active();
    const std::uint64_t features = pci->driver_features();
    set_status(0);
    EXPECT_EQ(status(), 0);
    EXPECT_EQ(device->resets, ++resets) << "the device is reset";
    EXPECT_FALSE(pci->active());
    EXPECT_FALSE(device->activation);
    EXPECT_EQ(pci->driver_features(), 0u);
    EXPECT_EQ(read(kGf, 4), 0u);
    EXPECT_EQ(read(kMsixConfig, 2), VIRTIO_MSI_NO_VECTOR);
    EXPECT_EQ(read(kQSelect, 2), 0u);
    EXPECT_EQ(read(kQSize, 2), 16u) << "back to the maximum";
    EXPECT_EQ(read(kQEnable, 2), 0u);
    EXPECT_EQ(read(kQVector, 2), VIRTIO_MSI_NO_VECTOR);
    EXPECT_EQ(read(kQDescLo, 8), 0u);
    EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), 0u);
    EXPECT_EQ(pci->queue_layout(0),
              (QueueLayout{.size = 16, .descriptor_table = {}, .available_ring = {}, .used_ring = {}}));
    if (was_active) {
      ++records;
      ASSERT_EQ(pci->history().size(), records);
      EXPECT_EQ(pci->history().back().features, features);
    }
    EXPECT_EQ(pci->history().size(), records) << "only activations leave a record";
  }
  EXPECT_EQ(records, 1u);
  bring_up();  // and it works again
}

// ---- Queue configuration -----------------------------------------------------------------------------------------

TEST_F(VirtioPci, QueueFieldsFollowQueueSelect) {
  device->sizes = {16, 256};
  make();
  EXPECT_EQ(read(kQSize, 2), 16u) << "queue 0 selected: its maximum";
  write(kQSelect, 1, 2);
  EXPECT_EQ(read(kQSelect, 2), 1u);
  EXPECT_EQ(read(kQSize, 2), 256u);
  EXPECT_EQ(read(kQNotifyOff, 2), 1u);
  write(kQSize, 64, 2);
  write(kQDescLo, 0x1'2345'6000, 8);
  write(kQDriverLo, 0x7000, 4);
  write(kQDriverHi, 0x2, 4);
  write(kQDeviceLo, 0x8000, 4);
  EXPECT_EQ(read(kQSize, 2), 64u) << "a smaller size is the driver's choice";
  EXPECT_EQ(read(kQDescLo, 4), 0x2345'6000u);
  EXPECT_EQ(read(kQDescHi, 4), 0x1u);
  EXPECT_EQ(read(kQDriverLo, 8), 0x2'0000'7000u);
  EXPECT_EQ(pci->queue_layout(1), (QueueLayout{.size = 64,
                                               .descriptor_table = memory::GuestAddress(0x1'2345'6000),
                                               .available_ring = memory::GuestAddress(0x2'0000'7000),
                                               .used_ring = memory::GuestAddress(0x8000)}));
  write(kQSelect, 0, 2);
  EXPECT_EQ(read(kQSize, 2), 16u) << "queue 0 untouched";
  EXPECT_EQ(read(kQDescLo, 8), 0u);
  write(kQNotifyOff, 7, 2);
  EXPECT_EQ(read(kQNotifyOff, 2), 0u) << "read-only";
  write(kNumQueues, 9, 2);
  EXPECT_EQ(read(kNumQueues, 2), 2u) << "read-only";
  EXPECT_FALSE(pci->queue_layout(2));
}

TEST_F(VirtioPci, QueueSelectBeyondTheQueuesReadsZeroSizeAndIgnoresWrites) {
  make();
  write(kQSelect, 1, 2);
  EXPECT_EQ(read(kQSize, 2), 0u) << "queue_size 0: no such queue";
  EXPECT_EQ(read(kQEnable, 2), 0u);
  EXPECT_EQ(read(kQVector, 2), VIRTIO_MSI_NO_VECTOR);
  write(kQSize, 16, 2);
  write(kQDescLo, 0x1000, 8);
  write(kQVector, 0, 2);
  negotiate();
  write(kQSelect, 0xffff, 2);
  write(kQEnable, 1, 2);
  EXPECT_EQ(read(kQSize, 2), 0u);
  EXPECT_EQ(read(kQEnable, 2), 0u);
  EXPECT_EQ(read(kQDescLo, 8), 0u);
  EXPECT_EQ(status() & kNeedsReset, 0) << "nothing was enabled, nothing failed";
  write(kQSelect, 0, 2);
  EXPECT_EQ(read(kQDescLo, 8), 0u) << "queue 0 was not written either";
}

TEST_F(VirtioPci, QueueFieldsAreFrozenOnceEnabledOrAfterDriverOk) {
  device->sizes = {16, 16};
  make();
  negotiate();
  enable_queue(0);
  EXPECT_EQ(read(kQEnable, 2), 1u);
  write(kQSize, 8, 2);
  write(kQDescLo, 0x4'0000, 8);
  write(kQDeviceLo, 0x5'0000, 4);
  write(kQVector, 0, 2);
  EXPECT_EQ(pci->queue_layout(0), good_layout());
  EXPECT_EQ(read(kQVector, 2), VIRTIO_MSI_NO_VECTOR);
  write(kQEnable, 0, 2);
  EXPECT_EQ(read(kQEnable, 2), 1u) << "writing 0 is forbidden to the driver and ignored";

  add_status(kDriverOk);
  ASSERT_TRUE(pci->active());
  write(kQSelect, 1, 2);
  write(kQSize, 8, 2);
  write(kQDescLo, 0x4'0000, 8);
  write(kQVector, 1, 2);
  write(kQEnable, 1, 2);
  EXPECT_EQ(read(kQSize, 2), 16u) << "after DRIVER_OK, even a disabled queue's fields are frozen";
  EXPECT_EQ(read(kQDescLo, 8), 0u);
  EXPECT_EQ(read(kQVector, 2), VIRTIO_MSI_NO_VECTOR);
  EXPECT_EQ(read(kQEnable, 2), 0u);
}

// Each invalid queue_enable: the queue stays disabled, DEVICE_NEEDS_RESET, the reason kept, a config interrupt.
TEST_F(VirtioPci, QueueEnableValidationFailuresNeedReset) {
  make();
  program_vector(1, 0xfee0'1000, 0x55);
  enable_msix();
  struct Case {
    std::string name;
    QueueLayout layout;
    std::string reason;
    bool features_ok = true;
  };
  const auto with = [](std::function<void(QueueLayout&)> change) {
    QueueLayout layout = good_layout();
    change(layout);
    return layout;
  };
  const std::vector<Case> cases{
      {"before FEATURES_OK", good_layout(), "before FEATURES_OK", false},
      {"size 0", good_layout(0), "size 0"},
      {"size not a power of two", good_layout(12), "not a power of two"},
      {"size above the maximum", good_layout(32), "larger than the maximum"},
      {"descriptor table misaligned", with([](QueueLayout& l) { l.descriptor_table = memory::GuestAddress(0x1008); }),
       "descriptor table"},
      {"available ring misaligned", with([](QueueLayout& l) { l.available_ring = memory::GuestAddress(0x2001); }),
       "available ring"},
      {"used ring misaligned", with([](QueueLayout& l) { l.used_ring = memory::GuestAddress(0x3002); }), "used ring"},
      {"descriptor table outside memory",
       with([](QueueLayout& l) { l.descriptor_table = memory::GuestAddress(kMemorySize - 0x80); }),
       "not inside guest memory"},
      {"used ring past 2^64", with([](QueueLayout& l) { l.used_ring = memory::GuestAddress(0xffff'ffff'ffff'fff0); }),
       "used ring"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    sink.clear();
    set_status(0);
    write(kMsixConfig, 1, 2);
    if (c.features_ok) {
      negotiate();
    } else {
      add_status(kAck | kDriver);
      write_features(kVersion1);
    }
    enable_queue(0, c.layout);
    EXPECT_EQ(read(kQEnable, 2), 0u);
    EXPECT_EQ(status() & kNeedsReset, kNeedsReset);
    ASSERT_TRUE(pci->last_error());
    EXPECT_THAT(pci->last_error()->message(), HasSubstr(c.reason));
    EXPECT_EQ(sink.signals(), (std::vector<FakeMsiSink::Signal>{{{0xfee0'1000, 0x55}, 1}}));
    EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), VIRTIO_PCI_ISR_CONFIG);
    add_status(kDriverOk);
    EXPECT_EQ(device->activations, 0) << "a device needing reset is not activated";
  }
}

// ---- Activation --------------------------------------------------------------------------------------------------

TEST_F(VirtioPci, DriverOkActivatesWithTheNegotiatedFeaturesAndEnabledQueues) {
  device->offered = kCommonFeatures | (1ULL << 1);
  device->sizes = {16, 16, 32};
  make();
  negotiate(kVersion1 | kEventIdx | (1ULL << 1));
  enable_queue(0, good_layout(8, 0x1'0000));
  enable_queue(2, good_layout(32, 0x2'0000));
  add_status(kDriverOk);
  ASSERT_TRUE(pci->active());
  ASSERT_EQ(device->activations, 1);
  ASSERT_TRUE(device->activation);
  const Activation& a = *device->activation;
  EXPECT_EQ(a.memory, &memory);
  EXPECT_EQ(a.features, kVersion1 | kEventIdx | (1ULL << 1));
  ASSERT_EQ(a.queues.size(), 3u);
  ASSERT_TRUE(a.queues[0]);
  EXPECT_EQ(a.queues[0]->layout(), good_layout(8, 0x1'0000));
  EXPECT_TRUE(a.queues[0]->features().event_idx);
  EXPECT_FALSE(a.queues[0]->features().indirect) << "offered, not accepted";
  EXPECT_FALSE(a.queues[1]) << "not enabled";
  ASSERT_TRUE(a.queues[2]);
  EXPECT_EQ(a.queues[2]->size(), 32);
  EXPECT_TRUE(a.interrupt);
  EXPECT_TRUE(a.needs_reset);
  write(kQSelect, 2, 2);
  EXPECT_EQ(read(kQEnable, 2), 1u) << "still reads enabled once handed over";
  // The queues share their counters with the transport.
  a.queues[2]->counters().chains.fetch_add(3);
  EXPECT_EQ(pci->counters().at(2).chains, 3u);
}

TEST_F(VirtioPci, ActivationErrorNeedsReset) {
  device->fail_activation = true;
  make();
  write(kMsixConfig, 0, 2);
  program_vector(0, 0xfee0'0000, 0x30);
  enable_msix();
  negotiate();
  enable_queue(0);
  add_status(kDriverOk);
  EXPECT_EQ(device->activations, 1);
  EXPECT_FALSE(pci->active());
  EXPECT_EQ(status(), kAck | kDriver | kFeaturesOk | kNeedsReset) << "DRIVER_OK refused";
  ASSERT_TRUE(pci->last_error());
  EXPECT_THAT(pci->last_error()->message(), HasSubstr("told to fail"));
  EXPECT_EQ(sink.signals(), (std::vector<FakeMsiSink::Signal>{{{0xfee0'0000, 0x30}, 0}}));
  write(VirtioPciDevice::kNotifyOffset, 0, 2);
  EXPECT_TRUE(device->notifies.empty());
  set_status(0);
  EXPECT_TRUE(pci->history().empty()) << "a failed activation leaves no record";
}

// ---- Notifications -----------------------------------------------------------------------------------------------

TEST_F(VirtioPci, NotifyCountsAndCallsTheDevice) {
  device->sizes = {16, 16, 16};
  make();
  negotiate();
  enable_queue(0);
  enable_queue(2, good_layout(16, 0x2'0000));
  add_status(kDriverOk);
  ASSERT_TRUE(pci->active());
  constexpr std::uint64_t kAt = VirtioPciDevice::kNotifyOffset;
  write(kAt + 0, 0, 2);
  write(kAt + 8, 2, 2);
  write(kAt + 8, 2, 4);
  write(kAt + 4, 1, 2);   // queue 1 is not enabled
  write(kAt + 12, 3, 2);  // no queue 3
  write(kAt + 2, 0, 2);   // between two notify addresses
  write(kAt + 0, 0, 1);   // a byte
  write(kAt + 0, 0, 8);   // a qword
  EXPECT_EQ(device->notifies, (std::vector<std::uint16_t>{0, 2, 2}));
  const auto counters = pci->counters();
  ASSERT_EQ(counters.size(), 3u);
  EXPECT_EQ(counters[0].notifications, 1u);
  EXPECT_EQ(counters[1].notifications, 0u);
  EXPECT_EQ(counters[2].notifications, 2u);
  EXPECT_EQ(read(kAt, 2), 0u) << "the notify area reads 0";
}

TEST_F(VirtioPci, NotifyBeforeDriverOkIsIgnored) {
  make();
  negotiate();
  enable_queue(0);
  write(VirtioPciDevice::kNotifyOffset, 0, 2);
  EXPECT_TRUE(device->notifies.empty());
  EXPECT_EQ(pci->counters().at(0).notifications, 0u);
  add_status(kDriverOk);
  write(VirtioPciDevice::kNotifyOffset, 0, 2);
  EXPECT_EQ(device->notifies, (std::vector<std::uint16_t>{0}));
  set_status(0);
  write(VirtioPciDevice::kNotifyOffset, 0, 2);
  EXPECT_EQ(device->notifies.size(), 1u) << "nor after the reset";
}

// The device calls back into the transport from queue_notify (with its own lock held): no deadlock.
TEST_F(VirtioPci, QueueNotifyMayCallBackIntoTheTransport) {
  make();
  program_vector(1, 0xfee0'0000, 0x61);
  enable_msix();
  negotiate();
  write(kQSelect, 0, 2);
  write(kQVector, 1, 2);
  enable_queue(0);
  add_status(kDriverOk);
  device->on_notify = [&](std::uint16_t q) {
    EXPECT_TRUE(device->activation->interrupt->signal_queue(q));
    device->activation->needs_reset(Error{"fake", 0, "bad chain"});
  };
  write(VirtioPciDevice::kNotifyOffset, 0, 2);
  EXPECT_EQ(pci->counters().at(0).interrupts, 1u);
  EXPECT_EQ(status() & kNeedsReset, kNeedsReset);
  EXPECT_EQ(sink.signals().size(), 1u) << "queue vector only: no config vector chosen";
}

// A vCPU kicking in a loop while another resets and re-initializes the device: every notification lands inside an
// activation, and each one is counted in the activation that received it.
TEST_F(VirtioPci, NotificationsRacingResetsOnlyReachAnActiveDevice) {
  make();
  int outside = 0;  // guarded by the device's lock
  device->on_notify = [&](std::uint16_t q) {
    if (!device->activation) {
      ++outside;
    } else {
      EXPECT_TRUE(device->activation->interrupt->signal_queue(q));
    }
  };
  std::atomic<bool> stop{false};
  std::thread kicker([&] {
    while (!stop.load()) {
      write(VirtioPciDevice::kNotifyOffset, 0, 2);
    }
  });
  constexpr int kRounds = 200;
  for (int i = 0; i < kRounds; ++i) {
    bring_up();
    set_status(0);
  }
  stop.store(true);
  kicker.join();
  std::lock_guard lock(device->mutex);
  EXPECT_EQ(outside, 0);
  const auto history = pci->history();
  ASSERT_EQ(history.size(), static_cast<std::size_t>(kRounds));
  std::uint64_t counted = 0;
  for (const auto& record : history) {
    EXPECT_EQ(record.queues.at(0).notifications, record.queues.at(0).interrupts);
    counted += record.queues.at(0).notifications;
  }
  EXPECT_EQ(counted, device->notifies.size());
}

// ---- Interrupts --------------------------------------------------------------------------------------------------

TEST_F(VirtioPci, MsixVectorsOutsideTheTableReadBackNoVector) {
  device->sizes = {16, 16};
  make();
  EXPECT_EQ(read(kMsixConfig, 2), VIRTIO_MSI_NO_VECTOR) << "none chosen at reset";
  EXPECT_EQ(read(kQVector, 2), VIRTIO_MSI_NO_VECTOR);
  write(kMsixConfig, 2, 2);
  EXPECT_EQ(read(kMsixConfig, 2), 2u);
  write(kMsixConfig, 3, 2);
  EXPECT_EQ(read(kMsixConfig, 2), VIRTIO_MSI_NO_VECTOR) << "3 vectors: 0..2";
  write(kQSelect, 1, 2);
  write(kQVector, 0, 2);
  EXPECT_EQ(read(kQVector, 2), 0u);
  write(kQVector, 0x7ff, 2);
  EXPECT_EQ(read(kQVector, 2), VIRTIO_MSI_NO_VECTOR);
  write(kQVector, 1, 2);
  write(kQVector, VIRTIO_MSI_NO_VECTOR, 2);
  EXPECT_EQ(read(kQVector, 2), VIRTIO_MSI_NO_VECTOR) << "the driver may give a vector up";
  write(kQSelect, 0, 2);
  EXPECT_EQ(read(kQVector, 2), VIRTIO_MSI_NO_VECTOR) << "per queue";
}

TEST_F(VirtioPci, SignalQueueSendsTheProgrammedMessageAndSetsTheIsr) {
  device->sizes = {16, 16};
  make();
  program_vector(0, 0xfee0'0000, 0x40);
  program_vector(1, 0xfee0'1000, 0x41);
  program_vector(2, 0xfee0'2000, 0x42);
  enable_msix();
  negotiate();
  write(kMsixConfig, 0, 2);
  write(kQSelect, 0, 2);
  write(kQVector, 2, 2);
  enable_queue(0);
  write(kQSelect, 1, 2);
  write(kQVector, 1, 2);
  enable_queue(1, good_layout(16, 0x2'0000));
  add_status(kDriverOk);
  ASSERT_TRUE(device->activation);
  auto interrupt = device->activation->interrupt;

  ASSERT_TRUE(interrupt->signal_queue(1));
  EXPECT_EQ(sink.signals(), (std::vector<FakeMsiSink::Signal>{{{0xfee0'1000, 0x41}, 1}}));
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), 0x1u) << "the queue bit";
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), 0u) << "read-to-clear";
  ASSERT_TRUE(interrupt->signal_queue(0));
  ASSERT_TRUE(interrupt->signal_config());
  EXPECT_EQ(sink.signals(), (std::vector<FakeMsiSink::Signal>{
                                {{0xfee0'1000, 0x41}, 1}, {{0xfee0'2000, 0x42}, 2}, {{0xfee0'0000, 0x40}, 0}}));
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), 0x3u);
  EXPECT_EQ(pci->counters().at(0).interrupts, 1u);
  EXPECT_EQ(pci->counters().at(1).interrupts, 1u);

  // A masked vector: pending, not sent; still a success.
  write(PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, PCI_MSIX_ENTRY_CTRL_MASKBIT, 4, VirtioPciDevice::kMsixBar);
  ASSERT_TRUE(interrupt->signal_queue(1));
  EXPECT_EQ(sink.signals().size(), 3u);
  EXPECT_TRUE(pci->msix().pending(1));
  EXPECT_EQ(pci->counters().at(1).interrupts, 2u);
  // A sink failure is the device's to see.
  sink.set_fail(true);
  EXPECT_FALSE(interrupt->signal_queue(0));
  EXPECT_EQ(pci->counters().at(0).interrupts, 1u) << "not sent, not counted";
  EXPECT_FALSE(interrupt->signal_queue(2)) << "no such queue";
}

TEST_F(VirtioPci, WithoutMsixOnlyTheIsrRecordsInterrupts) {
  make();
  bring_up();
  auto interrupt = device->activation->interrupt;
  ASSERT_TRUE(interrupt->signal_queue(0));
  ASSERT_TRUE(interrupt->signal_config());
  EXPECT_TRUE(sink.signals().empty());
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 2), 0u) << "a word read is not an ISR read and clears nothing";
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset + 1, 1), 0u);
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), 0x3u);
  write(VirtioPciDevice::kIsrOffset, 0x3, 1);
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), 0u);
}

TEST_F(VirtioPci, DeviceReportedErrorsNeedResetUntilTheNextReset) {
  make();
  program_vector(0, 0xfee0'0000, 0x40);
  enable_msix();
  write(kMsixConfig, 0, 2);
  bring_up();
  auto report = device->activation->needs_reset;
  report(Error{"virtqueue", 0, "available index jumped"});
  EXPECT_EQ(status(), kAck | kDriver | kFeaturesOk | kDriverOk | kNeedsReset);
  ASSERT_TRUE(pci->last_error());
  EXPECT_THAT(pci->last_error()->message(), HasSubstr("available index jumped"));
  EXPECT_EQ(sink.signals(), (std::vector<FakeMsiSink::Signal>{{{0xfee0'0000, 0x40}, 0}}));
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), VIRTIO_PCI_ISR_CONFIG);
  add_status(kFailed);
  EXPECT_EQ(status() & kFailed, kFailed);
  set_status(0);
  EXPECT_EQ(status(), 0);
  report(Error{"virtqueue", 0, "late"});
  EXPECT_EQ(status(), 0) << "a callback from an activation that a reset ended is ignored";
  EXPECT_EQ(sink.signals().size(), 1u);
}

// ---- History -----------------------------------------------------------------------------------------------------

TEST_F(VirtioPci, EachActivationEndsInTheHistory) {
  device->sizes = {16, 16};
  make();
  bring_up(kVersion1 | kEventIdx);
  write(VirtioPciDevice::kNotifyOffset, 0, 2);
  write(VirtioPciDevice::kNotifyOffset, 0, 2);
  ASSERT_TRUE(device->activation->interrupt->signal_queue(0));
  device->activation->queues[0]->counters().interrupts_suppressed.fetch_add(5);
  set_status(0);
  EXPECT_EQ(pci->counters(), (std::vector<QueueCountersSnapshot>(2))) << "cleared";

  bring_up(kVersion1);
  write(VirtioPciDevice::kNotifyOffset, 0, 2);
  set_status(0);

  const auto history = pci->history();
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].features, kVersion1 | kEventIdx);
  ASSERT_EQ(history[0].queues.size(), 2u);
  EXPECT_EQ(history[0].queues[0],
            (QueueCountersSnapshot{.notifications = 2, .interrupts = 1, .interrupts_suppressed = 5}));
  EXPECT_EQ(history[0].queues[1], QueueCountersSnapshot{});
  EXPECT_EQ(history[1].features, kVersion1);
  EXPECT_EQ(history[1].queues[0], QueueCountersSnapshot{.notifications = 1});
}

TEST_F(VirtioPci, DestructionResetsAnActiveDevice) {
  make();
  bring_up();
  auto interrupt = device->activation->interrupt;
  auto report = device->activation->needs_reset;
  pci.reset();
  EXPECT_EQ(device->resets, 1);
  EXPECT_FALSE(interrupt->signal_queue(0)) << "a device that kept the interrupt gets an error, not a dangling pointer";
  EXPECT_FALSE(interrupt->signal_config());
  report(Error{"late", 0, ""});  // ignored
}

// ---- The PCI configuration access capability ---------------------------------------------------------------------

TEST_F(VirtioPci, PciCfgWindowReadsAndWritesTheBars) {
  device->offered = kCommonFeatures | (1ULL << 40);
  make();
  const auto found = find_virtio_capability(VIRTIO_PCI_CAP_PCI_CFG);
  ASSERT_TRUE(found);
  const auto cap = static_cast<std::uint16_t>(*found);
  const auto bar = static_cast<std::uint16_t>(cap + offsetof(virtio_pci_cap, bar));
  const auto offset = static_cast<std::uint16_t>(cap + offsetof(virtio_pci_cap, offset));
  const auto length = static_cast<std::uint16_t>(cap + offsetof(virtio_pci_cap, length));
  const auto data = static_cast<std::uint16_t>(cap + offsetof(virtio_pci_cfg_cap, pci_cfg_data));
  const auto window = [&](std::uint8_t b, std::uint32_t o, std::uint32_t l) {
    cfg_write(bar, b, 1);
    cfg_write(offset, o, 4);
    cfg_write(length, l, 4);
  };

  // Write device_feature_select = 1 through the window, then read device_feature.
  window(0, kDfSelect, 4);
  cfg_write(data, 1, 4);
  EXPECT_EQ(read(kDfSelect, 4), 1u);
  window(0, kDf, 4);
  EXPECT_EQ(cfg_read(data, 4), device->offered >> 32);
  EXPECT_EQ(pci->config().read32(data), device->offered >> 32) << "the bytes read are kept in pci_cfg_data";
  EXPECT_EQ(cfg_read(static_cast<std::uint16_t>(data + 1), 1), (device->offered >> 40) & 0xff)
      << "a partial read of the data";
  // Word and byte windows, the status machine through it.
  window(0, kNumQueues, 2);
  EXPECT_EQ(cfg_read(data, 2), 1u);
  window(0, kStatus, 1);
  cfg_write(data, kAck, 1);
  EXPECT_EQ(status(), kAck);
  EXPECT_EQ(cfg_read(data, 1), kAck);
  // The ISR through the window is read-to-clear too.
  bring_up();
  ASSERT_TRUE(device->activation->interrupt->signal_queue(0));
  window(0, VirtioPciDevice::kIsrOffset, 1);
  EXPECT_EQ(cfg_read(data, 1), 1u);
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), 0u);
  // Writes to the window's other fields do nothing on their own, whatever pci_cfg_data holds.
  write(kDfSelect, 0, 4);
  ASSERT_NE(pci->config().read32(data), 0u);
  window(0, kDfSelect, 4);
  EXPECT_EQ(read(kDfSelect, 4), 0u);
  // The window reaches the MSI-X BAR as well.
  window(VirtioPciDevice::kMsixBar, PCI_MSIX_ENTRY_DATA, 4);
  cfg_write(data, 0x77, 4);
  EXPECT_EQ(pci->msix().entry(0)->data, 0x77u);
}

TEST_F(VirtioPci, MalformedPciCfgWindowsReadZeroAndWriteNothing) {
  make();
  const auto found = find_virtio_capability(VIRTIO_PCI_CAP_PCI_CFG);
  ASSERT_TRUE(found);
  const auto cap = static_cast<std::uint16_t>(*found);
  const auto data = static_cast<std::uint16_t>(cap + offsetof(virtio_pci_cfg_cap, pci_cfg_data));
  const auto window = [&](std::uint8_t b, std::uint32_t o, std::uint32_t l) {
    cfg_write(static_cast<std::uint16_t>(cap + offsetof(virtio_pci_cap, bar)), b, 1);
    cfg_write(static_cast<std::uint16_t>(cap + offsetof(virtio_pci_cap, offset)), o, 4);
    cfg_write(static_cast<std::uint16_t>(cap + offsetof(virtio_pci_cap, length)), l, 4);
  };
  EXPECT_EQ(cfg_read(data, 4), 0u) << "length 0 at creation";
  window(0, kQSize, 3);
  EXPECT_EQ(cfg_read(data, 4), 0u) << "length 3";
  window(0, kQSize, 8);
  EXPECT_EQ(cfg_read(data, 4), 0u) << "length 8";
  window(0, kQSize + 1, 2);
  EXPECT_EQ(cfg_read(data, 4), 0u) << "misaligned";
  window(0, kStatus, 2);
  cfg_write(data, kAck, 4);
  EXPECT_EQ(status(), 0) << "a word at an 8-bit field: ignored by the common configuration";
  window(0, 0x1'0000, 4);
  EXPECT_EQ(cfg_read(data, 4), 0u) << "past the BAR";
  window(5, 0, 4);
  EXPECT_EQ(cfg_read(data, 4), 0u) << "no BAR5";
  window(0, kQSize, 2);
  EXPECT_EQ(cfg_read(data, 4), 16u) << "and a good window still works";
  EXPECT_EQ(cfg_read(static_cast<std::uint16_t>(data - 4), 4), 2u) << "cap.length itself, not the window";
}

// ---- Malformed BAR accesses --------------------------------------------------------------------------------------

TEST_F(VirtioPci, MalformedBarAccessesAreIgnored) {
  make();
  // Common configuration: wrong widths, offsets inside a field, reserved space.
  EXPECT_EQ(read(kNumQueues, 1), 0u);
  EXPECT_EQ(read(kNumQueues, 4), 0u);
  EXPECT_EQ(read(kStatus, 2), 0u);
  EXPECT_EQ(read(kDf + 1, 1), 0u);
  EXPECT_EQ(read(kQSize, 8), 0u);
  EXPECT_EQ(read(kQDescHi, 8), 0u) << "a qword at the high half";
  EXPECT_EQ(read(sizeof(virtio_pci_common_cfg), 2), 0u) << "past the structure (queue_notify_data is not offered)";
  EXPECT_EQ(read(0xffe, 2), 0u);
  EXPECT_EQ(read(kDf, 0), 0u);
  write(kStatus, kAck, 2);
  write(kStatus, kAck, 4);
  write(kQSize, 4, 1);
  write(kQSize, 4, 4);
  write(kQSize + 1, 4, 1);
  write(kQDescHi, 0x1000, 8);
  write(kGeneration, 5, 1);
  EXPECT_EQ(status(), 0);
  EXPECT_EQ(read(kQSize, 2), 16u);
  EXPECT_EQ(read(kQDescLo, 8), 0u);
  EXPECT_EQ(read(kGeneration, 1), 0u);
  // Across regions, past the BAR, offsets near 2^64, other BARs.
  EXPECT_EQ(read(0xffe, 4), 0u);
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset - 1, 2), 0u);
  EXPECT_EQ(read(0x4000, 4), 0u);
  EXPECT_EQ(read(0x3ffe, 4), 0u);
  EXPECT_EQ(read(0xffff'ffff'ffff'fffe, 4), 0u);
  EXPECT_EQ(read(0, 4, 1), 0u);
  EXPECT_EQ(read(0, 4, 7), 0u);
  write(0xffff'ffff'ffff'fffc, 1, 8);
  write(0, 1, 4, 1);
  write(0, 1, 4, 5);
  write(VirtioPciDevice::kNotifyOffset - 1, 0, 2);
  // The MSI-X BAR: only aligned dwords and qwords; the PBA is read-only.
  EXPECT_EQ(read(PCI_MSIX_ENTRY_VECTOR_CTRL, 4, VirtioPciDevice::kMsixBar), PCI_MSIX_ENTRY_CTRL_MASKBIT);
  EXPECT_EQ(read(PCI_MSIX_ENTRY_VECTOR_CTRL, 1, VirtioPciDevice::kMsixBar), 0xffu);
  write(VirtioPciDevice::kMsixPbaOffset, 0xffff'ffff, 4, VirtioPciDevice::kMsixBar);
  EXPECT_EQ(read(VirtioPciDevice::kMsixPbaOffset, 4, VirtioPciDevice::kMsixBar), 0u);
  EXPECT_EQ(read(0xfff, 1, VirtioPciDevice::kMsixBar), 0xffu);
  EXPECT_EQ(read(0xffff'ffff'ffff'fff0, 8, VirtioPciDevice::kMsixBar), 0xffff'ffff'ffff'ffffu);
  // Nothing of it reached the device or changed the transport.
  EXPECT_EQ(device->activations, 0);
  EXPECT_EQ(device->resets, 0);
  EXPECT_TRUE(device->notifies.empty());
  EXPECT_EQ(pci->driver_features(), 0u);
  EXPECT_EQ(pci->queue_layout(0),
            (QueueLayout{.size = 16, .descriptor_table = {}, .available_ring = {}, .used_ring = {}}));
  EXPECT_FALSE(pci->last_error());
}

}  // namespace
}  // namespace vmm::virtio
