#include "vmm/virtio/threaded_device.hpp"

#include <pthread.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cstdlib>
#include <future>
#include <string_view>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "vmm/event/event_manager.hpp"

namespace vmm::virtio {

namespace {

// pthread_setname_np's limit: 16 bytes with the terminating NUL.
constexpr std::size_t kThreadNameMax = 15;

// "virtio-rng" -> "rng-worker": the "virtio-" prefix would use up most of the 15 characters a thread name may have,
// and every device here is a virtio device anyway.
std::string worker_name(std::string_view device_name) {
  constexpr std::string_view kPrefix = "virtio-";
  if (device_name.starts_with(kPrefix) && device_name.size() > kPrefix.size()) {
    device_name.remove_prefix(kPrefix.size());
  }
  std::string name = fmt::format("{}-worker", device_name);
  if (name.size() > kThreadNameMax) {
    name.resize(kThreadNameMax);
  }
  return name;
}

}  // namespace

/// The worker's view: which descriptor is which, and what to do when one is readable. Lives in the worker's
/// EventManager for one activation; a new one is made for the next (the enabled queues may differ).
class ThreadedDevice::Subscriber final : public event::EventSubscriber {
 public:
  Subscriber(ThreadedDevice& device, std::vector<QueueCounters*> counters,
             std::function<void(const Error&)> needs_reset)
      : device_(device), counters_(std::move(counters)), needs_reset_(std::move(needs_reset)) {}

  // A failed `ops.add` here makes EventManager::add_subscriber fail: activate reports it.
  void init(event::EventOps& ops) override {
    // Only enabled queues: the inner device must not be notified for a queue the driver did not enable.
    for (std::size_t q = 0; q < counters_.size(); ++q) {
      if (counters_[q] != nullptr) {
        (void)ops.add(device_.queue_events_[q].fd(), EPOLLIN);
      }
    }
    (void)ops.add(device_.kick_event_.fd(), EPOLLIN);
    (void)ops.add(device_.stop_event_.fd(), EPOLLIN);
  }

  void process(int fd, std::uint32_t /*events*/, event::EventOps& /*ops*/) override {
    if (fd == device_.stop_event_.fd()) {
      stop_.store(true, std::memory_order_release);
      return;  // reset drains the stop eventfd after joining
    }
    if (fd == device_.kick_event_.fd()) {
      process_fallback();
      return;
    }
    for (std::size_t q = 0; q < counters_.size(); ++q) {
      if (counters_[q] != nullptr && fd == device_.queue_events_[q].fd()) {
        process_queue(static_cast<std::uint16_t>(q));
        return;
      }
    }
  }

  // What EventManager::run loops on: set by the stop eventfd or a failure.
  [[nodiscard]] const std::atomic<bool>& stop_flag() const noexcept { return stop_; }
  // The worker gave up: keep the error, tell the transport, stop the loop (worker thread).
  void fail(Error error) {
    device_.fail_worker(std::move(error), needs_reset_);
    stop_.store(true, std::memory_order_release);
  }

 private:
  // Reads an eventfd: its value, nothing if it was 0 (another event already took it), or nothing after a failure.
  std::optional<std::uint64_t> take(const event::EventFd& event) {
    auto value = event.read();
    if (!value) {
      fail(std::move(value).error().with_context("ThreadedDevice worker: reading an eventfd"));
      return std::nullopt;
    }
    return *value;
  }

  // KVM signalled the queue's ioeventfd N times since the last read: one notify serves them all, since the inner
  // device drains its ring on every notify.
  void process_queue(std::uint16_t q) {
    const auto kicks = take(device_.queue_events_[q]);
    if (!kicks) {
      return;
    }
    device_.wakeups_.fetch_add(1, std::memory_order_relaxed);
    device_.ioeventfd_kicks_.fetch_add(*kicks, std::memory_order_relaxed);
    // These kicks went guest -> KVM -> eventfd and never reached the transport, which counts the MMIO ones.
    counters_[q]->notifications.fetch_add(*kicks, std::memory_order_relaxed);
    device_.inner_->queue_notify(q);  // no lock of ours held: reset may be waiting to join us
  }

  // queue_notify marked queues pending, then wrote the kick. Reading the kick before taking the flags means a flag
  // set after our exchange comes with a kick that wakes us again: never lost, at worst one empty wakeup.
  void process_fallback() {
    if (!take(device_.kick_event_)) {
      return;
    }
    device_.wakeups_.fetch_add(1, std::memory_order_relaxed);
    for (std::size_t q = 0; q < counters_.size(); ++q) {
      if (device_.pending_[q].exchange(false, std::memory_order_acq_rel) && counters_[q] != nullptr) {
        device_.inner_->queue_notify(static_cast<std::uint16_t>(q));
      }
    }
  }

  ThreadedDevice& device_;
  std::vector<QueueCounters*> counters_;  // per queue: its counters if the driver enabled it, else null
  std::function<void(const Error&)> needs_reset_;
  std::atomic<bool> stop_{false};
};

Result<std::shared_ptr<ThreadedDevice>> ThreadedDevice::create(std::shared_ptr<VirtioDevice> inner) {
  const std::string op = "ThreadedDevice";
  if (!inner) {
    return logic_error(op, "no device to wrap");
  }
  const std::size_t queues = inner->queue_max_sizes().size();
  std::vector<event::EventFd> queue_events;
  queue_events.reserve(queues);
  for (std::size_t q = 0; q < queues; ++q) {
    auto event = event::EventFd::create(event::EventFd::Mode::Counter);
    if (!event) {
      return std::unexpected(std::move(event).error().with_context(fmt::format("{}: queue {} eventfd", op, q)));
    }
    queue_events.push_back(std::move(*event));
  }
  auto kick = event::EventFd::create(event::EventFd::Mode::Counter);
  if (!kick) {
    return std::unexpected(std::move(kick).error().with_context(op + ": fallback kick eventfd"));
  }
  auto stop = event::EventFd::create(event::EventFd::Mode::Counter);
  if (!stop) {
    return std::unexpected(std::move(stop).error().with_context(op + ": stop eventfd"));
  }
  return std::shared_ptr<ThreadedDevice>(
      new ThreadedDevice(std::move(inner), std::move(queue_events), std::move(*kick), std::move(*stop)));
}

ThreadedDevice::ThreadedDevice(std::shared_ptr<VirtioDevice> inner, std::vector<event::EventFd> queue_events,
                               event::EventFd kick_event, event::EventFd stop_event)
    : inner_(std::move(inner)),
      queue_events_(std::move(queue_events)),
      kick_event_(std::move(kick_event)),
      stop_event_(std::move(stop_event)),
      pending_(std::make_unique<std::atomic<bool>[]>(queue_events_.size())) {}

ThreadedDevice::~ThreadedDevice() {
  std::lock_guard lifecycle(lifecycle_mutex_);
  // The worker uses `this` (the eventfds, the counters): it must be gone before any member is.
  stop_worker_locked();
}

Result<void> ThreadedDevice::activate(Activation activation) {
  const std::string op = "ThreadedDevice activate";
  std::lock_guard lifecycle(lifecycle_mutex_);
  if (active_) {
    return logic_error(op, fmt::format("{} is already active", inner_->name()));
  }

  // The queues move into the inner device, but their counters (shared with the transport) stay where they are: keep
  // pointers now. They live as long as the inner device holds the queues, i.e. until inner_->reset(), which comes
  // after the worker is joined.
  std::vector<QueueCounters*> counters(queue_events_.size(), nullptr);
  for (std::size_t q = 0; q < counters.size() && q < activation.queues.size(); ++q) {
    if (activation.queues[q]) {
      counters[q] = &activation.queues[q]->counters();
    }
  }
  auto needs_reset = activation.needs_reset;

  // Everything that can fail is set up before the inner device is activated, so a failure has nothing to undo.
  auto manager = event::EventManager::create();
  if (!manager) {
    return std::unexpected(std::move(manager).error().with_context(op));
  }
  counters_ = counters;
  auto subscriber = std::make_shared<Subscriber>(*this, std::move(counters), std::move(needs_reset));
  if (auto added = manager->add_subscriber(subscriber); !added) {
    return std::unexpected(std::move(added).error().with_context(op));
  }

  if (auto ok = inner_->activate(std::move(activation)); !ok) {
    return ok;
  }

  // The worker owns its event manager; the subscriber refers to this device, which joins the worker before it goes.
  std::promise<void> started;
  auto started_future = started.get_future();
  running_.store(true, std::memory_order_release);
  try {
    worker_ = std::thread([this, manager = std::move(*manager), subscriber, started = std::move(started),
                           name = worker_name(inner_->name())]() mutable {
      // A name for `info threads`, top -H and /proc/<pid>/task; a failure is only cosmetic.
      ::pthread_setname_np(::pthread_self(), name.c_str());
      tid_.store(::gettid(), std::memory_order_release);
      started.set_value();
      if (auto ran = manager.run(subscriber->stop_flag()); !ran) {
        subscriber->fail(std::move(ran).error().with_context("ThreadedDevice worker"));
      }
      tid_.store(0, std::memory_order_release);
      running_.store(false, std::memory_order_release);
    });
  } catch (const std::system_error& error) {
    running_.store(false, std::memory_order_release);
    inner_->reset();
    return sys_error("pthread_create", error.code().value(), fmt::format("{}: starting the worker thread", op));
  }
  // Return with the worker named and its tid known, so introspection (and gdb) sees it at once.
  started_future.wait();
  active_ = true;
  if (observer_) {
    observer_(true);
  }
  return {};
}

void ThreadedDevice::reset() {
  std::lock_guard lifecycle(lifecycle_mutex_);
  // First, so KVM stops signalling the queue eventfds (ioeventfds deassigned): nothing new arrives while we stop.
  if (active_ && observer_) {
    observer_(false);
  }
  active_ = false;
  stop_worker_locked();
  // Kicks that arrived after the worker's last read belong to the activation being torn down; the next one starts
  // from a clean slate (and the inner device looks at its ring when activated anyway). They were received, though
  // not needed (the device had served their buffers already): count them, so the activation's notifications equal
  // the driver's kicks.
  for (std::size_t q = 0; q < queue_events_.size(); ++q) {
    auto stale = queue_events_[q].read();
    if (stale && *stale && q < counters_.size() && counters_[q] != nullptr) {
      counters_[q]->notifications.fetch_add(**stale, std::memory_order_relaxed);
      ioeventfd_kicks_.fetch_add(**stale, std::memory_order_relaxed);
    }
  }
  counters_.clear();
  drain(kick_event_);
  for (std::size_t q = 0; q < queue_events_.size(); ++q) {
    pending_[q].store(false, std::memory_order_relaxed);
  }
  // Last: the worker is gone, so nothing reaches the inner device after this.
  inner_->reset();
}

void ThreadedDevice::queue_notify(std::uint16_t queue_index) {
  if (queue_index >= queue_events_.size()) {
    return;
  }
  pending_[queue_index].store(true, std::memory_order_release);
  // Only fails on counter overflow (2^64 - 2 unread kicks), when the worker is certainly awake already.
  (void)kick_event_.write(1);
}

const event::EventFd& ThreadedDevice::queue_event(std::uint16_t queue_index) const {
  if (queue_index >= queue_events_.size()) {
    // A programming error, like an out-of-range vector index: fail loudly rather than hand out another queue's fd.
    std::abort();
  }
  return queue_events_[queue_index];
}

void ThreadedDevice::set_activation_observer(std::function<void(bool active)> observer) {
  std::lock_guard lifecycle(lifecycle_mutex_);
  observer_ = std::move(observer);
}

bool ThreadedDevice::worker_running() const noexcept {
  return running_.load(std::memory_order_acquire);
}

std::optional<pid_t> ThreadedDevice::worker_tid() const noexcept {
  const pid_t tid = tid_.load(std::memory_order_acquire);
  if (tid == 0) {
    return std::nullopt;
  }
  return tid;
}

std::uint64_t ThreadedDevice::wakeups() const noexcept {
  return wakeups_.load(std::memory_order_relaxed);
}

std::uint64_t ThreadedDevice::ioeventfd_kicks() const noexcept {
  return ioeventfd_kicks_.load(std::memory_order_relaxed);
}

std::optional<Error> ThreadedDevice::worker_error() const {
  std::lock_guard lock(error_mutex_);
  return worker_error_;
}

bool ThreadedDevice::stop_worker_locked() {
  if (!worker_.joinable()) {
    return false;
  }
  // Can only fail on counter overflow, which a value of at most 1 per stop never reaches.
  (void)stop_event_.write(1);
  // The worker holds no lock of ours and takes none, so this cannot wait on ourselves.
  worker_.join();
  drain(stop_event_);
  running_.store(false, std::memory_order_release);
  tid_.store(0, std::memory_order_release);
  return true;
}

void ThreadedDevice::drain(const event::EventFd& event) {
  (void)event.read();
}

void ThreadedDevice::fail_worker(Error error, const std::function<void(const Error&)>& needs_reset) {
  {
    std::lock_guard lock(error_mutex_);
    worker_error_ = error;
  }
  // The worker can no longer serve the queues: the transport sets DEVICE_NEEDS_RESET and tells the driver.
  if (needs_reset) {
    needs_reset(error);
  }
}

}  // namespace vmm::virtio
