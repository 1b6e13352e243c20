#include "vmm/virtio/virtio_pci_device.hpp"

#include <linux/pci_regs.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstring>
#include <shared_mutex>
#include <utility>

#include <fmt/format.h>

#include "vmm/devices/le_bytes.hpp"

namespace vmm::virtio {

namespace {

// The ISR's used-buffer bit (virtio 1.2, 4.1.4.5: bit 0). The UAPI header only names the configuration bit.
constexpr std::uint8_t kIsrQueue = 0x1;

// The status bits the driver owns; DEVICE_NEEDS_RESET is the device's.
constexpr std::uint8_t kDriverStatusBits = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                                           VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK |
                                           VIRTIO_CONFIG_S_FAILED;

// A split virtqueue has at most 32768 entries (virtio 1.2, 2.7).
constexpr std::uint16_t kMaxQueueSize = 32768;

// The offsets of the common configuration's fields, from the kernel's struct.
constexpr std::uint64_t kDeviceFeatureSelect = offsetof(virtio_pci_common_cfg, device_feature_select);
constexpr std::uint64_t kDeviceFeature = offsetof(virtio_pci_common_cfg, device_feature);
constexpr std::uint64_t kDriverFeatureSelect = offsetof(virtio_pci_common_cfg, guest_feature_select);
constexpr std::uint64_t kDriverFeature = offsetof(virtio_pci_common_cfg, guest_feature);
constexpr std::uint64_t kConfigMsixVector = offsetof(virtio_pci_common_cfg, msix_config);
constexpr std::uint64_t kNumQueues = offsetof(virtio_pci_common_cfg, num_queues);
constexpr std::uint64_t kDeviceStatus = offsetof(virtio_pci_common_cfg, device_status);
constexpr std::uint64_t kConfigGeneration = offsetof(virtio_pci_common_cfg, config_generation);
constexpr std::uint64_t kQueueSelect = offsetof(virtio_pci_common_cfg, queue_select);
constexpr std::uint64_t kQueueSize = offsetof(virtio_pci_common_cfg, queue_size);
constexpr std::uint64_t kQueueMsixVector = offsetof(virtio_pci_common_cfg, queue_msix_vector);
constexpr std::uint64_t kQueueEnable = offsetof(virtio_pci_common_cfg, queue_enable);
constexpr std::uint64_t kQueueNotifyOff = offsetof(virtio_pci_common_cfg, queue_notify_off);
constexpr std::uint64_t kQueueDescLo = offsetof(virtio_pci_common_cfg, queue_desc_lo);
constexpr std::uint64_t kQueueDescHi = offsetof(virtio_pci_common_cfg, queue_desc_hi);
constexpr std::uint64_t kQueueDriverLo = offsetof(virtio_pci_common_cfg, queue_avail_lo);
constexpr std::uint64_t kQueueDriverHi = offsetof(virtio_pci_common_cfg, queue_avail_hi);
constexpr std::uint64_t kQueueDeviceLo = offsetof(virtio_pci_common_cfg, queue_used_lo);
constexpr std::uint64_t kQueueDeviceHi = offsetof(virtio_pci_common_cfg, queue_used_hi);

// The width of the field at `offset` (0: no field starts there). 64-bit addresses count as two 32-bit halves here;
// `valid_common_access` also allows one 64-bit access at the low half.
constexpr std::size_t common_field_width(std::uint64_t offset) {
  switch (offset) {
    case kDeviceFeatureSelect:
    case kDeviceFeature:
    case kDriverFeatureSelect:
    case kDriverFeature:
    case kQueueDescLo:
    case kQueueDescHi:
    case kQueueDriverLo:
    case kQueueDriverHi:
    case kQueueDeviceLo:
    case kQueueDeviceHi:
      return 4;
    case kConfigMsixVector:
    case kNumQueues:
    case kQueueSelect:
    case kQueueSize:
    case kQueueMsixVector:
    case kQueueEnable:
    case kQueueNotifyOff:
      return 2;
    case kDeviceStatus:
    case kConfigGeneration:
      return 1;
    default:
      return 0;
  }
}

constexpr bool is_address_low(std::uint64_t offset) {
  return offset == kQueueDescLo || offset == kQueueDriverLo || offset == kQueueDeviceLo;
}

// Virtio 1.2, 4.1.3.1: each field at its own width, a 64-bit field as two dwords or one qword.
constexpr bool valid_common_access(std::uint64_t offset, std::size_t size) {
  const std::size_t width = common_field_width(offset);
  return width != 0 && (size == width || (size == 8 && is_address_low(offset)));
}

// [offset, offset + size) lies within [0, limit), without overflow.
constexpr bool fits(std::uint64_t offset, std::size_t size, std::uint64_t limit) {
  return offset < limit && size <= limit - offset;
}

// Replaces the low or high dword of `value`.
constexpr std::uint64_t with_dword(std::uint64_t value, bool high, std::uint32_t dword) {
  return high ? (value & 0xffff'ffffULL) | std::uint64_t{dword} << 32 : (value & ~0xffff'ffffULL) | dword;
}

// The bytes after the two-byte PCI header of a capability built as a kernel struct.
template <typename Cap>
std::vector<std::uint8_t> capability_body(const Cap& cap) {
  std::array<std::uint8_t, sizeof(Cap)> bytes{};
  std::memcpy(bytes.data(), &cap, sizeof(Cap));
  return {bytes.begin() + 2, bytes.end()};
}

virtio_pci_cap make_cap(std::uint8_t cfg_type, std::uint8_t cap_len, std::uint8_t bar, std::uint32_t offset,
                        std::uint32_t length) {
  virtio_pci_cap cap{};
  cap.cap_vndr = PCI_CAP_ID_VNDR;
  cap.cap_len = cap_len;
  cap.cfg_type = cfg_type;
  cap.bar = bar;
  cap.offset = offset;
  cap.length = length;
  return cap;
}

// The class code for a device type, as QEMU gives them (its virtio-*-pci devices): network controller for net,
// mass storage for block, "other communication" for console, "unassigned class" (0xff) for the rest (rng).
std::pair<std::uint8_t, std::uint8_t> class_of(std::uint16_t device_type) {
  switch (device_type) {
    case VIRTIO_ID_NET:
      return {0x02, 0x00};
    case VIRTIO_ID_BLOCK:
      return {0x01, 0x00};
    case VIRTIO_ID_CONSOLE:
      return {0x07, 0x80};
    default:
      return {0xff, 0x00};
  }
}

constexpr std::size_t kCfgCapBar = offsetof(virtio_pci_cfg_cap, cap) + offsetof(virtio_pci_cap, bar);
constexpr std::size_t kCfgCapOffset = offsetof(virtio_pci_cfg_cap, cap) + offsetof(virtio_pci_cap, offset);
constexpr std::size_t kCfgCapLength = offsetof(virtio_pci_cfg_cap, cap) + offsetof(virtio_pci_cap, length);
constexpr std::size_t kCfgCapData = offsetof(virtio_pci_cfg_cap, pci_cfg_data);
constexpr std::size_t kCfgDataSize = sizeof(virtio_pci_cfg_cap::pci_cfg_data);

}  // namespace

// What the device holds to notify the driver. It outlives nothing it points to: the transport detaches it when it is
// destroyed, after which a device that kept it (a bug) gets errors instead of a dangling pointer.
class VirtioPciDevice::Interrupt final : public VirtioInterrupt {
 public:
  explicit Interrupt(VirtioPciDevice& transport) : transport_(&transport) {}

  Result<void> signal_queue(std::uint16_t queue_index) override {
    std::shared_lock lock(mutex_);
    if (transport_ == nullptr) {
      return logic_error("virtio-pci signal_queue", "the transport is gone");
    }
    return transport_->raise_queue(queue_index);
  }
  Result<void> signal_config() override {
    std::shared_lock lock(mutex_);
    if (transport_ == nullptr) {
      return logic_error("virtio-pci signal_config", "the transport is gone");
    }
    return transport_->raise_config();
  }
  void needs_reset(std::uint64_t epoch, const Error& error) {
    std::shared_lock lock(mutex_);
    if (transport_ != nullptr) {
      transport_->device_error(epoch, error);
    }
  }
  void detach() {
    std::unique_lock lock(mutex_);
    transport_ = nullptr;
  }

 private:
  std::shared_mutex mutex_;
  VirtioPciDevice* transport_;
};

Result<std::shared_ptr<VirtioPciDevice>> VirtioPciDevice::create(std::shared_ptr<VirtioDevice> device,
                                                                 const memory::GuestMemory& memory,
                                                                 pci::MsiSink& sink) {
  if (!device) {
    return logic_error("virtio-pci create", "no device");
  }
  const std::string name = device->name();
  if (!has_feature(device->features(), VIRTIO_F_VERSION_1)) {
    return logic_error("virtio-pci create", fmt::format("{} does not offer VIRTIO_F_VERSION_1", name));
  }
  const auto sizes = device->queue_max_sizes();
  // One MSI-X vector per queue plus one for configuration changes, all in the table below the PBA.
  constexpr std::size_t kMaxQueues = (kMsixPbaOffset - kMsixTableOffset) / PCI_MSIX_ENTRY_SIZE - 1;
  if (sizes.empty() || sizes.size() > kMaxQueues) {
    return logic_error("virtio-pci create",
                       fmt::format("{} declares {} queues (1 to {} fit)", name, sizes.size(), kMaxQueues));
  }
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (!std::has_single_bit(sizes[i]) || sizes[i] > kMaxQueueSize) {
      return logic_error("virtio-pci create", fmt::format("{} queue {} has size {}, not a power of two in [1, {}]",
                                                          name, i, sizes[i], kMaxQueueSize));
    }
  }
  if (device->config_size() > kRegionSize) {
    return logic_error("virtio-pci create", fmt::format("{} has {} bytes of configuration ({} fit)", name,
                                                        device->config_size(), kRegionSize));
  }
  const auto vectors = static_cast<std::uint16_t>(sizes.size() + 1);
  auto table = pci::MsixTable::create(vectors, sink);
  if (!table) {
    return std::unexpected(std::move(table).error().with_context(name));
  }
  std::shared_ptr<VirtioPciDevice> transport(new VirtioPciDevice(std::move(device), memory, std::move(*table)));
  VirtioPciDevice& t = *transport;
  auto fail = [&](Error error) { return std::unexpected(std::move(error).with_context(name)); };

  pci::ConfigSpace& config = t.config_;
  const auto [class_code, subclass] = class_of(t.device_->device_type());
  config.set_header(kVendorId, static_cast<std::uint16_t>(kDeviceIdBase + t.device_->device_type()), class_code,
                    subclass, 0x00, 0x01, PCI_HEADER_TYPE_NORMAL);
  config.set16(PCI_SUBSYSTEM_VENDOR_ID, kVendorId);
  config.set16(PCI_SUBSYSTEM_ID, kSubsystemId);
  for (const pci::Bar& bar : {pci::Bar{.index = kRegionsBar, .kind = pci::BarKind::Memory32, .size = kRegionsBarSize},
                              pci::Bar{.index = kMsixBar, .kind = pci::BarKind::Memory32, .size = kMsixBarSize}}) {
    if (auto ok = config.add_bar(bar); !ok) {
      return fail(std::move(ok).error());
    }
  }

  const pci::MsixCapability msix{.vectors = vectors,
                                 .table_bar = kMsixBar,
                                 .table_offset = kMsixTableOffset,
                                 .pba_bar = kMsixBar,
                                 .pba_offset = kMsixPbaOffset};
  auto msix_offset = msix.add_to(config);
  if (!msix_offset) {
    return fail(std::move(msix_offset).error());
  }
  t.msix_capability_ = *msix_offset;

  constexpr auto kCapLen = static_cast<std::uint8_t>(sizeof(virtio_pci_cap));
  virtio_pci_notify_cap notify{};
  notify.cap = make_cap(VIRTIO_PCI_CAP_NOTIFY_CFG, sizeof(virtio_pci_notify_cap), kRegionsBar, kNotifyOffset,
                        static_cast<std::uint32_t>(sizes.size() * kNotifyOffMultiplier));
  notify.notify_off_multiplier = kNotifyOffMultiplier;
  std::vector<std::vector<std::uint8_t>> bodies;
  bodies.push_back(capability_body(
      make_cap(VIRTIO_PCI_CAP_COMMON_CFG, kCapLen, kRegionsBar, kCommonOffset, sizeof(virtio_pci_common_cfg))));
  bodies.push_back(capability_body(notify));
  bodies.push_back(capability_body(make_cap(VIRTIO_PCI_CAP_ISR_CFG, kCapLen, kRegionsBar, kIsrOffset, 1)));
  if (t.config_size_ > 0) {
    bodies.push_back(capability_body(make_cap(VIRTIO_PCI_CAP_DEVICE_CFG, kCapLen, kRegionsBar, kDeviceConfigOffset,
                                              static_cast<std::uint32_t>(t.config_size_))));
  }
  for (const auto& body : bodies) {
    if (auto offset = config.add_capability(PCI_CAP_ID_VNDR, body); !offset) {
      return fail(std::move(offset).error());
    }
  }

  // The PCI configuration access capability: bar, offset, length and the data window are the driver's to write.
  virtio_pci_cfg_cap cfg{};
  cfg.cap = make_cap(VIRTIO_PCI_CAP_PCI_CFG, sizeof(virtio_pci_cfg_cap), 0, 0, 0);
  const auto cfg_body = capability_body(cfg);
  std::vector<std::uint8_t> writable(cfg_body.size(), 0);
  auto make_writable = [&](std::size_t offset, std::size_t size) {
    std::fill_n(writable.begin() + static_cast<std::ptrdiff_t>(offset - 2), size, std::uint8_t{0xff});
  };
  make_writable(kCfgCapBar, 1);
  make_writable(kCfgCapOffset, 4);
  make_writable(kCfgCapLength, 4);
  make_writable(kCfgCapData, kCfgDataSize);
  auto cfg_offset = config.add_capability(PCI_CAP_ID_VNDR, cfg_body, writable);
  if (!cfg_offset) {
    return fail(std::move(cfg_offset).error());
  }
  t.pci_cfg_capability_ = *cfg_offset;
  return transport;
}

VirtioPciDevice::VirtioPciDevice(std::shared_ptr<VirtioDevice> device, const memory::GuestMemory& memory,
                                 std::unique_ptr<pci::MsixTable> msix)
    : device_(std::move(device)),
      memory_(memory),
      name_(device_->name()),
      offered_features_(device_->features()),
      config_size_(device_->config_size()),
      msix_(std::move(msix)),
      interrupt_(std::make_shared<Interrupt>(*this)) {
  for (const std::uint16_t max_size : device_->queue_max_sizes()) {
    QueueSlot slot;
    slot.max_size = max_size;
    slot.layout.size = max_size;
    slot.counters = std::make_shared<QueueCounters>();
    queues_.push_back(std::move(slot));
  }
}

VirtioPciDevice::~VirtioPciDevice() {
  {
    std::lock_guard lifecycle(lifecycle_mutex_);
    bool was_active = false;
    {
      std::lock_guard lock(mutex_);
      was_active = active_;
      active_ = false;
    }
    if (was_active) {
      device_->reset();
    }
  }
  interrupt_->detach();
}

std::string VirtioPciDevice::name() const {
  return name_;
}

// ---- BAR accesses ------------------------------------------------------------------------------------------------

void VirtioPciDevice::bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) {
  std::ranges::fill(data, std::uint8_t{0});
  if (data.empty()) {
    return;
  }
  if (bar_index == kMsixBar) {
    if (offset >= kMsixPbaOffset) {
      msix_->read_pba(offset - kMsixPbaOffset, data);
    } else {
      msix_->read_table(offset - kMsixTableOffset, data);
    }
    return;
  }
  if (bar_index != kRegionsBar || !fits(offset, data.size(), kRegionsBarSize)) {
    return;
  }
  const std::uint64_t region = offset / kRegionSize * kRegionSize;
  const std::uint64_t within = offset - region;
  if (!fits(within, data.size(), kRegionSize)) {
    return;  // straddles two regions
  }
  switch (region) {
    case kCommonOffset:
      common_read(within, data);
      return;
    case kIsrOffset:
      isr_read(within, data);
      return;
    case kDeviceConfigOffset:
      device_config_read(within, data);
      return;
    default:
      return;  // the notification area reads 0
  }
}

void VirtioPciDevice::bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (data.empty()) {
    return;
  }
  if (bar_index == kMsixBar) {
    if (offset < kMsixPbaOffset) {
      msix_->write_table(offset - kMsixTableOffset, data);
    }
    return;  // the PBA is read-only
  }
  if (bar_index != kRegionsBar || !fits(offset, data.size(), kRegionsBarSize)) {
    return;
  }
  const std::uint64_t region = offset / kRegionSize * kRegionSize;
  const std::uint64_t within = offset - region;
  if (!fits(within, data.size(), kRegionSize)) {
    return;
  }
  switch (region) {
    case kCommonOffset:
      common_write(within, data);
      return;
    case kDeviceConfigOffset:
      device_config_write(within, data);
      return;
    case kNotifyOffset:
      notify_write(within, data.size());
      return;
    default:
      return;  // the ISR is read-only
  }
}

// ---- Common configuration ----------------------------------------------------------------------------------------

VirtioPciDevice::QueueSlot* VirtioPciDevice::selected_locked() {
  return queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
}

const VirtioPciDevice::QueueSlot* VirtioPciDevice::selected_locked() const {
  return queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
}

std::uint64_t VirtioPciDevice::common_value_locked(std::uint64_t offset) const {
  const QueueSlot* slot = selected_locked();
  switch (offset) {
    case kDeviceFeatureSelect:
      return device_feature_select_;
    case kDeviceFeature:
      return device_feature_select_ < 2 ? (offered_features_ >> (32 * device_feature_select_)) & 0xffff'ffff : 0;
    case kDriverFeatureSelect:
      return driver_feature_select_;
    case kDriverFeature:
      return driver_feature_select_ < 2 ? (driver_features_ >> (32 * driver_feature_select_)) & 0xffff'ffff : 0;
    case kConfigMsixVector:
      return config_msix_vector_;
    case kNumQueues:
      return queues_.size();
    case kDeviceStatus:
      return status_;
    case kConfigGeneration:
      return config_generation_;
    case kQueueSelect:
      return queue_select_;
    case kQueueSize:
      return slot != nullptr ? slot->layout.size : 0;  // 0: no such queue
    case kQueueMsixVector:
      return slot != nullptr ? slot->msix_vector : VIRTIO_MSI_NO_VECTOR;
    case kQueueEnable:
      return slot != nullptr && slot->enable_flag ? 1 : 0;
    case kQueueNotifyOff:
      return slot != nullptr ? queue_select_ : 0;
    case kQueueDescLo:
    case kQueueDescHi:
      return slot == nullptr ? 0 : slot->layout.descriptor_table.raw() >> (offset == kQueueDescHi ? 32 : 0);
    case kQueueDriverLo:
    case kQueueDriverHi:
      return slot == nullptr ? 0 : slot->layout.available_ring.raw() >> (offset == kQueueDriverHi ? 32 : 0);
    case kQueueDeviceLo:
    case kQueueDeviceHi:
      return slot == nullptr ? 0 : slot->layout.used_ring.raw() >> (offset == kQueueDeviceHi ? 32 : 0);
    default:
      return 0;
  }
}

void VirtioPciDevice::common_read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (!valid_common_access(offset, data.size())) {
    return;  // already zero
  }
  std::lock_guard lock(mutex_);
  devices::store_le(data, common_value_locked(offset));
}

void VirtioPciDevice::common_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (!valid_common_access(offset, data.size())) {
    return;
  }
  const std::uint64_t value = devices::load_le(data);
  if (offset == kDeviceStatus) {
    write_status(static_cast<std::uint8_t>(value));
    return;
  }
  if (offset == kQueueEnable) {
    write_queue_enable(static_cast<std::uint16_t>(value));
    return;
  }
  std::lock_guard lock(mutex_);
  const auto vector = [&] {
    return value < msix_->vectors() ? static_cast<std::uint16_t>(value) : std::uint16_t{VIRTIO_MSI_NO_VECTOR};
  };
  switch (offset) {
    case kDeviceFeatureSelect:
      device_feature_select_ = static_cast<std::uint32_t>(value);
      return;
    case kDriverFeatureSelect:
      driver_feature_select_ = static_cast<std::uint32_t>(value);
      return;
    case kDriverFeature:
      // Pages 2 and up name no feature virtio 1.2 defines: ignored. So are writes once FEATURES_OK is set.
      if ((status_ & VIRTIO_CONFIG_S_FEATURES_OK) == 0 && driver_feature_select_ < 2) {
        driver_features_ = with_dword(driver_features_, driver_feature_select_ == 1, static_cast<std::uint32_t>(value));
      }
      return;
    case kConfigMsixVector:
      config_msix_vector_ = vector();
      return;
    case kQueueSelect:
      queue_select_ = static_cast<std::uint16_t>(value);
      return;
    default:
      break;
  }
  QueueSlot* slot = selected_locked();
  if (slot == nullptr || slot->enable_flag || (status_ & VIRTIO_CONFIG_S_DRIVER_OK) != 0) {
    return;  // no such queue, or its configuration is frozen
  }
  QueueLayout& layout = slot->layout;
  const bool high = offset == kQueueDescHi || offset == kQueueDriverHi || offset == kQueueDeviceHi;
  const auto address = [&](memory::GuestAddress current) {
    return memory::GuestAddress(data.size() == 8 ? value
                                                 : with_dword(current.raw(), high, static_cast<std::uint32_t>(value)));
  };
  switch (offset) {
    case kQueueSize:
      layout.size = static_cast<std::uint16_t>(value);  // checked when the queue is enabled
      return;
    case kQueueMsixVector:
      slot->msix_vector = vector();
      return;
    case kQueueDescLo:
    case kQueueDescHi:
      layout.descriptor_table = address(layout.descriptor_table);
      return;
    case kQueueDriverLo:
    case kQueueDriverHi:
      layout.available_ring = address(layout.available_ring);
      return;
    case kQueueDeviceLo:
    case kQueueDeviceHi:
      layout.used_ring = address(layout.used_ring);
      return;
    default:
      return;  // read-only fields
  }
}

void VirtioPciDevice::write_queue_enable(std::uint16_t value) {
  if (value != 1) {
    return;  // 0 is forbidden to the driver (no VIRTIO_F_RING_RESET), anything else is not a value of the field
  }
  {
    std::lock_guard lock(mutex_);
    QueueSlot* slot = selected_locked();
    if (slot == nullptr || slot->enable_flag || (status_ & VIRTIO_CONFIG_S_DRIVER_OK) != 0) {
      return;
    }
    const std::uint16_t index = queue_select_;
    if ((status_ & VIRTIO_CONFIG_S_FEATURES_OK) == 0) {
      needs_reset_locked(
          Error{fmt::format("{} queue_enable", name_), 0,
                fmt::format("queue {} enabled before FEATURES_OK: its ring features are not negotiated yet", index)});
    } else {
      const QueueFeatures features{.event_idx = has_feature(driver_features_, VIRTIO_RING_F_EVENT_IDX),
                                   .indirect = has_feature(driver_features_, VIRTIO_RING_F_INDIRECT_DESC)};
      auto queue = SplitQueue::create(memory_, slot->layout, slot->max_size, features, slot->counters);
      if (queue) {
        slot->enabled.emplace(std::move(*queue));
        slot->enable_flag = true;
        return;
      }
      needs_reset_locked(std::move(queue).error().with_context(fmt::format("virtio-pci: enabling queue {}", index)));
    }
  }
  static_cast<void>(raise_config());
}

// ---- The status machine ------------------------------------------------------------------------------------------

void VirtioPciDevice::write_status(std::uint8_t value) {
  std::lock_guard lifecycle(lifecycle_mutex_);
  if (value == 0) {
    reset_locked();
    return;
  }
  std::optional<Activation> activation;
  bool refused = false;  // DRIVER_OK out of order: DEVICE_NEEDS_RESET
  {
    std::lock_guard lock(mutex_);
    const std::uint8_t current = status_ & kDriverStatusBits;
    const auto requested = static_cast<std::uint8_t>(value & kDriverStatusBits);
    if ((requested & current) != current) {
      return;  // the driver may not clear a bit (2.1.1)
    }
    auto added = static_cast<std::uint8_t>(requested & ~current);
    if ((status_ & (VIRTIO_CONFIG_S_NEEDS_RESET | VIRTIO_CONFIG_S_FAILED)) != 0) {
      added &= VIRTIO_CONFIG_S_FAILED;  // after an error, only FAILED (then a reset) makes sense
    }
    status_ |= added & (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FAILED);
    if ((added & VIRTIO_CONFIG_S_FEATURES_OK) != 0) {
      const std::uint64_t unknown = driver_features_ & ~offered_features_;
      if (unknown != 0) {
        last_error_ = Error{fmt::format("{} FEATURES_OK", name_), 0,
                            fmt::format("refused: the driver accepted features {:#x} the device does not offer "
                                        "(offered {:#x})",
                                        unknown, offered_features_)};
      } else if (!has_feature(driver_features_, VIRTIO_F_VERSION_1)) {
        last_error_ = Error{fmt::format("{} FEATURES_OK", name_), 0,
                            fmt::format("refused: the driver did not accept VIRTIO_F_VERSION_1 (features {:#x}); "
                                        "this device is modern only",
                                        driver_features_)};
      } else {
        status_ |= VIRTIO_CONFIG_S_FEATURES_OK;
      }
    }
    if ((added & VIRTIO_CONFIG_S_DRIVER_OK) != 0) {
      if ((status_ & VIRTIO_CONFIG_S_FEATURES_OK) == 0) {
        needs_reset_locked(
            Error{fmt::format("{} DRIVER_OK", name_), 0, "the driver set DRIVER_OK without FEATURES_OK"});
        refused = true;
      } else {
        activation.emplace();
        activation->memory = &memory_;
        activation->features = driver_features_;
        for (QueueSlot& slot : queues_) {
          activation->queues.push_back(std::move(slot.enabled));
          slot.enabled.reset();
        }
        activation->interrupt = interrupt_;
        activation->needs_reset = [interrupt = interrupt_, epoch = epoch_](const Error& error) {
          interrupt->needs_reset(epoch, error);
        };
      }
    }
  }
  if (refused) {
    static_cast<void>(raise_config());
  }
  if (!activation) {
    return;
  }
  auto activated = device_->activate(std::move(*activation));
  {
    std::lock_guard lock(mutex_);
    if (activated) {
      status_ |= VIRTIO_CONFIG_S_DRIVER_OK;
      active_ = true;
      return;
    }
    needs_reset_locked(std::move(activated).error().with_context("virtio-pci: activation at DRIVER_OK"));
  }
  static_cast<void>(raise_config());
}

void VirtioPciDevice::reset_locked() {
  bool was_active = false;
  {
    std::lock_guard lock(mutex_);
    was_active = active_;
    active_ = false;
  }
  device_->reset();
  std::lock_guard lock(mutex_);
  if (was_active) {
    ActivationRecord record{.features = driver_features_, .queues = {}};
    for (const QueueSlot& slot : queues_) {
      record.queues.push_back(slot.counters->snapshot());
    }
    history_.push_back(std::move(record));
  }
  for (QueueSlot& slot : queues_) {
    slot.layout = QueueLayout{};
    slot.layout.size = slot.max_size;
    slot.msix_vector = VIRTIO_MSI_NO_VECTOR;
    slot.enabled.reset();
    slot.enable_flag = false;
    slot.counters->clear();  // the history has them
  }
  status_ = 0;
  isr_ = 0;
  device_feature_select_ = 0;
  driver_feature_select_ = 0;
  driver_features_ = 0;
  config_msix_vector_ = VIRTIO_MSI_NO_VECTOR;
  queue_select_ = 0;
  ++epoch_;
}

void VirtioPciDevice::needs_reset_locked(Error error) {
  status_ |= VIRTIO_CONFIG_S_NEEDS_RESET;
  last_error_ = std::move(error);
}

void VirtioPciDevice::device_error(std::uint64_t epoch, const Error& error) {
  {
    std::lock_guard lock(mutex_);
    if (epoch != epoch_) {
      return;  // an activation that a reset ended
    }
    needs_reset_locked(error.with_context(fmt::format("{} reported a driver error", name_)));
  }
  static_cast<void>(raise_config());
}

// ---- ISR, device configuration, notifications ---------------------------------------------------------------------

void VirtioPciDevice::isr_read(std::uint64_t offset, std::span<std::uint8_t> data) {
  if (offset != 0 || data.size() != 1) {
    return;
  }
  std::lock_guard lock(mutex_);
  data[0] = isr_;
  isr_ = 0;  // read-to-clear (4.1.4.5)
}

void VirtioPciDevice::device_config_read(std::uint64_t offset, std::span<std::uint8_t> data) {
  const std::size_t size = data.size();
  if ((size != 1 && size != 2 && size != 4) || offset % size != 0 || offset >= config_size_) {
    return;
  }
  const std::size_t inside = std::min<std::uint64_t>(size, config_size_ - offset);
  device_->read_config(offset, data.first(inside));  // the rest stays 0
}

void VirtioPciDevice::device_config_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  const std::size_t size = data.size();
  if ((size != 1 && size != 2 && size != 4) || offset % size != 0 || offset >= config_size_) {
    return;
  }
  const std::size_t inside = std::min<std::uint64_t>(size, config_size_ - offset);
  device_->write_config(offset, data.first(inside));
}

void VirtioPciDevice::notify_write(std::uint64_t offset, std::size_t size) {
  // A 16-bit write of the queue index (a 32-bit one with VIRTIO_F_NOTIFICATION_DATA, which is not offered, but
  // accepted as well): the value carries nothing the address does not already say.
  if ((size != 2 && size != 4) || offset % kNotifyOffMultiplier != 0) {
    return;
  }
  const std::uint64_t index = offset / kNotifyOffMultiplier;
  std::lock_guard lifecycle(lifecycle_mutex_);  // a notification never races activate or reset
  std::shared_ptr<QueueCounters> counters;
  {
    std::lock_guard lock(mutex_);
    if (!active_ || index >= queues_.size() || !queues_[index].enable_flag) {
      return;
    }
    counters = queues_[index].counters;
  }
  counters->notifications.fetch_add(1, std::memory_order_relaxed);
  device_->queue_notify(static_cast<std::uint16_t>(index));
}

// ---- Interrupts --------------------------------------------------------------------------------------------------

Result<void> VirtioPciDevice::raise_queue(std::uint16_t queue_index) {
  std::uint16_t vector = VIRTIO_MSI_NO_VECTOR;
  std::shared_ptr<QueueCounters> counters;
  {
    std::lock_guard lock(mutex_);
    if (queue_index >= queues_.size()) {
      return logic_error(fmt::format("{} signal_queue", name_),
                         fmt::format("no queue {} (the device has {})", queue_index, queues_.size()));
    }
    isr_ |= kIsrQueue;
    vector = queues_[queue_index].msix_vector;
    counters = queues_[queue_index].counters;
  }
  if (vector != VIRTIO_MSI_NO_VECTOR) {
    if (auto triggered = msix_->trigger(vector); !triggered) {
      return std::unexpected(std::move(triggered).error());
    }
  }
  counters->interrupts.fetch_add(1, std::memory_order_relaxed);
  return {};
}

Result<void> VirtioPciDevice::raise_config() {
  std::uint16_t vector = VIRTIO_MSI_NO_VECTOR;
  {
    std::lock_guard lock(mutex_);
    isr_ |= VIRTIO_PCI_ISR_CONFIG;
    vector = config_msix_vector_;
  }
  if (vector != VIRTIO_MSI_NO_VECTOR) {
    if (auto triggered = msix_->trigger(vector); !triggered) {
      return std::unexpected(std::move(triggered).error());
    }
  }
  return {};
}

// ---- Configuration space -----------------------------------------------------------------------------------------

std::optional<VirtioPciDevice::PciCfgWindow> VirtioPciDevice::pci_cfg_window() const {
  const PciCfgWindow window{.bar = config_.read8(pci_cfg_capability_ + kCfgCapBar),
                            .offset = config_.read32(pci_cfg_capability_ + kCfgCapOffset),
                            .length = config_.read32(pci_cfg_capability_ + kCfgCapLength)};
  if ((window.length != 1 && window.length != 2 && window.length != 4) || window.offset % window.length != 0) {
    return std::nullopt;
  }
  return window;
}

void VirtioPciDevice::config_written(std::uint16_t offset, std::size_t size) {
  msix_->config_written(config_, msix_capability_, offset, size);
  const std::uint64_t data_start = pci_cfg_capability_ + kCfgCapData;
  if (offset >= data_start + kCfgDataSize || offset + size <= data_start) {
    return;
  }
  // 4.1.4.9: a write to pci_cfg_data writes its first cap.length bytes at cap.offset in BAR cap.bar.
  const auto window = pci_cfg_window();
  if (!window) {
    return;
  }
  std::array<std::uint8_t, kCfgDataSize> bytes{};
  config_.read(data_start, bytes);
  bar_write(window->bar, window->offset, std::span(bytes).first(window->length));
}

void VirtioPciDevice::config_read(std::uint16_t offset, std::span<std::uint8_t> data) {
  const std::uint64_t data_start = pci_cfg_capability_ + kCfgCapData;
  if (data.empty() || offset >= data_start + kCfgDataSize || offset + data.size() <= data_start) {
    return;
  }
  // 4.1.4.9: a read of pci_cfg_data reads cap.length bytes at cap.offset in BAR cap.bar into its first bytes.
  std::array<std::uint8_t, kCfgDataSize> bytes{};
  if (const auto window = pci_cfg_window()) {
    config_.read(data_start, bytes);
    bar_read(window->bar, window->offset, std::span(bytes).first(window->length));
    for (std::size_t i = 0; i < window->length; ++i) {
      config_.set8(data_start + i, bytes[i]);
    }
  }  // else: a malformed window reads 0
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint64_t at = offset + i;
    if (at >= data_start && at < data_start + kCfgDataSize) {
      data[i] = bytes[at - data_start];
    }
  }
}

// ---- Accessors ---------------------------------------------------------------------------------------------------

std::uint8_t VirtioPciDevice::status() const {
  std::lock_guard lock(mutex_);
  return status_;
}

std::uint64_t VirtioPciDevice::driver_features() const {
  std::lock_guard lock(mutex_);
  return driver_features_;
}

bool VirtioPciDevice::active() const {
  std::lock_guard lock(mutex_);
  return active_;
}

std::optional<QueueLayout> VirtioPciDevice::queue_layout(std::uint16_t index) const {
  std::lock_guard lock(mutex_);
  if (index >= queues_.size()) {
    return std::nullopt;
  }
  return queues_[index].layout;
}

std::optional<std::uint16_t> VirtioPciDevice::queue_msix_vector(std::uint16_t index) const {
  std::lock_guard lock(mutex_);
  if (index >= queues_.size()) {
    return std::nullopt;
  }
  return queues_[index].msix_vector;
}

std::vector<QueueCountersSnapshot> VirtioPciDevice::counters() const {
  std::lock_guard lock(mutex_);
  std::vector<QueueCountersSnapshot> out;
  out.reserve(queues_.size());
  for (const QueueSlot& slot : queues_) {
    out.push_back(slot.counters->snapshot());
  }
  return out;
}

std::vector<ActivationRecord> VirtioPciDevice::history() const {
  std::lock_guard lock(mutex_);
  return history_;
}

std::optional<Error> VirtioPciDevice::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

}  // namespace vmm::virtio
