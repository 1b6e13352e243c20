#pragma once
/// @file
/// @brief `Ioeventfd`: one KVM_IOEVENTFD registration, and `NotifyIoeventfds`: a virtio-pci device's queue notify
/// addresses registered as ioeventfds, following BAR0 as the guest moves it and the device as it activates and resets.

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/kvm/vm.hpp"
#include "vmm/virtio/virtio_pci_device.hpp"

namespace vmm::virtio {

/// @brief Which address space an ioeventfd watches.
enum class IoeventfdSpace : std::uint8_t {
  Mmio,  ///< Guest-physical MMIO (the address must not be backed by a memory slot, or the write never traps).
  Pio,   ///< I/O ports (KVM_IOEVENTFD_FLAG_PIO); the address must fit in 16 bits.
};

/// @brief What a guest write must look like to signal the eventfd.
struct IoeventfdSpec {
  std::uint64_t address = 0;  ///< Guest-physical address or port.
  /// Access width that matches: 1, 2, 4 or 8; or 0 for "any width" (KVM_CAP_IOEVENTFD_ANY_LENGTH; then the written
  /// value is not looked at, so no datamatch). KVM compares the address and the width exactly: a write of another
  /// width, or one that merely overlaps, still exits to userspace.
  std::uint32_t length = 2;
  /// With a value, only writes of exactly this value signal (KVM_IOEVENTFD_FLAG_DATAMATCH); others exit to
  /// userspace. Several ioeventfds can then share one address, one per value.
  std::optional<std::uint64_t> datamatch;
  IoeventfdSpace space = IoeventfdSpace::Mmio;  ///< MMIO or port I/O.

  /// @brief "mmio 0xc0003000 len 2" or "pio 0x6000 len 2 datamatch 0x1", for errors and traces.
  [[nodiscard]] std::string describe() const;
  /// @brief Equal when every field is.
  bool operator==(const IoeventfdSpec&) const = default;
};

/// @brief One KVM_IOEVENTFD registration: assigned by `create`, deassigned by the destructor.
///
/// While it exists, a matching guest write completes inside KVM: KVM signals the eventfd (adds 1 to its counter)
/// and resumes the guest, with no return from KVM_RUN. It keeps its own duplicate of the eventfd (`try_clone`): KVM
/// identifies the registration to deassign by the eventfd it was given, so holding our own reference means the
/// deassign works even if the owner has closed or replaced its descriptor meanwhile. Move-only. The VM must outlive it.
class Ioeventfd {
 public:
  /// @brief KVM_IOEVENTFD (assign) on `vm` for `spec`, signalling `event`. Errors name KVM_IOEVENTFD, the address and
  /// the errno: EEXIST when a registration for the same address, width and value (or any value) already exists,
  /// EINVAL for a width KVM refuses. A spec KVM would refuse anyway (a port above 0xffff, datamatch with length 0, a
  /// width not in {0,1,2,4,8}) is refused here without the ioctl.
  [[nodiscard]] static Result<Ioeventfd> create(const kvm::Vm& vm, const event::EventFd& event,
                                                const IoeventfdSpec& spec);
  /// @brief Takes over `other`'s registration; `other` is left holding none.
  Ioeventfd(Ioeventfd&& other) noexcept;
  /// @brief Deassigns the held registration (if any), then takes over `other`'s.
  Ioeventfd& operator=(Ioeventfd&& other) noexcept;
  Ioeventfd(const Ioeventfd&) = delete;
  Ioeventfd& operator=(const Ioeventfd&) = delete;
  /// @brief Deassigns (errors ignored: the registration goes away with the VM anyway).
  ~Ioeventfd();

  /// @brief KVM_IOEVENTFD with KVM_IOEVENTFD_FLAG_DEASSIGN now; afterwards this object holds nothing.
  [[nodiscard]] Result<void> deassign();
  /// @brief What it was registered for.
  [[nodiscard]] const IoeventfdSpec& spec() const noexcept { return spec_; }
  /// @brief False after `deassign` or a move.
  [[nodiscard]] bool assigned() const noexcept { return vm_ != nullptr; }

 private:
  Ioeventfd(const kvm::Vm& vm, event::EventFd event, IoeventfdSpec spec)
      : vm_(&vm), event_(std::move(event)), spec_(spec) {}

  const kvm::Vm* vm_;  // null once deassigned or moved from
  event::EventFd event_;
  IoeventfdSpec spec_;
};

/// @brief Where a virtio-pci device's queue notify addresses are inside BAR0 (its `virtio_pci_notify_cap`).
struct NotifyLayout {
  std::uint32_t notify_offset = VirtioPciDevice::kNotifyOffset;  ///< The notify area's offset in BAR0.
  /// `notify_off_multiplier`: queue q's address is the area + q * multiplier (queue_notify_off = q). Must not be 0
  /// here: with 0 every queue shares one address, and one ioeventfd per queue would need datamatch on the queue
  /// index the driver writes (`IoeventfdSpec::datamatch`), which `NotifyIoeventfds` does not set up.
  std::uint32_t multiplier = VirtioPciDevice::kNotifyOffMultiplier;
  IoeventfdSpace space = IoeventfdSpace::Mmio;  ///< BAR0 is a memory BAR for vmmlab's transport.
};

/// @brief KVM_IOEVENTFD registrations for one virtio-pci device's queues, present exactly while BAR0 is placed
/// and the device is active.
///
/// Queue q's registration is {BAR0 base + notify_offset + q * multiplier, length 2, no datamatch}: the driver writes
/// the 16-bit queue index there, and since each queue has an address of its own the value need not be matched.
///
/// Why both conditions: before activation there is no worker reading the eventfds (a kick would sit in the counter
/// until the next activation, which must start clean), and when the guest moves BAR0 the old addresses mean nothing
/// any more (another BAR may be placed there next). So the PciRoot's BAR observer calls `bar0_placed` (the base, or
/// nothing when BAR0 leaves the bus) and the device's activation observer calls `set_active`; each change that moves
/// the wanted base removes the registrations at the old one first, then registers at the new one. Repeated calls
/// with the same state change nothing (KVM would answer EEXIST to a second identical registration).
///
/// A kick that finds no registration is not lost: it exits to userspace as an MMIO write, and the transport
/// delivers it the slow way. So registration errors do not stop anything: they are kept for `last_error` (and the
/// queues that did register stay registered); nothing here crashes or throws.
///
/// Thread-safe: one mutex serialises every call. `bar0_placed` runs on a vCPU thread with the root's lock held, and
/// `set_active` on whatever thread activates or resets the device with its lifecycle lock held; this class calls
/// nothing but KVM under its own mutex, so there is no lock-order cycle. The VM and the eventfds must outlive it.
class NotifyIoeventfds {
 public:
  /// @brief For a device whose queue q is signalled through `*queue_events[q]` (owned elsewhere, e.g. by a
  /// `ThreadedDevice`); nothing is registered until BAR0 is placed and the device is active.
  NotifyIoeventfds(const kvm::Vm& vm, std::vector<const event::EventFd*> queue_events, NotifyLayout layout = {});
  NotifyIoeventfds(const NotifyIoeventfds&) = delete;
  NotifyIoeventfds& operator=(const NotifyIoeventfds&) = delete;
  NotifyIoeventfds(NotifyIoeventfds&&) = delete;
  NotifyIoeventfds& operator=(NotifyIoeventfds&&) = delete;
  /// @brief Deassigns what is registered.
  ~NotifyIoeventfds() = default;

  /// @brief BAR0 was placed at `base`, or removed from the bus (nullopt).
  void bar0_placed(std::optional<std::uint64_t> base);
  /// @brief The device was activated (true) or is being reset (false).
  void set_active(bool active);

  /// @brief The notify address of queue `queue_index` for a BAR0 at `bar0_base`.
  [[nodiscard]] std::uint64_t notify_address(std::uint64_t bar0_base, std::uint16_t queue_index) const noexcept;
  /// @brief The addresses registered now, by queue (a queue whose registration failed is missing).
  [[nodiscard]] std::vector<std::uint64_t> registered() const;
  /// @brief Where BAR0 is, as last reported.
  [[nodiscard]] std::optional<std::uint64_t> bar0() const;
  /// @brief Whether the device is active, as last reported.
  [[nodiscard]] bool active() const;
  /// @brief The most recent registration or deassignment error, if any.
  [[nodiscard]] std::optional<Error> last_error() const;
  /// @brief How many registration errors there were in all.
  [[nodiscard]] std::uint64_t error_count() const;

 private:
  // Makes the registrations match bar0_ && active_ (mutex_ held).
  void update_locked();

  const kvm::Vm& vm_;
  const std::vector<const event::EventFd*> queue_events_;
  const NotifyLayout layout_;
  mutable std::mutex mutex_;
  std::optional<std::uint64_t> bar0_;
  bool active_ = false;
  std::optional<std::uint64_t> registered_base_;  // the base the registrations below were made for
  std::vector<Ioeventfd> registrations_;
  std::optional<Error> last_error_;
  std::uint64_t error_count_ = 0;
};

}  // namespace vmm::virtio
