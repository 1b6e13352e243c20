#pragma once
/// @file
/// @brief The VM's GSI routing table: `GsiRoutingTable` (a model of what KVM_SET_GSI_ROUTING installs), `GsiRouting`
/// (the model kept in step with an "apply" function, thread-safe) and `KvmGsiRouting` (applied to a real VM).
///
/// A GSI (global system interrupt) is KVM's interrupt number: KVM_IRQ_LINE and an irqfd name a GSI, and the routing
/// table says what the GSI does: pulse a pin of the in-kernel PIC or IOAPIC ("irqchip" routes), or send an MSI
/// (address/data) straight to the LAPICs. KVM_CREATE_IRQCHIP installs a default table of irqchip routes only.
/// KVM_SET_GSI_ROUTING replaces the WHOLE table, so a table with MSI routes must carry the defaults too, or the UART on
/// GSI 4 goes silent.

#include <linux/kvm.h>

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/kvm/vm.hpp"
#include "vmm/pci/msi.hpp"

namespace vmm::irq {

/// @brief Pins of the two cascaded 8259 PICs: GSI 0-7 on the master, 8-15 on the slave.
inline constexpr std::uint32_t kPicPins = 16;
/// @brief Pins of KVM's IOAPIC (KVM_IOAPIC_NUM_PINS): GSI 0-23.
inline constexpr std::uint32_t kIoapicPins = 24;
/// @brief The first GSI that no irqchip pin uses: MSI routes are allocated from here up.
inline constexpr std::uint32_t kFirstMsiGsi = kIoapicPins;
/// @brief KVM_MAX_IRQ_ROUTES (what KVM_CAP_IRQ_ROUTING answers: 4096 on current x86 kernels, 1024 on old ones): GSIs
/// and table entries stay below it. GSIs are allocated lowest first, so a VM never comes near either.
inline constexpr std::uint32_t kMaxGsiRoutes = 4096;

/// @brief The routes KVM_CREATE_IRQCHIP installs on x86 (kvm_setup_default_irq_routing), in the kernel's order.
///
/// For each GSI 0-15: IOAPIC pin n, then PIC pin n % 8 (master below 8, slave from 8; GSI 2 included, the cascade pin:
/// the kernel keeps it, QEMU's own table does not); GSI 16-23: IOAPIC pin n only. A legacy device's GSI therefore
/// reaches whichever controller the guest enabled, as on a PC. 40 entries.
[[nodiscard]] std::vector<kvm_irq_routing_entry> default_irqchip_routes();

/// @brief An irqchip route: `gsi` drives pin `pin` of `irqchip` (KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE, _IOAPIC).
[[nodiscard]] kvm_irq_routing_entry irqchip_route(std::uint32_t gsi, std::uint32_t irqchip, std::uint32_t pin);
/// @brief An MSI route: signalling `gsi` sends `message` (address split into address_lo/address_hi).
[[nodiscard]] kvm_irq_routing_entry msi_route(std::uint32_t gsi, const pci::MsiMessage& message);

/// @brief True when `a` and `b` are the same bytes (the struct holds a union, so it has no `operator==`).
[[nodiscard]] bool same_route(const kvm_irq_routing_entry& a, const kvm_irq_routing_entry& b) noexcept;
/// @brief One line for logs, tests and gdb: "GSI 4 -> IOAPIC pin 4", "GSI 24 -> MSI 0xfee00000/0x4041".
[[nodiscard]] std::string describe(const kvm_irq_routing_entry& entry);

/// @brief A pure model of a GSI routing table: the default irqchip routes plus MSI routes on allocated GSIs.
///
/// No KVM: `entries()` is what would be handed to KVM_SET_GSI_ROUTING. MSI GSIs are allocated from `kFirstMsiGsi`
/// (24, above every irqchip pin) up to a limit, lowest free first, so the table is deterministic. A GSI is
/// allocated once and then holds at most one MSI route, which `set_msi` replaces and `remove` drops (the GSI stays
/// allocated: an irqfd may stay bound to it); `release` also frees the number. Not thread-safe (see `GsiRouting`).
class GsiRoutingTable {
 public:
  /// @brief A table with the default irqchip routes; MSI GSIs below `gsi_limit` (at most `kMaxGsiRoutes`).
  explicit GsiRoutingTable(std::uint32_t gsi_limit = kMaxGsiRoutes);

  /// @brief The lowest free GSI at or above `kFirstMsiGsi`, now allocated (no route yet). Fails when all are taken.
  [[nodiscard]] Result<std::uint32_t> allocate_msi_gsi();
  /// @brief Routes allocated GSI `gsi` to `message` (adding or replacing its route). Fails for an unallocated GSI.
  [[nodiscard]] Result<void> set_msi(std::uint32_t gsi, const pci::MsiMessage& message);
  /// @brief Drops the MSI route of `gsi`, which stays allocated. True if there was one.
  bool remove(std::uint32_t gsi);
  /// @brief Drops the route of `gsi` and frees the number for `allocate_msi_gsi`. True if it was allocated.
  bool release(std::uint32_t gsi);

  /// @brief The MSI route of `gsi`, if it has one.
  [[nodiscard]] std::optional<pci::MsiMessage> msi(std::uint32_t gsi) const;
  /// @brief True when `gsi` was allocated by `allocate_msi_gsi` and not released.
  [[nodiscard]] bool allocated(std::uint32_t gsi) const { return allocated_.contains(gsi); }
  /// @brief The whole table: `default_irqchip_routes()`, then the MSI routes by increasing GSI.
  [[nodiscard]] std::vector<kvm_irq_routing_entry> entries() const;

 private:
  std::uint32_t gsi_limit_;
  std::set<std::uint32_t> allocated_;
  std::map<std::uint32_t, pci::MsiMessage> msi_;
};

/// @brief Installs a whole routing table (KVM_SET_GSI_ROUTING in a VM; a recorder in unit tests).
using ApplyRoutes = std::function<Result<void>(std::span<const kvm_irq_routing_entry> entries)>;

/// @brief KVM_SET_GSI_ROUTING on `vm` with `entries`: replaces the VM's whole table. Needs the in-kernel irqchip.
///
/// `kvm_irq_routing` ends in a flexible array, so it is laid out with `FlexArrayBuffer` and the ioctl number carries
/// the C size of the header (8 bytes), not C++'s `sizeof` (see vmm/flex_array.hpp).
[[nodiscard]] Result<void> set_gsi_routing(const kvm::Vm& vm, std::span<const kvm_irq_routing_entry> entries);

/// @brief A `GsiRoutingTable` kept installed: every change that alters the table applies the whole new table.
///
/// Thread-safe: one mutex serialises changes and their application, so the table applied last is the current one
/// (two vCPUs reprogramming vectors cannot leave an older table installed). A change whose application fails is not
/// kept: the model always equals what was last applied successfully. The first table is not applied until
/// something changes or `apply` is called (KVM already holds the defaults after KVM_CREATE_IRQCHIP).
class GsiRouting {
 public:
  /// @brief A default table applied with `apply`.
  explicit GsiRouting(ApplyRoutes apply, std::uint32_t gsi_limit = kMaxGsiRoutes);
  GsiRouting(const GsiRouting&) = delete;
  GsiRouting& operator=(const GsiRouting&) = delete;
  GsiRouting(GsiRouting&&) = delete;
  GsiRouting& operator=(GsiRouting&&) = delete;
  virtual ~GsiRouting() = default;

  /// @brief `GsiRoutingTable::allocate_msi_gsi`; applies nothing (the GSI has no route yet).
  [[nodiscard]] Result<std::uint32_t> allocate_msi_gsi();
  /// @brief Routes `gsi` to `message` and applies the table, unless it already was.
  [[nodiscard]] Result<void> set_msi(std::uint32_t gsi, const pci::MsiMessage& message);
  /// @brief Drops the route of `gsi` and applies the table, if it had one.
  [[nodiscard]] Result<void> remove(std::uint32_t gsi);
  /// @brief Frees `gsi`; applies the table if it had a route.
  [[nodiscard]] Result<void> release(std::uint32_t gsi);
  /// @brief Applies the current table (e.g. once at VM setup, to check KVM accepts it).
  [[nodiscard]] Result<void> apply();

  /// @brief The MSI route of `gsi`, if it has one.
  [[nodiscard]] std::optional<pci::MsiMessage> msi(std::uint32_t gsi) const;
  /// @brief The current table, as `GsiRoutingTable::entries`.
  [[nodiscard]] std::vector<kvm_irq_routing_entry> entries() const;
  /// @brief How many tables were applied successfully (each one a KVM_SET_GSI_ROUTING).
  [[nodiscard]] std::uint64_t applied() const;

 private:
  // Applies `next` and adopts it on success (mutex_ held).
  Result<void> apply_locked(GsiRoutingTable next);

  ApplyRoutes apply_;
  mutable std::mutex mutex_;
  GsiRoutingTable table_;
  std::uint64_t applied_ = 0;
};

/// @brief `GsiRouting` applied to a VM with KVM_SET_GSI_ROUTING.
class KvmGsiRouting final : public GsiRouting {
 public:
  /// @brief Routes of `vm`, which must have the in-kernel irqchip and outlive this object.
  explicit KvmGsiRouting(const kvm::Vm& vm);
};

}  // namespace vmm::irq
