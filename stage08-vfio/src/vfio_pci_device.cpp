#include "vmm/vfio/vfio_pci_device.hpp"

#include <linux/pci_regs.h>
#include <poll.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "vmm/memory/region.hpp"

namespace vmm::vfio {

namespace {

// Standard-header bytes the VMM keeps (never read from or written to the device), beyond the BARs and capabilities.
constexpr std::uint16_t kRomAddress = PCI_ROM_ADDRESS;        // 0x30-0x33: no expansion ROM for the guest
constexpr std::uint16_t kInterruptLine = PCI_INTERRUPT_LINE;  // 0x3c: the guest's note to itself
constexpr std::uint16_t kInterruptPin = PCI_INTERRUPT_PIN;    // 0x3d: 0, no INTx
constexpr std::uint16_t kHeaderType = PCI_HEADER_TYPE;        // 0x0e: single-function

// The command bits a guest may set (the rest are hard-wired or obsolete), as stage04's `set_header` chooses them.
constexpr std::uint16_t kCommandWritable = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
                                           PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE;

bool overlaps(std::uint64_t a, std::uint64_t a_size, std::uint64_t b, std::uint64_t b_size) {
  return a < b + b_size && b < a + a_size;
}

}  // namespace

VfioPciDevice::VfioPciDevice(std::shared_ptr<DeviceInterface> device, const PassthroughWiring& wiring)
    : device_(std::move(device)), wiring_(wiring) {}

Result<std::shared_ptr<VfioPciDevice>> VfioPciDevice::create(std::shared_ptr<DeviceInterface> device,
                                                             const PassthroughWiring& wiring) {
  if (!device || wiring.routing == nullptr || wiring.binder == nullptr) {
    return logic_error("VfioPciDevice", "a device, GSI routing and an irqfd binder are required");
  }
  auto info = device->info();
  if (!info) {
    return std::unexpected(info.error());
  }
  if (!info->is_pci()) {
    return logic_error("VfioPciDevice",
                       fmt::format("{} is not a PCI device (VFIO_DEVICE_FLAGS_PCI clear)", device->name()));
  }
  auto config_region = device->region_info(VFIO_PCI_CONFIG_REGION_INDEX);
  if (!config_region) {
    return std::unexpected(config_region.error());
  }
  if (config_region->size < pci::ConfigSpace::kConventionalSize) {
    return logic_error("VfioPciDevice", fmt::format("{}: config space of {} bytes (at least 256 expected)",
                                                    device->name(), config_region->size));
  }
  std::shared_ptr<VfioPciDevice> passthrough(new VfioPciDevice(std::move(device), wiring));
  passthrough->config_region_ = *config_region;
  if (info->can_reset()) {
    // Start from the device's reset state, whatever its previous owner left (a reset is also what a guest expects of
    // a device at power-on). Not fatal: some devices cannot reset alone.
    if (auto rc = passthrough->device_->reset(); !rc) {
      passthrough->record_error(rc.error());
    }
  }
  if (auto rc = passthrough->init(); !rc) {
    return std::unexpected(rc.error().with_context(passthrough->device_->name()));
  }
  return passthrough;
}

Result<void> VfioPciDevice::init() {
  // pci::ConfigSpace cannot be resized once built: it was constructed with 256 bytes; a PCI Express device's extended
  // space (0x100-0xfff) is not offered to the guest in this stage (see the README), so the guest sees a
  // conventional function.
  const std::size_t size = config_.size();
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t offset = 0; offset < size; offset += 4) {
    auto value = device_->read_value(config_region_, offset, 4);
    if (!value) {
      return std::unexpected(value.error().with_context("reading config space"));
    }
    std::memcpy(bytes.data() + offset, &*value, 4);
  }
  // Everything starts live: the copy holds what the guest last wrote there (forwarded by config_written), reads are
  // replaced by the device's bytes. Then the VMM's registers are carved out.
  live_.assign(size, 1);
  for (std::size_t offset = 0; offset < size; ++offset) {
    config_.set8(offset, bytes[offset]);
    config_.set_writable8(offset, 0xff);
  }
  const auto keep = [this](std::uint16_t offset, std::size_t length) {
    for (std::size_t i = 0; i < length && offset + i < live_.size(); ++i) {
      live_[offset + i] = 0;
    }
  };

  // Command: the VMM's copy decides BAR decoding (the PciRoot reads it); config_written also forwards it.
  keep(PCI_COMMAND, 2);
  config_.set16(PCI_COMMAND, 0);
  config_.set_writable16(PCI_COMMAND, kCommandWritable);
  keep(kHeaderType, 1);
  config_.set8(kHeaderType, bytes[kHeaderType] & 0x7f);
  config_.set_writable8(kHeaderType, 0);
  keep(kRomAddress, 4);
  config_.set32(kRomAddress, 0);
  config_.set_writable32(kRomAddress, 0);
  keep(kInterruptLine, 2);
  config_.set8(kInterruptLine, 0);
  config_.set_writable8(kInterruptLine, 0xff);
  config_.set8(kInterruptPin, 0);
  config_.set_writable8(kInterruptPin, 0);

  // Capabilities: walked in the device's own bytes (the copy has them).
  for (const pci::Capability& cap : config_.capabilities()) {
    if (cap.id == PCI_CAP_ID_MSI && !msi_cap_) {
      if (auto rc = init_msi(cap.offset); !rc) {
        return rc;
      }
      keep(cap.offset, msi_length_);
    } else if (cap.id == PCI_CAP_ID_MSIX && !msix_cap_) {
      if (auto rc = init_msix(cap.offset); !rc) {
        return rc;
      }
      keep(cap.offset, PCI_CAP_MSIX_SIZEOF);
    }
  }
  return init_bars();
}

Result<void> VfioPciDevice::init_bars() {
  // The BAR registers as the device presents them (vfio-pci virtualises them too: type bits, no host address).
  std::array<std::uint32_t, PCI_STD_NUM_BARS> raw{};
  for (std::uint8_t i = 0; i < PCI_STD_NUM_BARS; ++i) {
    const std::uint16_t reg = PCI_BASE_ADDRESS_0 + 4 * i;
    raw[i] = config_.read32(reg);
    for (std::uint16_t b = 0; b < 4; ++b) {
      live_[reg + b] = 0;
    }
    config_.set32(reg, 0);
    config_.set_writable32(reg, 0);
  }
  const std::uint64_t page = memory::host_page_size();
  for (std::uint8_t i = 0; i < PCI_STD_NUM_BARS; ++i) {
    auto region = device_->region_info(i);
    if (!region) {
      return std::unexpected(region.error());
    }
    bars_[i].region = *region;
    if (region->size == 0) {
      continue;  // not implemented (or the upper half of a 64-bit BAR)
    }
    pci::Bar bar;
    bar.index = i;
    bar.size = region->size;
    if ((raw[i] & PCI_BASE_ADDRESS_SPACE) == PCI_BASE_ADDRESS_SPACE_IO) {
      bar.kind = pci::BarKind::Io;
    } else {
      bar.kind = (raw[i] & PCI_BASE_ADDRESS_MEM_TYPE_MASK) == PCI_BASE_ADDRESS_MEM_TYPE_64 ? pci::BarKind::Memory64
                                                                                           : pci::BarKind::Memory32;
      bar.prefetchable = (raw[i] & PCI_BASE_ADDRESS_MEM_PREFETCH) != 0;
    }
    if (auto rc = config_.add_bar(bar); !rc) {
      return std::unexpected(rc.error().with_context(fmt::format("BAR{} (region of 0x{:x} bytes)", i, region->size)));
    }
    bars_[i].bar = bar;
    if (bar.is_io() || wiring_.slots == nullptr) {
      // I/O BARs trap by nature; without memory slots every access traps too.
    } else {
      std::vector<BarArea> trapped;
      if (msix_cap_ && msix_layout_.table_bar == i) {
        trapped.push_back({msix_layout_.table_offset, msix_layout_.table_size()});
      }
      if (msix_cap_ && msix_layout_.pba_bar == i) {
        trapped.push_back({msix_layout_.pba_offset, msix_layout_.pba_size()});
      }
      for (const BarArea& area : guest_mappable_areas(*region, trapped, page)) {
        auto mapped = device_->mmap(*region, area.offset, area.size);
        if (!mapped) {
          // Not fatal: that part of the BAR traps instead, slower but correct.
          record_error(mapped.error());
          continue;
        }
        bars_[i].areas.push_back(area);
        bars_[i].maps.push_back(std::move(*mapped));
      }
    }
    if (bar.is_64bit()) {
      ++i;  // its upper half
    }
  }
  return {};
}

Result<void> VfioPciDevice::init_msi(std::uint8_t offset) {
  auto irq = device_->irq_info(VFIO_PCI_MSI_IRQ_INDEX);
  if (!irq) {
    return std::unexpected(irq.error());
  }
  if (irq->count == 0 || !irq->eventfd()) {
    return {};  // VFIO cannot deliver it: leave the capability as the device has it (read-only to the guest)
  }
  msi_cap_ = offset;
  msi_length_ = virtualize_msi_capability(config_, offset);
  const MsiState state = read_msi_state(config_, offset);
  const auto capable = static_cast<std::uint8_t>(std::min<std::uint32_t>(state.capable, irq->count));
  auto routes = MsiRoutes::create(capable, *wiring_.routing, *wiring_.binder);
  if (!routes) {
    return std::unexpected(routes.error());
  }
  msi_routes_ = std::move(*routes);
  return {};
}

Result<void> VfioPciDevice::init_msix(std::uint8_t offset) {
  const std::uint16_t control = config_.read16(offset + PCI_MSIX_FLAGS);
  const std::uint32_t table = config_.read32(offset + PCI_MSIX_TABLE);
  const std::uint32_t pba = config_.read32(offset + PCI_MSIX_PBA);
  msix_layout_.vectors = static_cast<std::uint16_t>((control & PCI_MSIX_FLAGS_QSIZE) + 1);
  msix_layout_.table_bar = static_cast<std::uint8_t>(table & PCI_MSIX_TABLE_BIR);
  msix_layout_.table_offset = table & PCI_MSIX_TABLE_OFFSET;
  msix_layout_.pba_bar = static_cast<std::uint8_t>(pba & PCI_MSIX_PBA_BIR);
  msix_layout_.pba_offset = pba & PCI_MSIX_PBA_OFFSET;
  if (auto rc = msix_layout_.validate(); !rc) {
    return std::unexpected(rc.error().with_context("the device's MSI-X capability"));
  }
  msix_cap_ = offset;
  // The guest's view: disabled, function unmasked; only Enable and Function Mask writable.
  config_.set16(offset + PCI_MSIX_FLAGS, control & PCI_MSIX_FLAGS_QSIZE);
  config_.set_writable8(offset, 0);
  config_.set_writable8(offset + 1, 0);
  config_.set_writable16(offset + PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
  config_.set_writable32(offset + PCI_MSIX_TABLE, 0);
  config_.set_writable32(offset + PCI_MSIX_PBA, 0);

  auto routes = irq::MsixRoutes::create(msix_layout_.vectors, *wiring_.routing, *wiring_.binder);
  if (!routes) {
    return std::unexpected(routes.error());
  }
  msix_routes_ = std::move(*routes);
  auto table_emulation = pci::MsixTable::create(msix_layout_.vectors, *msix_routes_);
  if (!table_emulation) {
    return std::unexpected(table_emulation.error());
  }
  msix_table_ = std::move(*table_emulation);
  if (auto rc = msix_routes_->attach(*msix_table_); !rc) {
    return rc;
  }
  for (std::uint16_t v = 0; v < msix_layout_.vectors; ++v) {
    auto relay = event::EventFd::create();
    if (!relay) {
      return std::unexpected(relay.error());
    }
    relays_.push_back(std::move(*relay));
  }
  msix_fds_.assign(msix_layout_.vectors, -1);
  auto stop = event::EventFd::create();
  if (!stop) {
    return std::unexpected(stop.error());
  }
  relay_stop_ = std::move(*stop);
  msix_routes_->set_listener([this](std::uint16_t vector) { msix_vector_changed(vector); });
  relay_thread_ = std::jthread([this](std::stop_token token) { relay_loop(std::move(token)); });
  return {};
}

VfioPciDevice::~VfioPciDevice() {
  if (relay_thread_.joinable()) {
    relay_thread_.request_stop();
    (void)relay_stop_->write(1);
    relay_thread_.join();
  }
  if (msix_routes_) {
    msix_routes_->set_listener(nullptr);
  }
  if (msix_table_) {
    msix_table_->set_observer(nullptr);
  }
  {
    std::lock_guard lock(mutex_);
    // Stop the device's interrupts before their eventfds and routes go (the kernel would otherwise keep signalling
    // eventfds nobody reads, and the device would keep its host vectors).
    if (msix_enabled_) {
      (void)device_->disable_irqs(VFIO_PCI_MSIX_IRQ_INDEX);
    }
    if (msi_enabled_) {
      (void)device_->disable_irqs(VFIO_PCI_MSI_IRQ_INDEX);
    }
    if (wiring_.slots != nullptr) {
      for (auto& state : bars_) {
        for (std::uint32_t handle : state.slots) {
          (void)wiring_.slots->unmap(handle);
        }
        state.slots.clear();
      }
    }
  }
  msix_table_.reset();
  msix_routes_.reset();
  msi_routes_.reset();
}

std::string VfioPciDevice::name() const {
  return fmt::format("vfio {}", device_->name());
}

bool VfioPciDevice::live_byte(std::uint16_t offset) const noexcept {
  return offset < live_.size() && live_[offset] != 0;
}

void VfioPciDevice::record_error(const Error& error) {
  std::lock_guard lock(mutex_);
  ++stats_.errors;
  last_error_ = error;
}

// ---- config space ----------------------------------------------------------------------------------------------

void VfioPciDevice::config_read(std::uint16_t offset, std::span<std::uint8_t> data) {
  {
    std::lock_guard lock(mutex_);
    ++stats_.config_reads;
  }
  // Replace each run of live bytes with one read of the device (one pread per run: most reads are one run).
  std::size_t i = 0;
  while (i < data.size()) {
    if (!live_byte(static_cast<std::uint16_t>(offset + i))) {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < data.size() && live_byte(static_cast<std::uint16_t>(offset + end))) {
      ++end;
    }
    auto run = data.subspan(i, end - i);
    if (auto rc = device_->read(config_region_, offset + i, std::as_writable_bytes(run)); !rc) {
      std::fill(run.begin(), run.end(), 0xff);  // what an absent device reads as
      record_error(rc.error());
    }
    i = end;
  }
}

void VfioPciDevice::forward_config(std::uint16_t offset, std::size_t size) {
  // Live bytes carry the guest's value in the copy (they are writable there); the command register carries the
  // bits the guest may set. Each run is one write of the device.
  const auto forwarded = [this](std::size_t at) {
    return live_byte(static_cast<std::uint16_t>(at)) || at == PCI_COMMAND || at == PCI_COMMAND + 1;
  };
  std::size_t i = offset;
  const std::size_t last = std::min<std::size_t>(offset + size, live_.size());
  while (i < last) {
    if (!forwarded(i)) {
      ++i;
      continue;
    }
    std::size_t end = i;
    std::vector<std::byte> bytes;
    while (end < last && forwarded(end)) {
      bytes.push_back(static_cast<std::byte>(config_.read8(end)));
      ++end;
    }
    auto rc = device_->write(config_region_, i, bytes);
    std::lock_guard lock(mutex_);
    ++stats_.config_forwarded;
    if (!rc) {
      ++stats_.errors;
      last_error_ = rc.error();
    }
    i = end;
  }
}

void VfioPciDevice::config_written(std::uint16_t offset, std::size_t size) {
  {
    std::lock_guard lock(mutex_);
    ++stats_.config_writes;
  }
  forward_config(offset, size);
  if (msi_cap_ && overlaps(offset, size, *msi_cap_, msi_length_)) {
    msi_changed();
  }
  if (msix_cap_ && overlaps(offset, size, *msix_cap_, PCI_CAP_MSIX_SIZEOF)) {
    msix_control_changed(offset, size);
  }
}

// ---- MSI ---------------------------------------------------------------------------------------------------------

void VfioPciDevice::msi_changed() {
  const MsiState state = read_msi_state(config_, *msi_cap_);
  const auto vectors = std::min<std::uint16_t>(state.vectors, msi_routes_->vectors());
  std::unique_lock lock(mutex_);
  // Off first (the device stops before its routes go), routes, then on (the routes exist before the first
  // interrupt). A change of vector count while enabled is an off and an on.
  const bool want = state.enabled;
  if (msi_enabled_ && (!want || vectors != msi_vectors_)) {
    ++stats_.set_irqs;
    if (auto rc = device_->disable_irqs(VFIO_PCI_MSI_IRQ_INDEX); !rc) {
      ++stats_.errors;
      last_error_ = rc.error();
    }
    msi_enabled_ = false;
  }
  lock.unlock();
  if (auto rc = msi_routes_->update(state); !rc) {
    record_error(rc.error());
  }
  lock.lock();
  if (want && !msi_enabled_) {
    std::vector<int> fds;
    for (std::uint16_t v = 0; v < vectors; ++v) {
      fds.push_back(msi_routes_->irqfd(v)->fd());
    }
    ++stats_.set_irqs;
    if (auto rc = device_->set_irqs_eventfds(VFIO_PCI_MSI_IRQ_INDEX, 0, fds); !rc) {
      ++stats_.errors;
      last_error_ = rc.error();
      return;
    }
    msi_enabled_ = true;
    msi_vectors_ = vectors;
  }
}

// ---- MSI-X -------------------------------------------------------------------------------------------------------

int VfioPciDevice::msix_wanted_fd_locked(std::uint16_t vector) const {
  const auto route = msix_routes_->route(vector);
  if (route && route->message) {
    return msix_routes_->irqfd(vector)->fd();
  }
  return relays_[vector].fd();
}

void VfioPciDevice::msix_control_changed(std::uint16_t offset, std::size_t size) {
  const bool want = (config_.read16(*msix_cap_ + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_ENABLE) != 0;
  {
    // Turning off: stop the device first, so nothing fires into a vector while its route is removed.
    std::lock_guard lock(mutex_);
    if (msix_enabled_ && !want) {
      ++stats_.set_irqs;
      if (auto rc = device_->disable_irqs(VFIO_PCI_MSIX_IRQ_INDEX); !rc) {
        ++stats_.errors;
        last_error_ = rc.error();
      }
      msix_enabled_ = false;
      std::fill(msix_fds_.begin(), msix_fds_.end(), -1);
    }
  }
  // The table follows Enable and Function Mask; its observer updates the routes, whose listener re-points the
  // vectors already enabled in VFIO (msix_vector_changed).
  msix_table_->config_written(config_, *msix_cap_, offset, size);
  std::lock_guard lock(mutex_);
  if (want && !msix_enabled_) {
    // Turning on, routes already in step: each vector gets its irqfd, or the relay while the guest masks it.
    std::vector<int> fds;
    for (std::uint16_t v = 0; v < msix_layout_.vectors; ++v) {
      fds.push_back(msix_wanted_fd_locked(v));
    }
    ++stats_.set_irqs;
    if (auto rc = device_->set_irqs_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, 0, fds); !rc) {
      ++stats_.errors;
      last_error_ = rc.error();
      return;
    }
    msix_enabled_ = true;
    msix_fds_ = std::move(fds);
  }
}

void VfioPciDevice::msix_vector_changed(std::uint16_t vector) {
  std::lock_guard lock(mutex_);
  if (!msix_enabled_ || vector >= msix_fds_.size()) {
    return;
  }
  const int wanted = msix_wanted_fd_locked(vector);
  if (wanted == msix_fds_[vector]) {
    return;
  }
  const int fds[] = {wanted};
  ++stats_.set_irqs;
  if (auto rc = device_->set_irqs_eventfds(VFIO_PCI_MSIX_IRQ_INDEX, vector, fds); !rc) {
    ++stats_.errors;
    last_error_ = rc.error();
    return;
  }
  msix_fds_[vector] = wanted;
}

void VfioPciDevice::relay_loop(std::stop_token stop) {
  // VFIO signals a masked vector's relay eventfd; the table then sets the pending bit (or, if the guest unmasked it
  // meanwhile, delivers through the routes). One poll over all relays plus the stop eventfd.
  std::vector<pollfd> fds;
  for (const auto& relay : relays_) {
    fds.push_back({relay.fd(), POLLIN, 0});
  }
  fds.push_back({relay_stop_->fd(), POLLIN, 0});
  while (!stop.stop_requested()) {
    const int n = ::poll(fds.data(), fds.size(), -1);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      record_error(sys_error("poll", errno, "MSI-X relay").error());
      return;
    }
    for (std::uint16_t v = 0; v < relays_.size(); ++v) {
      if ((fds[v].revents & POLLIN) == 0) {
        continue;
      }
      auto count = relays_[v].read();
      if (!count || !*count) {
        continue;
      }
      {
        std::lock_guard lock(mutex_);
        ++stats_.relayed;
      }
      if (auto rc = msix_table_->trigger(v); !rc) {
        record_error(rc.error());
      }
    }
  }
}

std::vector<int> VfioPciDevice::msix_vfio_eventfds() const {
  std::lock_guard lock(mutex_);
  return msix_fds_;
}

// ---- BARs --------------------------------------------------------------------------------------------------------

bool VfioPciDevice::msix_region(std::size_t index, std::uint64_t offset, std::uint64_t size, bool& table,
                                std::uint64_t& inner) const {
  if (!msix_cap_) {
    return false;
  }
  // Any access touching the table or PBA belongs to the emulation; one that starts before it cannot be served there
  // (the emulation sees it as out of range: all-ones, write dropped).
  if (msix_layout_.table_bar == index && overlaps(offset, size, msix_layout_.table_offset, msix_layout_.table_size())) {
    table = true;
    inner = offset >= msix_layout_.table_offset ? offset - msix_layout_.table_offset : UINT64_MAX;
    return true;
  }
  if (msix_layout_.pba_bar == index && overlaps(offset, size, msix_layout_.pba_offset, msix_layout_.pba_size())) {
    table = false;
    inner = offset >= msix_layout_.pba_offset ? offset - msix_layout_.pba_offset : UINT64_MAX;
    return true;
  }
  return false;
}

void VfioPciDevice::bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) {
  bool table = false;
  std::uint64_t inner = 0;
  const bool msix = msix_region(bar_index, offset, data.size(), table, inner);
  {
    std::lock_guard lock(mutex_);
    ++stats_.bar_reads;
    stats_.msix_table_accesses += msix ? 1 : 0;
  }
  if (msix) {
    if (table) {
      msix_table_->read_table(inner, data);
    } else {
      msix_table_->read_pba(inner, data);
    }
    return;
  }
  if (bar_index >= bars_.size()) {
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  if (auto rc = device_->read(bars_[bar_index].region, offset, std::as_writable_bytes(data)); !rc) {
    std::fill(data.begin(), data.end(), 0xff);
    record_error(rc.error());
  }
}

void VfioPciDevice::bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) {
  bool table = false;
  std::uint64_t inner = 0;
  const bool msix = msix_region(bar_index, offset, data.size(), table, inner);
  {
    std::lock_guard lock(mutex_);
    ++stats_.bar_writes;
    stats_.msix_table_accesses += msix ? 1 : 0;
  }
  if (msix) {
    if (table) {
      msix_table_->write_table(inner, data);
    }
    return;  // the PBA is read-only
  }
  if (bar_index >= bars_.size()) {
    return;
  }
  if (auto rc = device_->write(bars_[bar_index].region, offset, std::as_bytes(data)); !rc) {
    record_error(rc.error());
  }
}

void VfioPciDevice::bar_placed(std::uint8_t bar_index, std::optional<std::uint64_t> guest_address) {
  if (bar_index >= bars_.size()) {
    return;
  }
  std::lock_guard lock(mutex_);
  BarState& state = bars_[bar_index];
  if (wiring_.slots == nullptr) {
    state.guest_address = guest_address;  // every access traps: nothing to map
    return;
  }
  for (std::uint32_t handle : state.slots) {
    ++stats_.slot_unmaps;
    if (auto rc = wiring_.slots->unmap(handle); !rc) {
      ++stats_.errors;
      last_error_ = rc.error();
    }
  }
  state.slots.clear();
  state.guest_address = guest_address;
  if (!guest_address) {
    return;
  }
  for (std::size_t k = 0; k < state.areas.size(); ++k) {
    auto handle = wiring_.slots->map(*guest_address + state.areas[k].offset, state.areas[k].size,
                                     static_cast<void*>(state.maps[k].data()));
    if (!handle) {
      // That part traps instead (the bus entry the PciRoot placed is still there): slower, still correct.
      ++stats_.errors;
      last_error_ = handle.error();
      continue;
    }
    ++stats_.slot_maps;
    state.slots.push_back(*handle);
  }
}

std::vector<PassthroughBar> VfioPciDevice::bars_info() const {
  std::lock_guard lock(mutex_);
  std::vector<PassthroughBar> out;
  for (const BarState& state : bars_) {
    if (state.bar) {
      out.push_back({*state.bar, state.areas, state.guest_address, state.slots});
    }
  }
  return out;
}

PassthroughStats VfioPciDevice::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

std::optional<Error> VfioPciDevice::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

}  // namespace vmm::vfio
