#include "vmm/event/event_loop.hpp"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <utility>

#include <fmt/format.h>

namespace vmm::event {

namespace {

// Reads one fixed-size record from a non-blocking timerfd, signalfd or eventfd. Returns false when there was nothing
// to read: another reader got there first, or the readiness was stale.
template <typename T>
Result<bool> read_record(int fd, T& record, std::string_view what) {
  for (;;) {
    ssize_t n = ::read(fd, &record, sizeof record);
    if (n == static_cast<ssize_t>(sizeof record)) {
      return true;
    }
    if (n >= 0) {
      // These fds return whole records or fail; anything else is a kernel we do not understand.
      return logic_error(fmt::format("read({})", what), fmt::format("short read of {} bytes", n));
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN) {
      return false;
    }
    return sys_error("read", errno, std::string(what));
  }
}

}  // namespace

// ---- Notifier -----------------------------------------------------------------------------------------------------

Result<std::shared_ptr<Notifier>> Notifier::create() {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    return sys_error("eventfd", errno);
  }
  // The constructor is private (a Notifier only makes sense shared), so std::make_shared cannot reach it.
  return std::shared_ptr<Notifier>(new Notifier(Fd(fd)));
}

Result<void> Notifier::post(std::function<void()> callback) {
  if (!callback) {
    return logic_error("Notifier::post", "empty callback");
  }
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(callback));
  }
  // Written after unlocking: the loop may take the queue in between and then find this wakeup with nothing queued,
  // which is harmless. The reverse order could leave a callback queued with no wakeup pending.
  const std::uint64_t one = 1;
  if (::write(event_fd_.get(), &one, sizeof one) < 0 && errno != EAGAIN) {
    // EAGAIN means the counter is about to overflow: the loop has plenty of wakeups pending already.
    return sys_error("write", errno, "eventfd");
  }
  return {};
}

Result<std::vector<std::function<void()>>> Notifier::take() {
  std::uint64_t count = 0;
  if (auto rc = read_record(event_fd_.get(), count, "eventfd"); !rc) {
    return std::unexpected(std::move(rc.error()));
  }
  std::vector<std::function<void()>> taken;
  std::lock_guard lock(mutex_);
  taken.swap(queue_);
  return taken;
}

// ---- EventLoop ----------------------------------------------------------------------------------------------------

Result<EventLoop> EventLoop::create() {
  int epoll = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll < 0) {
    return sys_error("epoll_create1", errno);
  }
  Fd epoll_fd(epoll);
  auto notifier = Notifier::create();
  if (!notifier) {
    return std::unexpected(std::move(notifier.error()));
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = kNotifierToken;
  if (::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, (*notifier)->fd(), &event) < 0) {
    return sys_error("epoll_ctl", errno, "EPOLL_CTL_ADD eventfd");
  }
  return EventLoop(std::move(epoll_fd), std::move(*notifier));
}

Result<std::uint64_t> EventLoop::watch(Kind kind, int fd, Fd owned, std::uint32_t events, Handler handler) {
  const std::uint64_t token = next_token_++;
  epoll_event event{};
  event.events = events;
  // The token, not the fd number: fd numbers are reused as soon as they are closed, tokens never are.
  event.data.u64 = token;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) < 0) {
    return sys_error("epoll_ctl", errno, fmt::format("EPOLL_CTL_ADD fd {}", fd));
  }
  watches_.emplace(token, std::make_shared<Watch>(
                              Watch{.kind = kind, .fd = fd, .owned = std::move(owned), .handler = std::move(handler)}));
  return token;
}

Result<void> EventLoop::unwatch(std::uint64_t token) {
  auto it = watches_.find(token);
  if (it == watches_.end()) {
    return logic_error("EventLoop::unwatch", fmt::format("no watch {}", token));
  }
  // Keeps the watch (and a timerfd or signalfd it owns) alive until epoll has forgotten it. If it is being
  // dispatched right now, run_once holds another reference, so the running callback is not destroyed under it.
  std::shared_ptr<Watch> watch = std::move(it->second);
  watches_.erase(it);
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, watch->fd, nullptr) < 0) {
    return sys_error("epoll_ctl", errno, fmt::format("EPOLL_CTL_DEL fd {}", watch->fd));
  }
  return {};
}

Result<void> EventLoop::add(int fd, std::uint32_t events, FdCallback callback) {
  if (!callback) {
    return logic_error("EventLoop::add", "empty callback");
  }
  auto token =
      watch(Kind::CallerFd, fd, Fd(), events, [callback = std::move(callback)](std::uint32_t ready) -> Result<void> {
        callback(ready);
        return {};
      });
  if (!token) {
    return std::unexpected(std::move(token.error()));
  }
  // A stale entry for the same number means the caller closed the fd without removing it (closing removed it from
  // epoll, so the ADD above succeeded): forget the old watch.
  if (auto [it, inserted] = caller_fds_.try_emplace(fd, *token); !inserted) {
    watches_.erase(it->second);
    it->second = *token;
  }
  return {};
}

Result<void> EventLoop::remove(int fd) {
  auto it = caller_fds_.find(fd);
  if (it == caller_fds_.end()) {
    return logic_error("EventLoop::remove", fmt::format("fd {} is not watched", fd));
  }
  const std::uint64_t token = it->second;
  caller_fds_.erase(it);
  return unwatch(token);
}

Result<void> EventLoop::add_signals(std::initializer_list<int> signals, SignalCallback callback) {
  if (!callback || signals.size() == 0) {
    return logic_error("EventLoop::add_signals", "no signals or no callback");
  }
  sigset_t mask;
  sigemptyset(&mask);
  for (int signal : signals) {
    if (signal == SIGKILL || signal == SIGSTOP) {
      return logic_error("EventLoop::add_signals", fmt::format("signal {} cannot be blocked", signal));
    }
    if (sigaddset(&mask, signal) < 0) {
      return sys_error("sigaddset", errno, fmt::format("signal {}", signal));
    }
  }
  sigset_t previous;
  // pthread_sigmask returns the error number instead of setting errno.
  if (int rc = ::pthread_sigmask(SIG_BLOCK, &mask, &previous); rc != 0) {
    return sys_error("pthread_sigmask", rc);
  }
  // On failure, unblock again: a blocked signal nobody reads would be silently lost.
  auto fail = [&previous](Error error) {
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    return std::unexpected(std::move(error));
  };
  int fd = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) {
    return fail(Error{"signalfd", errno, {}});
  }
  Fd owned(fd);
  // One signal per dispatch: if the callback removes the watch, no further signal reaches it; more pending signals
  // keep the fd readable, so the next round delivers them.
  auto token = watch(Kind::Signals, fd, std::move(owned), EPOLLIN,
                     [fd, callback = std::move(callback)](std::uint32_t) -> Result<void> {
                       signalfd_siginfo info{};
                       auto got = read_record(fd, info, "signalfd");
                       if (!got) {
                         return std::unexpected(std::move(got.error()));
                       }
                       if (*got) {
                         callback(info);
                       }
                       return {};
                     });
  if (!token) {
    return fail(std::move(token.error()));
  }
  return {};
}

Result<TimerId> EventLoop::add_timer(std::chrono::nanoseconds interval, TimerCallback callback) {
  if (!callback || interval <= std::chrono::nanoseconds::zero()) {
    // A zero it_value would disarm the timer instead of firing it continuously.
    return logic_error("EventLoop::add_timer", "the interval must be positive and the callback set");
  }
  int fd = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (fd < 0) {
    return sys_error("timerfd_create", errno);
  }
  Fd owned(fd);
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(interval);
  timespec period{};
  period.tv_sec = static_cast<time_t>(seconds.count());
  period.tv_nsec = static_cast<long>((interval - seconds).count());
  const itimerspec spec{.it_interval = period, .it_value = period};
  if (::timerfd_settime(fd, 0, &spec, nullptr) < 0) {
    return sys_error("timerfd_settime", errno);
  }
  auto token = watch(Kind::Timer, fd, std::move(owned), EPOLLIN,
                     [fd, callback = std::move(callback)](std::uint32_t) -> Result<void> {
                       // The count of expirations since the last read; more than 1 means the loop was late. One call
                       // either way.
                       std::uint64_t expirations = 0;
                       auto got = read_record(fd, expirations, "timerfd");
                       if (!got) {
                         return std::unexpected(std::move(got.error()));
                       }
                       if (*got) {
                         callback();
                       }
                       return {};
                     });
  if (!token) {
    return std::unexpected(std::move(token.error()));
  }
  return TimerId{*token};
}

Result<void> EventLoop::cancel_timer(TimerId timer) {
  auto it = watches_.find(timer.value);
  if (it == watches_.end() || it->second->kind != Kind::Timer) {
    return logic_error("EventLoop::cancel_timer", fmt::format("no timer {}", timer.value));
  }
  return unwatch(timer.value);
}

Result<void> EventLoop::run_posted() {
  auto callbacks = notifier_->take();
  if (!callbacks) {
    return std::unexpected(std::move(callbacks.error()));
  }
  for (auto& callback : *callbacks) {
    callback();
  }
  return {};
}

Result<bool> EventLoop::run_once(std::chrono::milliseconds timeout) {
  constexpr int kMaxEvents = 16;
  std::array<epoll_event, kMaxEvents> events{};
  const int timeout_ms = timeout.count() < 0 ? -1 : static_cast<int>(std::min<std::int64_t>(timeout.count(), INT_MAX));
  const int ready = ::epoll_wait(epoll_.get(), events.data(), kMaxEvents, timeout_ms);
  if (ready < 0) {
    if (errno == EINTR) {
      // A signal handler ran (a debugger attached, SIGWINCH...): nothing was dispatched, the caller waits again.
      return false;
    }
    return sys_error("epoll_wait", errno);
  }
  for (int i = 0; i < ready; ++i) {
    const std::uint64_t token = events[i].data.u64;
    if (token == kNotifierToken) {
      if (auto rc = run_posted(); !rc) {
        return std::unexpected(std::move(rc.error()));
      }
      continue;
    }
    auto it = watches_.find(token);
    if (it == watches_.end()) {
      continue;  // removed by an earlier callback of this batch
    }
    // A second reference: the callback may remove its own watch, which must not destroy the callback mid-call.
    const std::shared_ptr<Watch> watch = it->second;
    if (auto rc = watch->handler(events[i].events); !rc) {
      return std::unexpected(std::move(rc.error()));
    }
  }
  return ready > 0;
}

Result<void> EventLoop::run() {
  stop_requested_ = false;
  while (!stop_requested_) {
    if (auto rc = run_once(std::chrono::milliseconds(-1)); !rc) {
      return std::unexpected(std::move(rc.error()));
    }
  }
  stop_requested_ = false;
  return {};
}

}  // namespace vmm::event
