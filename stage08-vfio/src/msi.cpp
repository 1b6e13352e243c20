#include "vmm/vfio/msi.hpp"

#include <linux/pci_regs.h>

#include <algorithm>
#include <utility>

#include <fmt/format.h>

namespace vmm::vfio {

namespace {

// Offsets of the registers after Message Control, which depend on the 64-bit flag.
std::uint8_t data_offset(bool is_64bit) {
  return is_64bit ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32;
}

}  // namespace

MsiState read_msi_state(const pci::ConfigSpace& config, std::uint8_t offset) {
  MsiState state;
  const std::uint16_t flags = config.read16(offset + PCI_MSI_FLAGS);
  state.enabled = (flags & PCI_MSI_FLAGS_ENABLE) != 0;
  // Both counts are log2-encoded: 0 = 1 vector ... 5 = 32. Values 6 and 7 are reserved; a guest (or device) that
  // writes them gets the most the device can do, never more.
  const unsigned capable_log2 = std::min((flags & PCI_MSI_FLAGS_QMASK) >> 1, 5);
  const unsigned enabled_log2 = std::min<unsigned>((flags & PCI_MSI_FLAGS_QSIZE) >> 4, capable_log2);
  state.capable = static_cast<std::uint8_t>(1U << capable_log2);
  state.vectors = static_cast<std::uint8_t>(1U << enabled_log2);
  state.is_64bit = (flags & PCI_MSI_FLAGS_64BIT) != 0;
  state.address = config.read32(offset + PCI_MSI_ADDRESS_LO);
  if (state.is_64bit) {
    state.address |= std::uint64_t{config.read32(offset + PCI_MSI_ADDRESS_HI)} << 32;
  }
  state.data = config.read16(offset + data_offset(state.is_64bit));
  return state;
}

std::uint8_t virtualize_msi_capability(pci::ConfigSpace& config, std::uint8_t offset) {
  const std::uint16_t flags = config.read16(offset + PCI_MSI_FLAGS);
  const bool is_64bit = (flags & PCI_MSI_FLAGS_64BIT) != 0;
  const bool maskable = (flags & PCI_MSI_FLAGS_MASKBIT) != 0;
  // The device's own length (10 or 14 bytes; 10 more with the mask and pending registers, and the reserved word
  // before them): all of it is the VMM's from now on.
  const std::uint8_t length = static_cast<std::uint8_t>(data_offset(is_64bit) + 2 + (maskable ? 10 : 0));

  // Reset state: disabled, one vector, no address; per-vector masking hidden (see the header).
  config.set16(offset + PCI_MSI_FLAGS, flags & (PCI_MSI_FLAGS_QMASK | PCI_MSI_FLAGS_64BIT));
  for (std::uint8_t i = 2; i < length; ++i) {
    if (i >= PCI_MSI_ADDRESS_LO) {
      config.set8(offset + i, 0);
    }
    config.set_writable8(offset + i, 0);
  }
  config.set_writable8(offset, 0);
  config.set_writable8(offset + 1, 0);
  config.set_writable16(offset + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE);
  config.set_writable32(offset + PCI_MSI_ADDRESS_LO, 0xffff'fffc);  // dword-aligned
  if (is_64bit) {
    config.set_writable32(offset + PCI_MSI_ADDRESS_HI, 0xffff'ffff);
  }
  config.set_writable16(offset + data_offset(is_64bit), 0xffff);
  return length;
}

Result<std::unique_ptr<MsiRoutes>> MsiRoutes::create(std::uint8_t capable, irq::GsiRouting& routing,
                                                     irq::IrqfdBinder& binder) {
  if (capable == 0 || capable > 32) {
    return logic_error("MSI routes", fmt::format("{} vectors (1..32)", capable));
  }
  // Built inside the object so that a failure half-way is undone by its destructor.
  std::unique_ptr<MsiRoutes> routes(new MsiRoutes(routing, binder));
  routes->vectors_.reserve(capable);
  for (std::uint8_t v = 0; v < capable; ++v) {
    auto gsi = routing.allocate_msi_gsi();
    if (!gsi) {
      return std::unexpected(gsi.error().with_context(fmt::format("MSI vector {}", v)));
    }
    auto event = event::EventFd::create();
    if (!event) {
      (void)routing.release(*gsi);
      return std::unexpected(event.error());
    }
    auto& vector = routes->vectors_.emplace_back(
        Vector{.gsi = *gsi, .irqfd = std::move(*event), .bound = false, .message = std::nullopt});
    if (auto rc = binder.bind(vector.irqfd, vector.gsi); !rc) {
      return std::unexpected(rc.error().with_context(fmt::format("irqfd of MSI vector {}", v)));
    }
    vector.bound = true;
  }
  return routes;
}

MsiRoutes::~MsiRoutes() {
  for (auto& vector : vectors_) {
    if (vector.bound) {
      (void)binder_.unbind(vector.irqfd, vector.gsi);
    }
    (void)routing_.release(vector.gsi);
  }
}

Result<void> MsiRoutes::update(const MsiState& state) {
  std::lock_guard lock(mutex_);
  Result<void> first;
  for (std::uint16_t v = 0; v < vectors_.size(); ++v) {
    auto& vector = vectors_[v];
    std::optional<pci::MsiMessage> wanted;
    if (state.enabled && v < state.vectors) {
      wanted = state.message(v);
    }
    if (wanted == vector.message) {
      continue;
    }
    auto rc = wanted ? routing_.set_msi(vector.gsi, *wanted) : routing_.remove(vector.gsi);
    if (!rc) {
      if (first) {
        first = std::unexpected(rc.error().with_context(fmt::format("MSI vector {}", v)));
      }
      continue;
    }
    vector.message = wanted;
  }
  return first;
}

const event::EventFd* MsiRoutes::irqfd(std::uint16_t vector) const {
  return vector < vectors_.size() ? &vectors_[vector].irqfd : nullptr;
}

std::optional<irq::VectorRoute> MsiRoutes::route(std::uint16_t vector) const {
  std::lock_guard lock(mutex_);
  if (vector >= vectors_.size()) {
    return std::nullopt;
  }
  return irq::VectorRoute{.vector = vector, .gsi = vectors_[vector].gsi, .message = vectors_[vector].message};
}

std::vector<irq::VectorRoute> MsiRoutes::routes() const {
  std::vector<irq::VectorRoute> all;
  for (std::uint16_t v = 0; v < vectors(); ++v) {
    all.push_back(*route(v));
  }
  return all;
}

}  // namespace vmm::vfio
