#include "vmm/irq/gsi_routing.hpp"

#include <linux/kvm.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "vmm/flex_array.hpp"

namespace vmm::irq {

static_assert(kIoapicPins == KVM_IOAPIC_NUM_PINS, "MSI GSIs start right above the IOAPIC's pins");

namespace {

// kvm_irq_routing_entry holds a union: `T{}` would only initialise its first member. Start from all-zero bytes so
// that the unused parts (pads, the rest of the union) are zero, as the kernel expects and `same_route` compares.
kvm_irq_routing_entry zeroed() noexcept {
  kvm_irq_routing_entry entry;
  std::memset(&entry, 0, sizeof entry);
  return entry;
}

const char* chip_name(std::uint32_t irqchip) {
  switch (irqchip) {
    case KVM_IRQCHIP_PIC_MASTER:
      return "PIC master";
    case KVM_IRQCHIP_PIC_SLAVE:
      return "PIC slave";
    case KVM_IRQCHIP_IOAPIC:
      return "IOAPIC";
    default:
      return "irqchip ?";
  }
}

}  // namespace

kvm_irq_routing_entry irqchip_route(std::uint32_t gsi, std::uint32_t irqchip, std::uint32_t pin) {
  auto entry = zeroed();
  entry.gsi = gsi;
  entry.type = KVM_IRQ_ROUTING_IRQCHIP;
  entry.u.irqchip.irqchip = irqchip;
  entry.u.irqchip.pin = pin;
  return entry;
}

kvm_irq_routing_entry msi_route(std::uint32_t gsi, const pci::MsiMessage& message) {
  auto entry = zeroed();
  entry.gsi = gsi;
  entry.type = KVM_IRQ_ROUTING_MSI;
  entry.u.msi.address_lo = static_cast<std::uint32_t>(message.address);
  entry.u.msi.address_hi = static_cast<std::uint32_t>(message.address >> 32);
  entry.u.msi.data = message.data;
  return entry;
}

std::vector<kvm_irq_routing_entry> default_irqchip_routes() {
  // The same entries, in the same order, as the kernel's default_routing[] (arch/x86/kvm/irq_comm.c): replacing the
  // table must not change what a legacy GSI does.
  std::vector<kvm_irq_routing_entry> out;
  out.reserve(kIoapicPins + kPicPins);
  for (std::uint32_t gsi = 0; gsi < kIoapicPins; ++gsi) {
    out.push_back(irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    if (gsi < kPicPins) {
      out.push_back(irqchip_route(gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, gsi % 8));
    }
  }
  return out;
}

bool same_route(const kvm_irq_routing_entry& a, const kvm_irq_routing_entry& b) noexcept {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

std::string describe(const kvm_irq_routing_entry& entry) {
  switch (entry.type) {
    case KVM_IRQ_ROUTING_IRQCHIP:
      return fmt::format("GSI {} -> {} pin {}", entry.gsi, chip_name(entry.u.irqchip.irqchip), entry.u.irqchip.pin);
    case KVM_IRQ_ROUTING_MSI:
      return fmt::format("GSI {} -> MSI {:#x}/{:#x}", entry.gsi,
                         std::uint64_t{entry.u.msi.address_hi} << 32 | entry.u.msi.address_lo, entry.u.msi.data);
    default:
      return fmt::format("GSI {} -> type {}", entry.gsi, entry.type);
  }
}

GsiRoutingTable::GsiRoutingTable(std::uint32_t gsi_limit) : gsi_limit_(std::min(gsi_limit, kMaxGsiRoutes)) {}

Result<std::uint32_t> GsiRoutingTable::allocate_msi_gsi() {
  // allocated_ is ordered: the first gap at or above kFirstMsiGsi is the lowest free GSI.
  std::uint32_t gsi = kFirstMsiGsi;
  for (auto it = allocated_.lower_bound(kFirstMsiGsi); it != allocated_.end() && *it == gsi; ++it) {
    ++gsi;
  }
  if (gsi >= gsi_limit_) {
    return logic_error("allocate MSI GSI", fmt::format("all GSIs {}..{} are in use", kFirstMsiGsi, gsi_limit_ - 1));
  }
  allocated_.insert(gsi);
  return gsi;
}

Result<void> GsiRoutingTable::set_msi(std::uint32_t gsi, const pci::MsiMessage& message) {
  if (!allocated_.contains(gsi)) {
    return logic_error("set MSI route", fmt::format("GSI {} was not allocated for MSI", gsi));
  }
  msi_[gsi] = message;
  return {};
}

bool GsiRoutingTable::remove(std::uint32_t gsi) {
  return msi_.erase(gsi) != 0;
}

bool GsiRoutingTable::release(std::uint32_t gsi) {
  msi_.erase(gsi);
  return allocated_.erase(gsi) != 0;
}

std::optional<pci::MsiMessage> GsiRoutingTable::msi(std::uint32_t gsi) const {
  if (auto it = msi_.find(gsi); it != msi_.end()) {
    return it->second;
  }
  return std::nullopt;
}

std::vector<kvm_irq_routing_entry> GsiRoutingTable::entries() const {
  auto out = default_irqchip_routes();
  for (const auto& [gsi, message] : msi_) {
    out.push_back(msi_route(gsi, message));
  }
  return out;
}

Result<void> set_gsi_routing(const kvm::Vm& vm, std::span<const kvm_irq_routing_entry> entries) {
  // struct kvm_irq_routing in C: nr, flags, then the entries at offset 8.
  constexpr std::size_t kHeaderSize = 8;
  FlexArrayBuffer<kvm_irq_routing, kvm_irq_routing_entry> buffer(kHeaderSize, entries.size());
  buffer.header()->nr = static_cast<std::uint32_t>(entries.size());
  buffer.header()->flags = 0;
  std::ranges::copy(entries, buffer.entries());
  if (auto rc = vmm::ioctl(vm.fd(), with_ioctl_size(KVM_SET_GSI_ROUTING, kHeaderSize), "KVM_SET_GSI_ROUTING",
                           buffer.header());
      !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("{} entries", entries.size())));
  }
  return {};
}

GsiRouting::GsiRouting(ApplyRoutes apply, std::uint32_t gsi_limit) : apply_(std::move(apply)), table_(gsi_limit) {}

Result<std::uint32_t> GsiRouting::allocate_msi_gsi() {
  std::lock_guard lock(mutex_);
  return table_.allocate_msi_gsi();
}

Result<void> GsiRouting::set_msi(std::uint32_t gsi, const pci::MsiMessage& message) {
  std::lock_guard lock(mutex_);
  if (table_.msi(gsi) == message) {
    return {};  // unchanged: no KVM_SET_GSI_ROUTING (each one costs an RCU grace period in the kernel)
  }
  GsiRoutingTable next = table_;
  if (auto rc = next.set_msi(gsi, message); !rc) {
    return rc;
  }
  return apply_locked(std::move(next));
}

Result<void> GsiRouting::remove(std::uint32_t gsi) {
  std::lock_guard lock(mutex_);
  GsiRoutingTable next = table_;
  if (!next.remove(gsi)) {
    return {};
  }
  return apply_locked(std::move(next));
}

Result<void> GsiRouting::release(std::uint32_t gsi) {
  std::lock_guard lock(mutex_);
  if (!table_.msi(gsi)) {
    table_.release(gsi);  // no route: the installed table does not change
    return {};
  }
  GsiRoutingTable next = table_;
  next.release(gsi);
  return apply_locked(std::move(next));
}

Result<void> GsiRouting::apply() {
  std::lock_guard lock(mutex_);
  return apply_locked(table_);
}

Result<void> GsiRouting::apply_locked(GsiRoutingTable next) {
  const auto entries = next.entries();
  if (auto rc = apply_(entries); !rc) {
    return rc;  // keep the table that is installed
  }
  table_ = std::move(next);
  ++applied_;
  return {};
}

std::optional<pci::MsiMessage> GsiRouting::msi(std::uint32_t gsi) const {
  std::lock_guard lock(mutex_);
  return table_.msi(gsi);
}

std::vector<kvm_irq_routing_entry> GsiRouting::entries() const {
  std::lock_guard lock(mutex_);
  return table_.entries();
}

std::uint64_t GsiRouting::applied() const {
  std::lock_guard lock(mutex_);
  return applied_;
}

KvmGsiRouting::KvmGsiRouting(const kvm::Vm& vm)
    : GsiRouting([&vm](std::span<const kvm_irq_routing_entry> entries) { return set_gsi_routing(vm, entries); }) {}

}  // namespace vmm::irq
