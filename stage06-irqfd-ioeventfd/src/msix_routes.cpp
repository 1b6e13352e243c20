#include "vmm/irq/msix_routes.hpp"

#include <linux/pci_regs.h>

#include <utility>

#include <fmt/format.h>

namespace vmm::irq {

Result<std::unique_ptr<MsixRoutes>> MsixRoutes::create(std::uint16_t vectors, GsiRouting& routing,
                                                       IrqfdBinder& binder) {
  if (vectors == 0 || vectors > pci::MsixCapability::kMaxVectors) {
    return logic_error("MSI-X routes", fmt::format("{} vectors (1..{})", vectors, pci::MsixCapability::kMaxVectors));
  }
  // Built inside the object so that, on a failure half-way, its destructor undoes what was done.
  std::unique_ptr<MsixRoutes> routes(new MsixRoutes(routing, binder));
  routes->vectors_.reserve(vectors);
  for (std::uint16_t v = 0; v < vectors; ++v) {
    auto gsi = routing.allocate_msi_gsi();
    if (!gsi) {
      return std::unexpected(gsi.error().with_context(fmt::format("vector {}", v)));
    }
    auto event = event::EventFd::create();
    if (!event) {
      (void)routing.release(*gsi);
      return std::unexpected(event.error());
    }
    auto& vector = routes->vectors_.emplace_back(Vector{.gsi = *gsi, .irqfd = std::move(*event)});
    if (auto rc = binder.bind(vector.irqfd, vector.gsi); !rc) {
      return std::unexpected(rc.error().with_context(fmt::format("irqfd of MSI-X vector {}", v)));
    }
    vector.bound = true;
  }
  return routes;
}

MsixRoutes::~MsixRoutes() {
  // Errors have nowhere to go; the VM's teardown drops irqfds and routes anyway.
  for (auto& vector : vectors_) {
    if (vector.bound) {
      (void)binder_.unbind(vector.irqfd, vector.gsi);
    }
    (void)routing_.release(vector.gsi);
  }
}

Result<void> MsixRoutes::attach(pci::MsixTable& table) {
  if (table.vectors() != vectors()) {
    return logic_error("MSI-X routes", fmt::format("table has {} vectors, routes {}", table.vectors(), vectors()));
  }
  {
    std::lock_guard lock(mutex_);
    table_ = &table;
  }
  table.set_observer([this](std::uint16_t vector) {
    // A guest write cannot fail: keep the error for last_error (and the demo's report).
    if (auto rc = sync(vector); !rc) {
      std::lock_guard lock(mutex_);
      last_error_ = rc.error();
    }
    std::function<void(std::uint16_t)> listener;
    {
      std::lock_guard lock(mutex_);
      listener = listener_;
    }
    if (listener) {
      listener(vector);
    }
  });
  // The table may already hold a programmed, unmasked vector (attached late, or after a reset of the routes).
  for (std::uint16_t v = 0; v < vectors(); ++v) {
    if (auto rc = sync(v); !rc) {
      return rc;
    }
  }
  return {};
}

void MsixRoutes::set_listener(std::function<void(std::uint16_t vector)> listener) {
  std::lock_guard lock(mutex_);
  listener_ = std::move(listener);
}

Result<void> MsixRoutes::sync(std::uint16_t vector) {
  if (vector >= vectors()) {
    return logic_error("MSI-X routes", fmt::format("no vector {}", vector));
  }
  std::lock_guard lock(mutex_);
  return sync_locked(vector);
}

Result<void> MsixRoutes::sync_locked(std::uint16_t vector) {
  if (table_ == nullptr) {
    return {};
  }
  // Read back under our lock: of two racing observer calls, the later one reads the table after both changes, so
  // the route installed last is the current one.
  const auto entry = table_->entry(vector);
  const bool deliverable =
      table_->enabled() && !table_->function_masked() && (entry->control & PCI_MSIX_ENTRY_CTRL_MASKBIT) == 0;
  const std::uint32_t gsi = vectors_[vector].gsi;
  Result<void> rc =
      deliverable ? routing_.set_msi(gsi, {.address = entry->address, .data = entry->data}) : routing_.remove(gsi);
  if (!rc) {
    return std::unexpected(rc.error().with_context(fmt::format("MSI-X vector {} (GSI {})", vector, gsi)));
  }
  return {};
}

Result<void> MsixRoutes::signal(const pci::MsiMessage& message, std::uint16_t vector) {
  if (vector >= vectors()) {
    return logic_error("MSI-X irqfd", fmt::format("no vector {}", vector));
  }
  std::lock_guard lock(mutex_);
  auto& v = vectors_[vector];
  // Normally a no-op (the observer already installed this message); GsiRouting applies nothing when it is unchanged.
  if (auto rc = routing_.set_msi(v.gsi, message); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("MSI-X vector {} (GSI {})", vector, v.gsi)));
  }
  if (auto rc = v.irqfd.write(1); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("irqfd of MSI-X vector {} (GSI {})", vector, v.gsi)));
  }
  ++v.signals;
  return {};
}

std::optional<std::uint32_t> MsixRoutes::gsi(std::uint16_t vector) const {
  if (vector >= vectors()) {
    return std::nullopt;
  }
  return vectors_[vector].gsi;
}

const event::EventFd* MsixRoutes::irqfd(std::uint16_t vector) const {
  return vector < vectors() ? &vectors_[vector].irqfd : nullptr;
}

std::optional<VectorRoute> MsixRoutes::route(std::uint16_t vector) const {
  if (vector >= vectors()) {
    return std::nullopt;
  }
  std::lock_guard lock(mutex_);
  const auto& v = vectors_[vector];
  return VectorRoute{.vector = vector, .gsi = v.gsi, .message = routing_.msi(v.gsi), .signals = v.signals};
}

std::vector<VectorRoute> MsixRoutes::routes() const {
  std::vector<VectorRoute> out;
  out.reserve(vectors());
  for (std::uint16_t v = 0; v < vectors(); ++v) {
    out.push_back(*route(v));
  }
  return out;
}

std::uint64_t MsixRoutes::signals() const {
  std::lock_guard lock(mutex_);
  std::uint64_t total = 0;
  for (const auto& v : vectors_) {
    total += v.signals;
  }
  return total;
}

std::optional<Error> MsixRoutes::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

}  // namespace vmm::irq
