#pragma once
/// @file
/// @brief irqfds: an eventfd KVM reads to inject an interrupt on a GSI (KVM_IRQFD). `Irqfd` owns one registration,
/// `IrqfdBinder` abstracts registration for code that must be testable without KVM, and `IrqfdLine` is a legacy
/// level-triggered `devices::IrqLine` driven by a resampling irqfd.
///
/// Why: with KVM_IRQ_LINE (stage03) or KVM_SIGNAL_MSI (stage04) every interrupt is an ioctl from the thread that
/// raises it. An irqfd is a plain write(2) on an eventfd: any thread (a device worker woken by an ioeventfd) can
/// interrupt the guest, and a kernel producer (vhost, VFIO) can even do so without userspace at all.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "vmm/devices/irq_line.hpp"
#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm::irq {

/// @brief KVM_IRQFD: from now on a write to `event` interrupts `gsi` as its route says.
///
/// Without `resample`, each signal is an edge: KVM asserts and de-asserts the GSI (for an MSI route: sends the
/// message). With `resample` (KVM_IRQFD_FLAG_RESAMPLE, only for GSIs routed to the PIC/IOAPIC) a signal asserts the
/// GSI and leaves it asserted; when the guest EOIs it, KVM de-asserts it and signals `resample`. Needs the in-kernel
/// irqchip. KVM refuses (EBUSY) the same eventfd twice on one VM.
[[nodiscard]] Result<void> assign_irqfd(const kvm::Vm& vm, const event::EventFd& event, std::uint32_t gsi,
                                        const event::EventFd* resample = nullptr);
/// @brief KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN: `event` no longer interrupts `gsi`. KVM finds the irqfd by
/// (eventfd, GSI) and waits until it is shut down, so the eventfd can be assigned again right away.
[[nodiscard]] Result<void> deassign_irqfd(const kvm::Vm& vm, const event::EventFd& event, std::uint32_t gsi);

/// @brief An eventfd registered with KVM as an irqfd on one GSI, deregistered when destroyed (RAII). Move-only.
///
/// The `Irqfd` keeps its own descriptor for the eventfd: `trigger()` (or a write on `event()` from anywhere) injects.
/// The VM must outlive it.
class Irqfd {
 public:
  /// @brief How the GSI is driven.
  enum class Mode : std::uint8_t {
    Edge,      ///< Each signal asserts then de-asserts (MSI routes, edge-triggered lines).
    Resample,  ///< A signal asserts until the guest's EOI; then KVM de-asserts and signals `resample_event()`.
  };

  /// @brief New eventfd(s), registered on `gsi` of `vm`. Errors name KVM_IRQFD and the GSI.
  [[nodiscard]] static Result<Irqfd> assign(const kvm::Vm& vm, std::uint32_t gsi, Mode mode = Mode::Edge);
  /// @brief Takes over `other`'s registration; `other` is left deassigned.
  Irqfd(Irqfd&& other) noexcept;
  /// @brief Deassigns this one, then takes over `other`'s registration.
  Irqfd& operator=(Irqfd&& other) noexcept;
  Irqfd(const Irqfd&) = delete;
  Irqfd& operator=(const Irqfd&) = delete;
  /// @brief Deassigns (errors cannot be reported from a destructor; call `deassign` to see them).
  ~Irqfd();

  /// @brief Writes 1 to the eventfd: KVM injects.
  [[nodiscard]] Result<void> trigger() const { return event_.write(1); }
  /// @brief Deassigns now (idempotent: a second call does nothing).
  [[nodiscard]] Result<void> deassign();

  /// @brief The GSI.
  [[nodiscard]] std::uint32_t gsi() const noexcept { return gsi_; }
  /// @brief The eventfd KVM reads.
  [[nodiscard]] const event::EventFd& event() const noexcept { return event_; }
  /// @brief The eventfd KVM signals at EOI (Resample mode), or nullptr.
  [[nodiscard]] const event::EventFd* resample_event() const noexcept { return resample_ ? &*resample_ : nullptr; }
  /// @brief True until deassigned (or moved from).
  [[nodiscard]] bool assigned() const noexcept { return vm_ != nullptr; }

 private:
  Irqfd(const kvm::Vm& vm, std::uint32_t gsi, event::EventFd event, std::optional<event::EventFd> resample)
      : vm_(&vm), gsi_(gsi), event_(std::move(event)), resample_(std::move(resample)) {}

  const kvm::Vm* vm_;  // nullptr once deassigned or moved from
  std::uint32_t gsi_;
  event::EventFd event_;
  std::optional<event::EventFd> resample_;
};

/// @brief Registers eventfds as irqfds (KVM_IRQFD in a VM; a recorder in unit tests), so that code which owns
/// irqfds (`MsixRoutes`) can be tested without KVM.
class IrqfdBinder {
 public:
  IrqfdBinder() = default;
  IrqfdBinder(const IrqfdBinder&) = delete;
  IrqfdBinder& operator=(const IrqfdBinder&) = delete;
  IrqfdBinder(IrqfdBinder&&) = delete;
  IrqfdBinder& operator=(IrqfdBinder&&) = delete;
  virtual ~IrqfdBinder() = default;

  /// @brief `event` now interrupts `gsi` (edge mode).
  [[nodiscard]] virtual Result<void> bind(const event::EventFd& event, std::uint32_t gsi) = 0;
  /// @brief `event` no longer interrupts `gsi`.
  [[nodiscard]] virtual Result<void> unbind(const event::EventFd& event, std::uint32_t gsi) = 0;
};

/// @brief `IrqfdBinder` with KVM_IRQFD on a VM (which must outlive it).
class KvmIrqfdBinder final : public IrqfdBinder {
 public:
  /// @brief Binds on `vm`.
  explicit KvmIrqfdBinder(const kvm::Vm& vm) : vm_(vm) {}
  /// @brief `assign_irqfd`.
  Result<void> bind(const event::EventFd& event, std::uint32_t gsi) override { return assign_irqfd(vm_, event, gsi); }
  /// @brief `deassign_irqfd`.
  Result<void> unbind(const event::EventFd& event, std::uint32_t gsi) override {
    return deassign_irqfd(vm_, event, gsi);
  }

 private:
  const kvm::Vm& vm_;
};

/// @brief A legacy level-triggered interrupt line (GSI n, routed to the PIC/IOAPIC) driven by a resampling irqfd.
///
/// A level-triggered line must stay asserted while the device wants service, and the guest must be interrupted again
/// if it EOIs while the device is still asserting. KVM cannot ask the device, so KVM_IRQFD_FLAG_RESAMPLE splits it:
/// - `raise()` records "high" and, on a low-to-high change, writes the irqfd: KVM asserts the GSI and keeps it so;
/// - `lower()` only records "low": KVM de-asserts the line itself at the guest's EOI;
/// - at that EOI KVM signals the resample eventfd; `handle_resample()` then re-asserts if the level is still high
///   (the device was not fully serviced, or raised again in between).
/// The guest sees a line that is high from the first raise until the EOI after the device lowered it: a level
/// line as the PIC/IOAPIC sample it. Devices (stage03's Uart16550) use it unchanged, as any `IrqLine`.
///
/// Who calls `handle_resample`: with `Resampler::Thread` the line owns a small thread that poll(2)s the resample
/// eventfd (simple, one thread per line; stopped and joined by the destructor). With `Resampler::Manual` the owner
/// calls it whenever `resample_fd()` is readable (an event loop, or a test that wants every step deterministic).
/// The thread stops at its first error, which `last_error` keeps (none is expected: both eventfds are ours).
/// Thread-safe: a mutex orders the level against the re-assert decision.
class IrqfdLine final : public devices::IrqLine {
 public:
  /// @brief Who runs `handle_resample`.
  enum class Resampler : std::uint8_t {
    Thread,  ///< A thread owned by the line.
    Manual,  ///< The owner, when `resample_fd()` is readable.
  };

  /// @brief The line for `gsi` (< 24, routed to the irqchip) of `vm`, which must have the in-kernel irqchip and
  /// outlive the line.
  [[nodiscard]] static Result<std::unique_ptr<IrqfdLine>> create(const kvm::Vm& vm, std::uint32_t gsi,
                                                                 Resampler resampler = Resampler::Thread);
  IrqfdLine(const IrqfdLine&) = delete;
  IrqfdLine& operator=(const IrqfdLine&) = delete;
  IrqfdLine(IrqfdLine&&) = delete;
  IrqfdLine& operator=(IrqfdLine&&) = delete;
  /// @brief Stops the resample thread, then deassigns the irqfd (KVM de-asserts the GSI).
  ~IrqfdLine() override;

  /// @brief Level high; asserts through the irqfd if it was low.
  Result<void> raise() override;
  /// @brief Level low (recorded only: KVM de-asserts at the guest's EOI).
  Result<void> lower() override;

  /// @brief Consumes a resample signal (the guest EOI'd the GSI, KVM de-asserted it) and re-asserts if the level is
  /// high. Returns false if there was no signal to consume.
  [[nodiscard]] Result<bool> handle_resample();
  /// @brief The resample eventfd's descriptor, readable after an EOI (for `Resampler::Manual`).
  [[nodiscard]] int resample_fd() const noexcept { return irqfd_.resample_event()->fd(); }

  /// @brief The GSI.
  [[nodiscard]] std::uint32_t gsi() const noexcept { return irqfd_.gsi(); }
  /// @brief The level the device last set.
  [[nodiscard]] bool level() const;
  /// @brief Writes to the irqfd so far (raises from low, and re-asserts after resamples).
  [[nodiscard]] std::uint64_t asserts() const;
  /// @brief Resample signals consumed so far (guest EOIs seen).
  [[nodiscard]] std::uint64_t resamples() const;
  /// @brief The latest error of the resample thread, if any.
  [[nodiscard]] std::optional<Error> last_error() const;

 private:
  IrqfdLine(Irqfd irqfd, std::optional<event::EventFd> stop);
  // The resample thread: poll(2) on the resample and stop eventfds.
  void resample_loop();
  // Writes the irqfd (mutex_ held).
  Result<void> assert_locked();

  Irqfd irqfd_;
  std::optional<event::EventFd> stop_;  // Resampler::Thread only: wakes the thread to exit
  mutable std::mutex mutex_;
  bool level_ = false;
  std::uint64_t asserts_ = 0;
  std::uint64_t resamples_ = 0;
  std::optional<Error> last_error_;
  std::jthread thread_;  // last: started after everything it uses, joined first
};

}  // namespace vmm::irq
