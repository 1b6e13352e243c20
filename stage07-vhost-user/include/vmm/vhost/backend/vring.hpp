#pragma once
/// @file
/// @brief `Vring`: one virtqueue as a vhost-user frontend configures it (size, addresses, base, enable, kick, call,
/// err), and `VringWorker`: the thread that waits for the ring's kicks and hands them to the device model.

// uapi.hpp first: it sets the macros the kernel's virtio headers (which vhost_types.h includes) need in C++.
#include "vmm/virtio/uapi.hpp"

#include <linux/vhost_types.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/fd.hpp"
#include "vmm/virtio/queue_counters.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/virtio_device.hpp"

namespace vmm::vhost {

/// @brief What the frontend told the backend about one ring. Plain data, owned by the session's thread (the
/// `BackendHandler` touches it only with its lock held); the workers never read it.
struct VringConfig {
  std::uint16_t num = 0;                 ///< SET_VRING_NUM: entries; 0 until set.
  std::optional<vhost_vring_addr> addr;  ///< SET_VRING_ADDR: the three areas as frontend virtual addresses.
  std::uint16_t next_avail = 0;          ///< SET_VRING_BASE; where a stopped ring resumes in the available ring.
  std::uint16_t next_used = 0;           ///< Where a stopped ring resumes in the used ring (SET_VRING_BASE sets both).
  /// @brief SET_VRING_ENABLE's last word; nothing until one arrives (the default then depends on whether
  /// VHOST_USER_F_PROTOCOL_FEATURES was negotiated, whenever that happens: message order does not matter).
  std::optional<bool> enabled;
  Fd kick;  ///< SET_VRING_KICK: the eventfd the driver's notifications arrive on (non-blocking).
};

/// @brief One ring as tests, the demo and gdb see it.
struct VringSnapshot {
  std::uint16_t index = 0;                    ///< Queue index.
  std::uint16_t max_size = 0;                 ///< The device's maximum size for this queue.
  std::uint16_t num = 0;                      ///< Configured size (0: not set).
  std::uint16_t next_avail = 0;               ///< Next available index: live (base + chains consumed) while running.
  std::uint16_t next_used = 0;                ///< Next used index: live while running.
  bool enabled = false;                       ///< Enabled, explicitly or by default.
  bool has_kick = false;                      ///< A kick fd is set.
  bool has_call = false;                      ///< A call fd is set.
  bool has_err = false;                       ///< An err fd is set.
  bool running = false;                       ///< Part of the current activation, with a worker.
  std::optional<vhost_vring_addr> addr;       ///< Frontend virtual addresses, once set.
  std::optional<virtio::QueueLayout> layout;  ///< Guest-physical layout while running.
  virtio::QueueCountersSnapshot counters;     ///< Counters over the handler's whole life (all activations).
  std::uint64_t interrupts_dropped = 0;       ///< Interrupts the device asked for while no call fd was set.
  std::uint64_t err_signals = 0;              ///< Times the err fd was written.
};

/// @brief One vhost-user ring: its configuration (`config()`, session thread only), its call and err eventfds
/// (thread-safe: the frontend may swap the call fd at any time, QEMU does on every MSI-X vector mask/unmask, while a
/// worker is signalling it), and its counters.
///
/// Counters: one `QueueCounters` per ring for the handler's whole life, shared with each `SplitQueue` built for it.
/// When an activation ends they are folded into a cumulative total and cleared, so the live counters always describe
/// the current activation: that is what lets the handler compute where the device stopped (`chains` consumed since
/// the base) without asking the device.
class Vring {
 public:
  /// @brief Ring `index` of a device whose queue may hold at most `max_size` entries.
  Vring(std::uint16_t index, std::uint16_t max_size);

  /// @brief Queue index.
  [[nodiscard]] std::uint16_t index() const noexcept { return index_; }
  /// @brief The device's maximum queue size.
  [[nodiscard]] std::uint16_t max_size() const noexcept { return max_size_; }
  /// @brief The frontend's configuration (session thread).
  [[nodiscard]] VringConfig& config() noexcept { return config_; }
  /// @brief The frontend's configuration (session thread).
  [[nodiscard]] const VringConfig& config() const noexcept { return config_; }

  /// @brief Replaces the call fd (an empty `Fd`: none); the old one is closed. Any thread.
  void set_call(Fd fd);
  /// @brief Replaces the err fd (an empty `Fd`: none); the old one is closed. Any thread.
  void set_err(Fd fd);
  /// @brief True when a call fd is set.
  [[nodiscard]] bool has_call() const;
  /// @brief True when an err fd is set.
  [[nodiscard]] bool has_err() const;
  /// @brief Writes 1 to the call eventfd: true if written, false (and counted as dropped) when there is none.
  [[nodiscard]] Result<bool> signal_call();
  /// @brief Writes 1 to the err eventfd: true if written, false when there is none.
  [[nodiscard]] Result<bool> signal_err();

  /// @brief The live counters, shared with the `SplitQueue` of the current activation.
  [[nodiscard]] const std::shared_ptr<virtio::QueueCounters>& counters() const noexcept { return counters_; }
  /// @brief Ends an activation's accounting: returns the live counters, adds them to the cumulative total and clears
  /// them (session thread, with no worker and no device using the queue).
  virtio::QueueCountersSnapshot fold_counters();
  /// @brief Cumulative plus live counters.
  [[nodiscard]] virtio::QueueCountersSnapshot total_counters() const;

  /// @brief Guest-physical layout of the current activation (session thread); nothing while not running.
  std::optional<virtio::QueueLayout> running_layout;

  /// @brief Forgets everything the frontend configured and closes the ring's fds (RESET_OWNER, disconnect). The
  /// cumulative counters stay: they are the handler's history.
  void forget();

  /// @brief The ring's state now (session thread; the counters part is safe from anywhere).
  [[nodiscard]] VringSnapshot snapshot(bool enabled_by_default) const;

 private:
  std::uint16_t index_;
  std::uint16_t max_size_;
  VringConfig config_;
  std::shared_ptr<virtio::QueueCounters> counters_ = std::make_shared<virtio::QueueCounters>();
  virtio::QueueCountersSnapshot cumulative_;  // session thread

  mutable std::mutex fd_mutex_;  // a leaf lock: nothing is called with it held but write(2)
  Fd call_;                      // fd_mutex_
  Fd err_;                       // fd_mutex_
  std::atomic<std::uint64_t> interrupts_dropped_{0};
  std::atomic<std::uint64_t> err_signals_{0};
};

/// @brief What a `VringWorker` serves.
struct VringWorkerParams {
  std::string thread_name;                          ///< Thread name (at most 15 characters are kept).
  std::uint16_t queue = 0;                          ///< Queue index passed to `queue_notify`.
  int kick_fd = -1;                                 ///< The ring's kick eventfd; must stay open until `stop`.
  std::shared_ptr<virtio::QueueCounters> counters;  ///< Where kicks are counted (`notifications`).
  std::shared_ptr<virtio::VirtioDevice> device;     ///< The device to notify.
  std::function<void(const Error&)> on_error;       ///< The kick fd broke (called on the worker thread).
};

/// @brief One thread per running ring: an `event::EventManager` watching the ring's kick eventfd and a stop eventfd.
///
/// On start it calls `queue_notify` once (the driver may have published requests before the ring was started, and
/// their kick went to a ring nobody watched). On a kick it reads the eventfd (N kicks coalesce into one read of N),
/// adds N to the ring's `notifications` and calls `queue_notify`; the device drains the ring on every notify, so a
/// coalesced kick loses nothing. A kick fd that fails (EOF on a pipe, a read error) is unwatched and reported through
/// `on_error`: the ring then stops being served, the rest of the process goes on.
///
/// Locking: the worker takes no lock of the handler's. Whoever stops it may hold its own locks while joining, as long
/// as the device and `on_error` never wait for them.
class VringWorker {
 public:
  /// @brief Creates the stop eventfd and the event manager, starts the thread and returns once it runs (named).
  [[nodiscard]] static Result<std::unique_ptr<VringWorker>> start(VringWorkerParams params);
  VringWorker(const VringWorker&) = delete;
  VringWorker& operator=(const VringWorker&) = delete;
  VringWorker(VringWorker&&) = delete;
  VringWorker& operator=(VringWorker&&) = delete;
  /// @brief Stops and joins the thread.
  ~VringWorker();

  /// @brief Asks the thread to stop and joins it. Idempotent. When it returns, the worker makes no more calls into
  /// the device.
  void stop();
  /// @brief The thread's id while it runs (for gdb and /proc/self/task).
  [[nodiscard]] std::optional<pid_t> tid() const noexcept;
  /// @brief Kick reads that found a non-zero counter.
  [[nodiscard]] std::uint64_t wakeups() const noexcept { return wakeups_.load(std::memory_order_relaxed); }

 private:
  class Subscriber;
  VringWorker(VringWorkerParams params, event::EventFd stop_event);

  VringWorkerParams params_;
  event::EventFd stop_event_;
  std::thread thread_;
  std::atomic<pid_t> tid_{0};
  std::atomic<std::uint64_t> wakeups_{0};
};

/// @brief "vu-<device>-q<N>" cut to 15 characters, with the "virtio-" prefix of the device's name dropped:
/// "vu-rng-q0".
[[nodiscard]] std::string vring_worker_name(const std::string& device_name, std::uint16_t queue);

}  // namespace vmm::vhost
