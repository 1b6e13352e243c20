#pragma once
/// @file
/// @brief `RetryTimer`: "call me again in a while", for a device that must wait (a rate-limited device out of
/// tokens), and `ThreadRetryTimer`, its implementation on a small timer thread.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

namespace vmm::virtio {

/// @brief Schedules one deferred call at a time.
///
/// At stage05 a device has no thread of its own: it works inside the vCPU's MMIO exit. A rate-limited device that
/// runs out of tokens leaves the request in the ring and asks to be called back when tokens will be there. (stage06
/// gives each device a thread with a timerfd in its event loop, and this goes away.)
class RetryTimer {
 public:
  RetryTimer() = default;
  RetryTimer(const RetryTimer&) = delete;
  RetryTimer& operator=(const RetryTimer&) = delete;
  RetryTimer(RetryTimer&&) = delete;
  RetryTimer& operator=(RetryTimer&&) = delete;
  virtual ~RetryTimer() = default;

  /// @brief Calls `callback` once after `delay`, replacing any call still pending. The callback runs on another
  /// thread and must take the device's own lock.
  virtual void schedule(std::chrono::nanoseconds delay, std::function<void()> callback) = 0;
  /// @brief Drops the pending call, if any. When it returns, no callback is running or will run (so the caller may
  /// then destroy what the callback uses); must not be called from inside the callback.
  virtual void cancel() = 0;
};

/// @brief A `RetryTimer` with one thread waiting on a condition variable until the deadline.
class ThreadRetryTimer final : public RetryTimer {
 public:
  /// @brief Starts the thread.
  ThreadRetryTimer();
  /// @brief Cancels and joins the thread.
  ~ThreadRetryTimer() override;
  /// @brief See `RetryTimer::schedule`.
  void schedule(std::chrono::nanoseconds delay, std::function<void()> callback) override;
  /// @brief See `RetryTimer::cancel`. A call scheduled while it waits for a running callback (by that callback, say)
  /// is dropped too.
  void cancel() override;

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  std::function<void()> callback_;
  bool running_callback_ = false;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after the members it uses exist
};

}  // namespace vmm::virtio
