#pragma once
/// @file
/// @brief `MsixRoutes`: one device's MSI-X vectors as KVM GSI routes and irqfds, kept in step with the guest's table.

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/pci/msi.hpp"
#include "vmm/pci/msix.hpp"

namespace vmm::irq {

/// @brief What one MSI-X vector is wired to, for tests, the demo and gdb.
struct VectorRoute {
  std::uint16_t vector = 0;                ///< The MSI-X table entry.
  std::uint32_t gsi = 0;                   ///< Its GSI (fixed for the device's lifetime).
  std::optional<pci::MsiMessage> message;  ///< The MSI route installed on the GSI; nothing while masked/disabled.
  std::uint64_t signals = 0;               ///< Writes to its irqfd so far.
  /// @brief Equal when every field is.
  bool operator==(const VectorRoute&) const = default;
};

/// @brief The interrupt side of one MSI-X function with irqfds: a GSI and an irqfd per vector, and GSI routes that
/// follow the guest's MSI-X table.
///
/// Why routes: an irqfd names a GSI, not a message. For the irqfd of vector v to send what the guest programmed in
/// entry v, GSI(v) needs an MSI route with that address/data, and the route must change when the guest changes the
/// entry. So `MsixRoutes` observes its `pci::MsixTable` (`attach`) and, after every change, makes GSI(v)'s route:
/// - the entry's current address/data when the vector is deliverable: MSI-X enabled, function not masked, vector not
///   masked (reprogramming a vector, "vector reuse", replaces the route);
/// - no route otherwise. Nothing writes the irqfd of a masked vector anyway: the table sets its PBA bit instead, and
///   delivers it through `signal` when unmasked.
///
/// It is also the table's `pci::MsiSink`: `signal(message, v)` makes sure GSI(v) routes `message` (the observer may
/// not have run yet when a release happens on another thread; normally this is a no-op) and writes v's irqfd; KVM
/// then sends the message. A device worker thread can do the same by writing `irqfd(v)` directly once the routes are
/// in step. Setup is two-phase because each needs the other: `create` the routes, create the table with them as its
/// sink, then `attach` the table.
///
/// Testable without KVM: routes go through a `GsiRouting` (whose apply function a test records) and irqfds are bound
/// with an `IrqfdBinder` (a test fake; `KvmIrqfdBinder` in a VM). One eventfd per vector is created.
/// Thread-safe: a mutex serialises the route updates of observer calls and signals (lock order: this, then the
/// table's, then the routing's); each update re-reads the table, so the last one installs the latest state.
class MsixRoutes final : public pci::MsiSink {
 public:
  /// @brief Allocates `vectors` GSIs from `routing` and binds a new eventfd to each with `binder`; both must outlive
  /// the routes. No route yet: vectors start masked.
  [[nodiscard]] static Result<std::unique_ptr<MsixRoutes>> create(std::uint16_t vectors, GsiRouting& routing,
                                                                  IrqfdBinder& binder);
  MsixRoutes(const MsixRoutes&) = delete;
  MsixRoutes& operator=(const MsixRoutes&) = delete;
  MsixRoutes(MsixRoutes&&) = delete;
  MsixRoutes& operator=(MsixRoutes&&) = delete;
  /// @brief Unbinds the irqfds and releases the GSIs (and their routes). The table must not be used afterwards (it
  /// holds the routes as its sink).
  ~MsixRoutes() override;

  /// @brief Follows `table` (same number of vectors): installs its observer and brings every route in step now.
  [[nodiscard]] Result<void> attach(pci::MsixTable& table);
  /// @brief Brings vector `vector`'s route in step with the attached table (what the observer does).
  [[nodiscard]] Result<void> sync(std::uint16_t vector);
  /// @brief Called after each table change has been brought into the routes (the table's observer is ours, so this
  /// is how others follow the guest's MSI-X programming: stage07 re-points a vhost-user backend's call fd when a
  /// vector loses or regains its route). Called on the thread that changed the table, without this class's lock and
  /// before the table delivers what the change released; it must not call `attach` or `set_listener`.
  void set_listener(std::function<void(std::uint16_t vector)> listener);

  /// @brief Routes GSI(vector) to `message` if it is not already, then writes vector's irqfd.
  Result<void> signal(const pci::MsiMessage& message, std::uint16_t vector) override;

  /// @brief N.
  [[nodiscard]] std::uint16_t vectors() const noexcept { return static_cast<std::uint16_t>(vectors_.size()); }
  /// @brief The GSI of `vector` (nothing if out of range).
  [[nodiscard]] std::optional<std::uint32_t> gsi(std::uint16_t vector) const;
  /// @brief The irqfd of `vector` (nullptr if out of range): a write interrupts the guest with the routed message.
  [[nodiscard]] const event::EventFd* irqfd(std::uint16_t vector) const;
  /// @brief What `vector` is wired to now (nothing if out of range).
  [[nodiscard]] std::optional<VectorRoute> route(std::uint16_t vector) const;
  /// @brief Every vector's `route`, in order.
  [[nodiscard]] std::vector<VectorRoute> routes() const;
  /// @brief Irqfd writes of all vectors.
  [[nodiscard]] std::uint64_t signals() const;
  /// @brief The latest error of an observer-driven update (a guest write cannot fail), if any.
  [[nodiscard]] std::optional<Error> last_error() const;

 private:
  struct Vector {
    std::uint32_t gsi;
    event::EventFd irqfd;
    bool bound = false;
    std::uint64_t signals = 0;
  };

  MsixRoutes(GsiRouting& routing, IrqfdBinder& binder) : routing_(routing), binder_(binder) {}
  // Makes vector's route what the table says (mutex_ held).
  Result<void> sync_locked(std::uint16_t vector);

  GsiRouting& routing_;
  IrqfdBinder& binder_;
  mutable std::mutex mutex_;
  std::vector<Vector> vectors_;  // fixed after create: read without the lock where only gsi/irqfd are needed
  pci::MsixTable* table_ = nullptr;
  std::function<void(std::uint16_t)> listener_;  // mutex_
  std::optional<Error> last_error_;
};

}  // namespace vmm::irq
