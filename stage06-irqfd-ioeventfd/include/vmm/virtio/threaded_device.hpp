#pragma once
/// @file
/// @brief `ThreadedDevice`: a `VirtioDevice` decorator that runs the wrapped device's queue work on a worker thread,
/// woken by eventfds (one per queue, which KVM signals as ioeventfds), so the vCPU never does the device's work.

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/virtio/queue_counters.hpp"
#include "vmm/virtio/virtio_device.hpp"

namespace vmm::virtio {

/// @brief Runs a device's queue processing on its own thread (in the spirit of Cloud Hypervisor's per-device epoll
/// handlers): everything else (type, features, configuration) is forwarded to the wrapped device unchanged.
///
/// While active, a worker thread runs an `event::EventManager` watching
/// - one eventfd per enabled queue (`queue_event`): KVM signals it when the guest writes the queue's notify address
///   (KVM_IOEVENTFD), without a userspace exit. The worker reads it (N kicks coalesce into one read of N), adds N to
///   the queue's `QueueCounters::notifications` (those kicks never reached the transport, which counts the others),
///   and calls the inner device's `queue_notify`;
/// - a fallback kick eventfd: a notification that still arrived as an MMIO exit (no ioeventfd registered for that
///   queue) comes in through `queue_notify`, which only marks the queue pending and wakes the worker;
/// - a stop eventfd, written by `reset` and the destructor.
///
/// Why nothing is lost or done twice: an eventfd is a counter, so a kick that lands while the worker is busy leaves it
/// readable and wakes the worker once more; the inner device drains its ring on every notify (and re-checks it after
/// re-enabling notifications), so a coalesced kick still gets every request served, and a surplus one finds an empty
/// ring. `reset` joins the worker before resetting the inner device, so nothing is processed after it returns.
///
/// Locking: `activate`, `reset` and the destructor are serialised by a lifecycle mutex that the worker never takes;
/// the worker holds no lock of this class while it calls into the inner device (which takes its own lock, and whose
/// interrupt path takes the transport's register mutex). So `reset` can join a worker that is in the middle of a
/// request without deadlock. `queue_notify` takes no lock at all (it may come from any vCPU thread).
class ThreadedDevice final : public VirtioDevice {
 public:
  /// @brief Wraps `inner` (required); creates one eventfd per queue (counter mode), the fallback kick and the stop
  /// eventfd. They are created once and kept across activations, so KVM registrations can be made against them.
  [[nodiscard]] static Result<std::shared_ptr<ThreadedDevice>> create(std::shared_ptr<VirtioDevice> inner);
  /// @brief Stops and joins the worker if it runs. Does not reset the inner device or call the activation observer:
  /// whoever tears the machine down does that (the transport resets its device in its own destructor).
  ~ThreadedDevice() override;

  /// @brief The inner device's.
  [[nodiscard]] std::uint16_t device_type() const override { return inner_->device_type(); }
  /// @brief The inner device's.
  [[nodiscard]] std::uint64_t features() const override { return inner_->features(); }
  /// @brief The inner device's.
  [[nodiscard]] std::vector<std::uint16_t> queue_max_sizes() const override { return inner_->queue_max_sizes(); }
  /// @brief The inner device's.
  [[nodiscard]] std::size_t config_size() const override { return inner_->config_size(); }
  /// @brief Forwarded to the inner device.
  void read_config(std::uint64_t offset, std::span<std::uint8_t> data) const override {
    inner_->read_config(offset, data);
  }
  /// @brief Forwarded to the inner device.
  void write_config(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    inner_->write_config(offset, data);
  }
  /// @brief The inner device's ("virtio-rng"): the guest and the tables see the same device.
  [[nodiscard]] std::string name() const override { return inner_->name(); }

  /// @brief Activates the inner device (it keeps the queues and the interrupt), then starts the worker thread, named
  /// "<name>-worker" (cut to 15 characters), and returns once it runs; then tells the activation observer (true). An
  /// error (the inner device refused, or no worker could be set up) leaves no worker running and the device idle.
  [[nodiscard]] Result<void> activate(Activation activation) override;
  /// @brief Tells the activation observer (false) first, so KVM stops signalling the queue eventfds; stops and joins
  /// the worker; drains the queue eventfds and the fallback kick (stale kicks must not reach the next activation);
  /// then resets the inner device.
  void reset() override;
  /// @brief The MMIO fallback (the transport counted the kick already): marks `queue_index` pending and wakes the
  /// worker, which calls the inner device's `queue_notify`. Never blocks.
  void queue_notify(std::uint16_t queue_index) override;

  /// @brief The eventfd KVM signals for queue `queue_index` (KVM_IOEVENTFD; a read of N is N coalesced kicks). Tests
  /// write it to play KVM. `queue_index` must be below the number of queues.
  [[nodiscard]] const event::EventFd& queue_event(std::uint16_t queue_index) const;
  /// @brief Number of queues (and of queue eventfds).
  [[nodiscard]] std::size_t queue_count() const noexcept { return queue_events_.size(); }
  /// @brief Called with true at the end of a successful `activate` and with false at the start of the `reset` that
  /// follows (NotifyIoeventfds::set_active hooks in here), with the lifecycle mutex held: the observer must not call
  /// `activate`, `reset` or this setter. Set it while the device is idle.
  void set_activation_observer(std::function<void(bool active)> observer);

  /// @brief True from a successful `activate` until `reset` (false after a worker failure, too).
  [[nodiscard]] bool worker_running() const noexcept;
  /// @brief The worker's thread ID (gettid, as `info threads` and /proc show it) while it runs.
  [[nodiscard]] std::optional<pid_t> worker_tid() const noexcept;
  /// @brief Times the worker woke and found a queue eventfd or the fallback kick set (over all activations).
  [[nodiscard]] std::uint64_t wakeups() const noexcept;
  /// @brief Kicks read from the queue eventfds: the sum of the values read (over all activations).
  [[nodiscard]] std::uint64_t ioeventfd_kicks() const noexcept;
  /// @brief The error that stopped the worker early, if any (it is also reported through `Activation::needs_reset`).
  [[nodiscard]] std::optional<Error> worker_error() const;

 private:
  class Subscriber;

  ThreadedDevice(std::shared_ptr<VirtioDevice> inner, std::vector<event::EventFd> queue_events,
                 event::EventFd kick_event, event::EventFd stop_event);

  // Stops and joins the worker (lifecycle_mutex_ held); true if one was running.
  bool stop_worker_locked();
  // Empties an eventfd, ignoring errors (there is nothing to do about one, and the next read would report it).
  static void drain(const event::EventFd& event);
  // The worker hit an error it cannot continue from: keep it and stop (worker thread).
  void fail_worker(Error error, const std::function<void(const Error&)>& needs_reset);

  std::shared_ptr<VirtioDevice> inner_;
  std::vector<event::EventFd> queue_events_;
  event::EventFd kick_event_;
  event::EventFd stop_event_;
  // Per queue: a fallback notification waits for the worker. Atomic flags rather than a locked set, so neither
  // queue_notify nor the worker ever holds a lock of ours.
  std::unique_ptr<std::atomic<bool>[]> pending_;

  // Serialises activate, reset, the destructor and the observer setter; the worker never takes it.
  std::mutex lifecycle_mutex_;
  std::function<void(bool)> observer_;    // lifecycle_mutex_
  std::vector<QueueCounters*> counters_;  // lifecycle_mutex_: the active queues' counters (null: not enabled)
  bool active_ = false;                   // lifecycle_mutex_: activate succeeded, reset not yet called
  std::thread worker_;                    // lifecycle_mutex_

  std::atomic<bool> running_{false};
  std::atomic<pid_t> tid_{0};
  std::atomic<std::uint64_t> wakeups_{0};
  std::atomic<std::uint64_t> ioeventfd_kicks_{0};
  mutable std::mutex error_mutex_;
  std::optional<Error> worker_error_;  // error_mutex_
};

}  // namespace vmm::virtio
