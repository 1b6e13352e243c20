#pragma once
/// @file
/// @brief `EventManager`: an epoll loop shared by *subscribers*, objects that register their own fds and are called
/// back when one is ready (the shape of rust-vmm's event-manager crate, built on stage03's `EventLoop`).

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "vmm/error.hpp"
#include "vmm/event/event_loop.hpp"

namespace vmm::event {

class EventOps;
class EventManager;

namespace detail {
struct EventManagerState;
}  // namespace detail

/// @brief Names a subscriber of one `EventManager`, to remove it later. Never reused within a manager.
struct SubscriberId {
  std::uint64_t value = 0;  ///< The manager's counter when the subscriber was added (1, 2, 3...).
  /// @brief Ids are equal when their values are.
  bool operator==(const SubscriberId&) const = default;
};

/// @brief Something that owns fds and wants to be called when they are ready: a device's worker (queue eventfds, a
/// stop eventfd), a console, a timer.
///
/// The subscriber owns its fds; the manager only watches them. Keeping the fds and the reaction to them in one object
/// (instead of one lambda per fd, as with a bare `EventLoop`) is what lets a device add and remove its own fds as it
/// changes state (a queue enabled, a stop requested) without the code that runs the loop knowing about them.
///
/// Non-copyable: the manager holds it by `shared_ptr`, and its fds are registered under its identity.
class EventSubscriber {
 public:
  EventSubscriber() = default;
  EventSubscriber(const EventSubscriber&) = delete;
  EventSubscriber& operator=(const EventSubscriber&) = delete;
  EventSubscriber(EventSubscriber&&) = delete;
  EventSubscriber& operator=(EventSubscriber&&) = delete;
  /// @brief Virtual: the manager destroys subscribers through this base.
  virtual ~EventSubscriber() = default;

  /// @brief Called once by `EventManager::add_subscriber`: register the initial fds with `ops.add`.
  ///
  /// If an `ops` call fails here, `add_subscriber` fails with that error (after undoing what `init` registered),
  /// even if `init` ignored it: a subscriber missing an fd would otherwise wait forever, silently.
  virtual void init(EventOps& ops) = 0;
  /// @brief An fd this subscriber registered is ready: `events` are the epoll flags (EPOLLIN, EPOLLHUP...).
  ///
  /// Watches are level-triggered: an fd that is not drained (an eventfd not read) is reported again on the next
  /// round. `ops` may add, modify or remove this subscriber's fds, including `fd` itself.
  virtual void process(int fd, std::uint32_t events, EventOps& ops) = 0;
};

/// @brief What a subscriber may do while the manager calls it: watch, re-arm and unwatch its own fds.
///
/// Only valid during the `init` or `process` call it is passed to (do not keep it). Each call acts for the subscriber
/// being called, so a subscriber cannot touch another subscriber's fds.
class EventOps {
 public:
  EventOps(const EventOps&) = delete;
  EventOps& operator=(const EventOps&) = delete;
  EventOps(EventOps&&) = delete;
  EventOps& operator=(EventOps&&) = delete;
  ~EventOps() = default;

  /// @brief Watches `fd` (owned by the subscriber, which must `remove` it before closing it) for `events`
  /// (EPOLLIN, EPOLLOUT...; EPOLLHUP and EPOLLERR are always reported).
  ///
  /// Errors come from epoll_ctl: "epoll_ctl: EBADF" for a closed fd, "epoll_ctl: EEXIST" if any subscriber already
  /// watches it, "epoll_ctl: EPERM" for a regular file.
  Result<void> add(int fd, std::uint32_t events);
  /// @brief Changes the events watched on one of this subscriber's fds (e.g. add EPOLLOUT while output is queued).
  Result<void> modify(int fd, std::uint32_t events);
  /// @brief Stops watching one of this subscriber's fds. No event for it is delivered afterwards, not even one
  /// already returned by the current epoll_wait.
  Result<void> remove(int fd);

  /// @brief The subscriber these operations act for.
  [[nodiscard]] SubscriberId subscriber() const noexcept { return id_; }

 private:
  friend class EventManager;
  friend struct detail::EventManagerState;

  EventOps(detail::EventManagerState& state, SubscriberId id) noexcept : state_(&state), id_(id) {}

  detail::EventManagerState* state_;
  SubscriberId id_;
  // The first failure of an operation, which add_subscriber reports for init().
  std::optional<Error> first_error_;
};

/// @brief An epoll loop that dispatches ready fds to the subscriber that registered them.
///
/// Built on stage03's `EventLoop`, which it owns: each subscriber fd is an `EventLoop` watch, so the loop's
/// guarantees hold (an event for an fd removed earlier in the same batch is dropped; a subscriber removed while it is
/// being called stays alive until it returns), and the loop's timers and `post` remain available through `loop()`.
///
/// Threads: a manager belongs to the thread that runs it (it may be created on another thread and handed over before
/// it runs). From other threads, use only `notifier()` (or an eventfd a subscriber watches) to wake it, and the `stop`
/// flag of `run`.
///
/// Move-only; its state lives on the heap, so moving it does not disturb the loop's callbacks. Do not move it while
/// it runs, and do not use a moved-from manager.
class EventManager {
 public:
  /// @brief A manager with no subscribers (and the loop's epoll instance and notifier eventfd).
  [[nodiscard]] static Result<EventManager> create();

  /// @brief Takes over `other`'s state (subscribers, loop); `other` must not be used afterwards.
  EventManager(EventManager&&) noexcept;
  /// @brief Drops this manager's state and takes over `other`'s.
  EventManager& operator=(EventManager&&) noexcept;
  EventManager(const EventManager&) = delete;
  EventManager& operator=(const EventManager&) = delete;
  /// @brief Forgets every subscriber (releasing the manager's references) and closes the epoll instance.
  ~EventManager();

  /// @brief Adds `subscriber` (required) and calls its `init`. Fails, leaving nothing registered, if an `ops` call
  /// in `init` failed. Loop thread only; may be called from a subscriber's `process`.
  [[nodiscard]] Result<SubscriberId> add_subscriber(std::shared_ptr<EventSubscriber> subscriber);
  /// @brief Unwatches all of the subscriber's fds and drops the manager's reference to it.
  ///
  /// The subscriber is forgotten even when unwatching an fd fails (it was closed before being removed: a bug the
  /// error reports). Safe from any subscriber's `process`, including its own.
  Result<void> remove_subscriber(SubscriberId id);

  /// @brief Waits up to `timeout` (negative: forever) and dispatches one batch of ready events.
  ///
  /// Returns how many `process` calls were made: 0 on timeout, on EINTR, or when only the loop's own work ran (posted
  /// callbacks, timers).
  Result<std::size_t> run_once(std::chrono::milliseconds timeout);
  /// @brief Calls `run_once` (waiting forever) until `stop` is set; checks `stop` before each wait.
  ///
  /// Setting `stop` alone does not wake a waiting loop: the stopper must then also wake it, by writing an eventfd a
  /// subscriber watches or by posting through `notifier()`. Returns the first error of the loop.
  Result<void> run(const std::atomic<bool>& stop);

  /// @brief How many subscribers are registered.
  [[nodiscard]] std::size_t subscriber_count() const noexcept;
  /// @brief The stage03 loop underneath, for timers and `post`. Loop thread only, except `post`.
  [[nodiscard]] EventLoop& loop() noexcept;
  /// @brief The loop's notifier: `post` from any thread, also after the manager is gone.
  [[nodiscard]] std::shared_ptr<Notifier> notifier() const;

 private:
  explicit EventManager(std::unique_ptr<detail::EventManagerState> state) noexcept;

  std::unique_ptr<detail::EventManagerState> state_;
};

}  // namespace vmm::event
