#pragma once
/// @file
/// @brief `EventLoop`: the VMM main thread's epoll loop (fds, signals, timers), and `Notifier`, how other threads
///        hand it work.

#include <signal.h>
#include <sys/signalfd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"

namespace vmm::event {

/// @brief A thread-safe queue of callbacks for the loop's thread, with an eventfd that wakes the loop.
///
/// A vCPU thread must not touch the loop's state (the fd table, the devices' host side): it `post`s a callback
/// instead ("the VM stopped"), and the loop runs it on its own thread. Shared ownership lets a thread keep posting
/// safely even if it outlives the loop: the callback is then simply never run.
class Notifier {
 public:
  /// @brief A notifier with its own eventfd.
  [[nodiscard]] static Result<std::shared_ptr<Notifier>> create();

  /// @brief Queues `callback` to run on the loop's thread and wakes the loop. Callable from any thread.
  Result<void> post(std::function<void()> callback);

  /// @brief The eventfd the loop watches; readable while callbacks are queued.
  [[nodiscard]] int fd() const noexcept { return event_fd_.get(); }

  /// @brief Loop side: consumes the wakeup and returns the queued callbacks, oldest first.
  [[nodiscard]] Result<std::vector<std::function<void()>>> take();

 private:
  explicit Notifier(Fd event_fd) : event_fd_(std::move(event_fd)) {}

  Fd event_fd_;
  std::mutex mutex_;
  std::vector<std::function<void()>> queue_;
};

/// @brief Names a timer so it can be cancelled. Never reused within one loop, unlike a file descriptor number.
struct TimerId {
  std::uint64_t value = 0;  ///< The loop's internal token for the timer.
  /// @brief Ids are equal when their tokens are.
  friend bool operator==(TimerId, TimerId) = default;
};

/// @brief An epoll loop: calls a callback when an fd is ready, a signal arrives, a timer expires or another thread
///        posts work. Everything runs on the thread that calls `run`/`run_once`.
///
/// Only `post` (and the `Notifier` behind it) may be used from other threads; every other member belongs to the loop's
/// thread. To stop the loop from another thread, post `stop`: `loop.post([&loop] { loop.stop(); })`.
///
/// Callbacks may add and remove watches, including their own, while the loop dispatches: each watch is looked up by
/// a token that is never reused, so an event for a watch removed earlier in the same batch is dropped, and the
/// callback being run stays alive until it returns. All watches are level-triggered: a callback that does not drain
/// its fd is called again on the next round.
///
/// Move-only; do not move a loop while it runs.
class EventLoop {
 public:
  /// @brief Called with the ready events (EPOLLIN, EPOLLOUT, EPOLLHUP, EPOLLERR...).
  using FdCallback = std::function<void(std::uint32_t events)>;
  /// @brief Called once per signal read from the signalfd.
  using SignalCallback = std::function<void(const signalfd_siginfo&)>;
  /// @brief Called when a timer expires.
  using TimerCallback = std::function<void()>;

  /// @brief A loop with its epoll instance and the notifier's eventfd already watched.
  [[nodiscard]] static Result<EventLoop> create();

  /// @brief Watches `fd` (owned by the caller, who must `remove` it before closing it) for `events`.
  ///
  /// Fails with "epoll_ctl: EEXIST" if `fd` is already watched, "epoll_ctl: EBADF" if it is not open and
  /// "epoll_ctl: EPERM" for fds epoll cannot watch (regular files).
  Result<void> add(int fd, std::uint32_t events, FdCallback callback);
  /// @brief Stops watching `fd`. The watch is forgotten even when epoll_ctl fails (the fd was closed first: a bug
  ///        the error reports).
  Result<void> remove(int fd);

  /// @brief Blocks `signals` in the calling thread with pthread_sigmask and delivers them through a signalfd.
  ///
  /// Call it on the main thread before starting any other thread: threads inherit the mask, and a signal that some
  /// thread leaves unblocked is delivered to that thread's default action (SIGTERM would kill the process) instead
  /// of the signalfd. The mask is not restored when the loop is destroyed. SIGKILL and SIGSTOP cannot be caught.
  Result<void> add_signals(std::initializer_list<int> signals, SignalCallback callback);

  /// @brief Calls `callback` every `interval` (a periodic CLOCK_MONOTONIC timerfd), first after one interval.
  ///
  /// Expirations missed while the loop was busy are coalesced into one call.
  [[nodiscard]] Result<TimerId> add_timer(std::chrono::nanoseconds interval, TimerCallback callback);
  /// @brief Stops and closes the timer. Safe from the timer's own callback.
  Result<void> cancel_timer(TimerId timer);

  /// @brief Queues `callback` to run on the loop's thread. Thread-safe.
  Result<void> post(std::function<void()> callback) { return notifier_->post(std::move(callback)); }
  /// @brief The notifier behind `post`, for threads that may outlive the loop.
  [[nodiscard]] std::shared_ptr<Notifier> notifier() const { return notifier_; }

  /// @brief Dispatches events until a callback calls `stop`. epoll_wait interrupted by a signal (EINTR) is retried.
  ///
  /// Returns the first error of the loop's own syscalls (epoll_wait, reading a timerfd, signalfd or eventfd).
  Result<void> run();
  /// @brief Waits up to `timeout` (negative: forever) and dispatches one batch of ready events.
  ///
  /// Returns true if any callback ran, false on timeout or EINTR. Ignores `stop`; meant for tests and for callers
  /// that interleave the loop with other work.
  Result<bool> run_once(std::chrono::milliseconds timeout);
  /// @brief Makes `run` return once the current callback returns. Loop thread only (see `post`).
  void stop() noexcept { stop_requested_ = true; }

  /// @brief How many watches there are (fds, signalfds, timers), not counting the notifier.
  [[nodiscard]] std::size_t watch_count() const noexcept { return watches_.size(); }

 private:
  // What the loop does when a watched fd is ready. Internal handlers read their own fd and can fail.
  using Handler = std::function<Result<void>(std::uint32_t events)>;
  enum class Kind { CallerFd, Signals, Timer };
  struct Watch {
    Kind kind = Kind::CallerFd;
    int fd = -1;
    Fd owned;  // the timerfd or signalfd the loop created; empty for a caller's fd
    Handler handler;
  };

  EventLoop(Fd epoll, std::shared_ptr<Notifier> notifier) : epoll_(std::move(epoll)), notifier_(std::move(notifier)) {}

  Result<std::uint64_t> watch(Kind kind, int fd, Fd owned, std::uint32_t events, Handler handler);
  Result<void> unwatch(std::uint64_t token);
  Result<void> run_posted();

  // Token 0 is the notifier's eventfd; watches get 1, 2, 3... and a token is never reused.
  static constexpr std::uint64_t kNotifierToken = 0;

  Fd epoll_;
  std::shared_ptr<Notifier> notifier_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Watch>> watches_;
  std::unordered_map<int, std::uint64_t> caller_fds_;  // add()ed fds -> their token, for remove(fd)
  std::uint64_t next_token_ = 1;
  bool stop_requested_ = false;
};

}  // namespace vmm::event
