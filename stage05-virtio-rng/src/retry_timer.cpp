#include "vmm/virtio/retry_timer.hpp"

#include <algorithm>
#include <utility>

namespace vmm::virtio {

namespace {

// The longest wait the timer accepts: a later deadline is brought forward to this. An early call does no harm (a
// rate-limited device finds it still lacks tokens and asks again), and it keeps `now + delay` far from overflowing.
constexpr std::chrono::nanoseconds kMaxDelay = std::chrono::hours(24);

}  // namespace

ThreadRetryTimer::ThreadRetryTimer() : thread_([this] { run(); }) {}

ThreadRetryTimer::~ThreadRetryTimer() {
  std::function<void()> dropped;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    deadline_.reset();
    dropped = std::move(callback_);
    callback_ = nullptr;
  }
  changed_.notify_all();
  thread_.join();  // returns once a callback in progress has finished
}

void ThreadRetryTimer::schedule(std::chrono::nanoseconds delay, std::function<void()> callback) {
  const auto deadline = std::chrono::steady_clock::now() + std::clamp(delay, std::chrono::nanoseconds{0}, kMaxDelay);
  std::function<void()> replaced;  // destroyed after the lock is released: its captures are the caller's business
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      return;
    }
    replaced = std::exchange(callback_, std::move(callback));
    deadline_ = deadline;
  }
  changed_.notify_all();
}

void ThreadRetryTimer::cancel() {
  std::function<void()> dropped;
  std::function<void()> dropped_later;
  {
    std::unique_lock lock(mutex_);
    deadline_.reset();
    dropped = std::exchange(callback_, nullptr);
    changed_.notify_all();
    // Called from inside the callback (a contract violation) waiting would never end: the pending call is dropped
    // all the same, and the running one is the caller itself.
    if (std::this_thread::get_id() != thread_.get_id()) {
      changed_.wait(lock, [this] { return !running_callback_; });
      // The callback that was running may have scheduled its successor (a device still short of tokens does): drop
      // that too, or it would run after cancel returned.
      deadline_.reset();
      dropped_later = std::exchange(callback_, nullptr);
    }
  }
}

void ThreadRetryTimer::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (!deadline_) {
      changed_.wait(lock);
      continue;
    }
    if (std::chrono::steady_clock::now() < *deadline_) {
      // Woken early by schedule, cancel or the destructor, or spuriously: the loop looks at the state again.
      changed_.wait_until(lock, *deadline_);
      continue;
    }
    deadline_.reset();
    auto callback = std::exchange(callback_, nullptr);
    running_callback_ = true;
    lock.unlock();
    if (callback) {
      callback();
    }
    callback = nullptr;  // its captures go before cancel() may return
    lock.lock();
    running_callback_ = false;
    changed_.notify_all();
  }
}

}  // namespace vmm::virtio
