#pragma once
/// @file
/// @brief `QueueCounters`: what happened on one virtqueue, counted where it happens, readable from any thread.

#include <atomic>
#include <cstdint>

namespace vmm::virtio {

/// @brief A copy of a queue's counters at one moment.
struct QueueCountersSnapshot {
  std::uint64_t notifications = 0;          ///< Driver notifications ("kicks") the device received for this queue.
  std::uint64_t interrupts = 0;             ///< Used-buffer notifications (interrupts) sent to the driver.
  std::uint64_t interrupts_suppressed = 0;  ///< Times the device had used buffers but the driver said "not now".
  std::uint64_t chains = 0;                 ///< Descriptor chains taken from the available ring and checked.
  std::uint64_t used = 0;                   ///< Entries put in the used ring.
  std::uint64_t errors = 0;                 ///< Chains or ring states refused as spec violations.
  /// @brief Equal when every counter is.
  bool operator==(const QueueCountersSnapshot&) const = default;
};

/// @brief The counters of one virtqueue. Each is bumped by whoever observes the event: the transport counts
/// notifications and interrupts, `SplitQueue` counts chains, used entries, suppressed interrupts and errors.
///
/// Shared (`std::shared_ptr`) between the transport, which owns it for the device's lifetime, and the `SplitQueue`
/// built when the driver enables the queue. Relaxed atomics: they are statistics, read by the demo, the lab and gdb
/// while vCPU threads (and from stage06 device threads) update them.
struct QueueCounters {
  std::atomic<std::uint64_t> notifications{0};          ///< See `QueueCountersSnapshot`.
  std::atomic<std::uint64_t> interrupts{0};             ///< See `QueueCountersSnapshot`.
  std::atomic<std::uint64_t> interrupts_suppressed{0};  ///< See `QueueCountersSnapshot`.
  std::atomic<std::uint64_t> chains{0};                 ///< See `QueueCountersSnapshot`.
  std::atomic<std::uint64_t> used{0};                   ///< See `QueueCountersSnapshot`.
  std::atomic<std::uint64_t> errors{0};                 ///< See `QueueCountersSnapshot`.

  /// @brief The current values.
  [[nodiscard]] QueueCountersSnapshot snapshot() const noexcept {
    return {.notifications = notifications.load(std::memory_order_relaxed),
            .interrupts = interrupts.load(std::memory_order_relaxed),
            .interrupts_suppressed = interrupts_suppressed.load(std::memory_order_relaxed),
            .chains = chains.load(std::memory_order_relaxed),
            .used = used.load(std::memory_order_relaxed),
            .errors = errors.load(std::memory_order_relaxed)};
  }
  /// @brief Back to zero (the transport does it when the device resets, after keeping a snapshot).
  void clear() noexcept {
    for (auto* counter : {&notifications, &interrupts, &interrupts_suppressed, &chains, &used, &errors}) {
      counter->store(0, std::memory_order_relaxed);
    }
  }
};

}  // namespace vmm::virtio
