#include "vmm/vhost/backend/vring.hpp"

#include <pthread.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <future>
#include <string_view>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "vmm/event/event_manager.hpp"

namespace vmm::vhost {

namespace {

// pthread_setname_np's limit: 16 bytes with the terminating NUL.
constexpr std::size_t kThreadNameMax = 15;

// Writes 1 to an eventfd we were given. EAGAIN means the counter is about to overflow: the peer has an enormous
// number of unread signals already, so one more changes nothing.
Result<void> signal_eventfd(const Fd& fd, std::string_view what) {
  const std::uint64_t one = 1;
  for (;;) {
    const ssize_t n = ::write(fd.get(), &one, sizeof one);
    if (n == static_cast<ssize_t>(sizeof one)) {
      return {};
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return {};
    }
    return sys_error("write", n < 0 ? errno : EIO, fmt::format("{} fd {}", what, fd.get()));
  }
}

void add(virtio::QueueCountersSnapshot& total, const virtio::QueueCountersSnapshot& more) {
  total.notifications += more.notifications;
  total.interrupts += more.interrupts;
  total.interrupts_suppressed += more.interrupts_suppressed;
  total.chains += more.chains;
  total.used += more.used;
  total.errors += more.errors;
}

}  // namespace

std::string vring_worker_name(const std::string& device_name, std::uint16_t queue) {
  constexpr std::string_view kPrefix = "virtio-";
  std::string_view name = device_name;
  if (name.starts_with(kPrefix) && name.size() > kPrefix.size()) {
    name.remove_prefix(kPrefix.size());
  }
  std::string out = fmt::format("vu-{}-q{}", name, queue);
  if (out.size() > kThreadNameMax) {
    out.resize(kThreadNameMax);
  }
  return out;
}

// ---- Vring ----------------------------------------------------------------------------------------------------------

Vring::Vring(std::uint16_t index, std::uint16_t max_size) : index_(index), max_size_(max_size) {}

void Vring::set_call(Fd fd) {
  Fd old;
  {
    std::lock_guard lock(fd_mutex_);
    old = std::exchange(call_, std::move(fd));
  }
  // `old` closes here, outside the lock.
}

void Vring::set_err(Fd fd) {
  Fd old;
  {
    std::lock_guard lock(fd_mutex_);
    old = std::exchange(err_, std::move(fd));
  }
}

bool Vring::has_call() const {
  std::lock_guard lock(fd_mutex_);
  return call_.valid();
}

bool Vring::has_err() const {
  std::lock_guard lock(fd_mutex_);
  return err_.valid();
}

Result<bool> Vring::signal_call() {
  // Held across the write: set_call cannot close the fd between our check and the write (nor can a new eventfd that
  // reused the number receive our signal).
  std::lock_guard lock(fd_mutex_);
  if (!call_) {
    interrupts_dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  if (auto ok = signal_eventfd(call_, fmt::format("vring {} call", index_)); !ok) {
    return std::unexpected(std::move(ok).error());
  }
  return true;
}

Result<bool> Vring::signal_err() {
  std::lock_guard lock(fd_mutex_);
  if (!err_) {
    return false;
  }
  if (auto ok = signal_eventfd(err_, fmt::format("vring {} err", index_)); !ok) {
    return std::unexpected(std::move(ok).error());
  }
  err_signals_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

virtio::QueueCountersSnapshot Vring::fold_counters() {
  const auto live = counters_->snapshot();
  add(cumulative_, live);
  counters_->clear();
  return live;
}

virtio::QueueCountersSnapshot Vring::total_counters() const {
  auto total = cumulative_;
  add(total, counters_->snapshot());
  return total;
}

void Vring::forget() {
  config_ = VringConfig{};
  running_layout.reset();
  set_call(Fd());
  set_err(Fd());
}

VringSnapshot Vring::snapshot(bool enabled_by_default) const {
  VringSnapshot s;
  s.index = index_;
  s.max_size = max_size_;
  s.num = config_.num;
  s.next_avail = config_.next_avail;
  s.next_used = config_.next_used;
  s.running = running_layout.has_value();
  if (s.running) {
    // Live position: the base plus what the device consumed and returned in this activation (see fold_counters).
    const auto live = counters_->snapshot();
    s.next_avail = static_cast<std::uint16_t>(config_.next_avail + live.chains);
    s.next_used = static_cast<std::uint16_t>(config_.next_used + live.used);
  }
  s.enabled = config_.enabled.value_or(enabled_by_default);
  s.has_kick = config_.kick.valid();
  s.has_call = has_call();
  s.has_err = has_err();
  s.addr = config_.addr;
  s.layout = running_layout;
  s.counters = total_counters();
  s.interrupts_dropped = interrupts_dropped_.load(std::memory_order_relaxed);
  s.err_signals = err_signals_.load(std::memory_order_relaxed);
  return s;
}

// ---- VringWorker ----------------------------------------------------------------------------------------------------

/// The worker's event subscriber: the kick eventfd and the stop eventfd.
class VringWorker::Subscriber final : public event::EventSubscriber {
 public:
  explicit Subscriber(VringWorker& worker) : worker_(worker) {}

  void init(event::EventOps& ops) override {
    // A failure (a kick "fd" that epoll refuses, such as a regular file) makes add_subscriber, hence start, fail.
    (void)ops.add(worker_.params_.kick_fd, EPOLLIN);
    (void)ops.add(worker_.stop_event_.fd(), EPOLLIN);
  }

  void process(int fd, std::uint32_t /*events*/, event::EventOps& ops) override {
    if (fd == worker_.stop_event_.fd()) {
      stop_.store(true, std::memory_order_release);
      return;
    }
    if (fd == worker_.params_.kick_fd) {
      kick(ops);
    }
  }

  [[nodiscard]] const std::atomic<bool>& stop_flag() const noexcept { return stop_; }

 private:
  void kick(event::EventOps& ops) {
    const VringWorkerParams& p = worker_.params_;
    std::uint64_t value = 0;
    const ssize_t n = ::read(p.kick_fd, &value, sizeof value);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      return;  // someone else read it first (or a signal): level-triggered, we'll hear again if there is more
    }
    if (n <= 0) {
      // EOF (a pipe whose writer went away) or a real error: the fd would stay readable forever and spin us.
      const int err = n < 0 ? errno : EPIPE;
      (void)ops.remove(p.kick_fd);
      if (p.on_error) {
        p.on_error(Error{"read", err,
                         fmt::format("vring {} kick fd {}: no more kicks can arrive; the ring is no longer served",
                                     p.queue, p.kick_fd)});
      }
      return;
    }
    // An eventfd always gives 8 bytes; anything else (a pipe, say) counts as one kick.
    const std::uint64_t kicks = n == static_cast<ssize_t>(sizeof value) ? value : 1;
    worker_.wakeups_.fetch_add(1, std::memory_order_relaxed);
    p.counters->notifications.fetch_add(kicks, std::memory_order_relaxed);
    p.device->queue_notify(p.queue);  // no lock of the handler's held: stop() may be joining us
  }

  VringWorker& worker_;
  std::atomic<bool> stop_{false};
};

VringWorker::VringWorker(VringWorkerParams params, event::EventFd stop_event)
    : params_(std::move(params)), stop_event_(std::move(stop_event)) {}

Result<std::unique_ptr<VringWorker>> VringWorker::start(VringWorkerParams params) {
  const std::string op = fmt::format("vring {} worker", params.queue);
  if (!params.device || !params.counters || params.kick_fd < 0) {
    return logic_error(op, "needs a device, counters and a kick fd");
  }
  auto stop = event::EventFd::create(event::EventFd::Mode::Counter);
  if (!stop) {
    return std::unexpected(std::move(stop).error().with_context(op + ": stop eventfd"));
  }
  std::unique_ptr<VringWorker> worker(new VringWorker(std::move(params), std::move(*stop)));

  auto manager = event::EventManager::create();
  if (!manager) {
    return std::unexpected(std::move(manager).error().with_context(op));
  }
  auto subscriber = std::make_shared<Subscriber>(*worker);
  if (auto added = manager->add_subscriber(subscriber); !added) {
    return std::unexpected(
        std::move(added).error().with_context(fmt::format("{}: watching kick fd {}", op, worker->params_.kick_fd)));
  }

  std::promise<void> started;
  auto started_future = started.get_future();
  VringWorker* self = worker.get();
  try {
    worker->thread_ =
        std::thread([self, manager = std::move(*manager), subscriber, started = std::move(started)]() mutable {
          // A name for `info threads`, top -H and /proc/<pid>/task; a failure is only cosmetic.
          ::pthread_setname_np(::pthread_self(), self->params_.thread_name.substr(0, kThreadNameMax).c_str());
          self->tid_.store(::gettid(), std::memory_order_release);
          started.set_value();
          // Requests the driver published before the ring started had their kick go nowhere: look at the ring once.
          self->params_.device->queue_notify(self->params_.queue);
          if (auto ran = manager.run(subscriber->stop_flag()); !ran && self->params_.on_error) {
            self->params_.on_error(
                std::move(ran).error().with_context(fmt::format("vring {} worker: event loop", self->params_.queue)));
          }
          self->tid_.store(0, std::memory_order_release);
        });
  } catch (const std::system_error& error) {
    return sys_error("pthread_create", error.code().value(), op);
  }
  started_future.wait();
  return worker;
}

VringWorker::~VringWorker() {
  stop();
}

void VringWorker::stop() {
  if (!thread_.joinable()) {
    return;
  }
  // Can only fail on counter overflow, which one write per stop never reaches.
  (void)stop_event_.write(1);
  thread_.join();
  (void)stop_event_.read();
}

std::optional<pid_t> VringWorker::tid() const noexcept {
  const pid_t tid = tid_.load(std::memory_order_acquire);
  if (tid == 0) {
    return std::nullopt;
  }
  return tid;
}

}  // namespace vmm::vhost
