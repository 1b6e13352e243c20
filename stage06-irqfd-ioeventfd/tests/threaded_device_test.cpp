// ThreadedDevice around stage05's RngDevice, against the mock driver: kicks written to a queue eventfd (what KVM does
// for an ioeventfd) and fallback notifies are served on the worker thread and counted where they belong, kicks that
// pile up while the worker is busy coalesce without losing a request, reset with requests in flight leaves the used
// ring consistent and nothing is processed after it, activate/reset cycles race a kicking thread, destruction joins.
// No test measures time: waits are generous timeouts on things that happen, and a worker held up in the middle of a
// request is held by a gate in the fake interrupt, not by sleeping.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "vmm/testing/mock_driver.hpp"
#include "vmm/virtio/queue_counters.hpp"
#include "vmm/virtio/rng/rng_device.hpp"
#include "vmm/virtio/split_queue.hpp"
#include "vmm/virtio/threaded_device.hpp"
#include "vmm/virtio/uapi.hpp"
#include "vmm/virtio/virtio_device.hpp"

namespace vmm::virtio {
namespace {

using vmm::testing::MockDriver;
using vmm::testing::MockLayout;

constexpr std::uint16_t kQueueSize = 16;
constexpr auto kGenerous = std::chrono::seconds(30);  // a timeout for things that happen at once on a sane machine

// Polls `done` until it is true or `kGenerous` has passed; returns its last value.
bool eventually(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + kGenerous;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Records the notifications the device sends and the thread that sent them. With the gate closed, signal_queue
// blocks (inside the device's processing, its lock held) until the test opens it: a worker caught mid-request.
class RecordingInterrupt final : public VirtioInterrupt {
 public:
  Result<void> signal_queue(std::uint16_t /*queue_index*/) override {
    std::unique_lock lock(mutex_);
    threads_.push_back(std::this_thread::get_id());
    changed_.notify_all();
    changed_.wait(lock, [this] { return !gated_; });
    return {};
  }
  Result<void> signal_config() override { return {}; }

  void close_gate() {
    std::lock_guard lock(mutex_);
    gated_ = true;
  }
  void open_gate() {
    std::lock_guard lock(mutex_);
    gated_ = false;
    changed_.notify_all();
  }
  // Waits (bounded) until `count` signals have arrived (the last one may be held at the gate).
  bool wait_for_signals(std::size_t count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kGenerous, [&] { return threads_.size() >= count; });
  }
  [[nodiscard]] std::vector<std::thread::id> threads() const {
    std::lock_guard lock(mutex_);
    return threads_;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool gated_ = false;
  std::vector<std::thread::id> threads_;
};

// What the activation observer was told, and whether the worker ran at that moment.
class ObserverLog {
 public:
  std::function<void(bool)> observer(const ThreadedDevice& device) {
    return [this, &device](bool active) {
      std::lock_guard lock(mutex_);
      calls_.emplace_back(active, device.worker_running());
      changed_.notify_all();
    };
  }
  [[nodiscard]] std::vector<std::pair<bool, bool>> calls() const {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  bool wait_for_calls(std::size_t count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kGenerous, [&] { return calls_.size() >= count; });
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::pair<bool, bool>> calls_;
};

class ThreadedDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto rng = rng::RngDevice::create(rng::RngConfig{});
    ASSERT_TRUE(rng) << rng.error().message();
    rng_ = *rng;
    auto device = ThreadedDevice::create(rng_);
    ASSERT_TRUE(device) << device.error().message();
    device_ = *device;
  }

  // The queue the transport would build when the driver enables it, in an Activation; counters shared with the test.
  Activation activation() {
    auto queue = SplitQueue::create(memory_, driver_->queue_layout(), kQueueSize, driver_->features(), counters_);
    EXPECT_TRUE(queue) << queue.error().message();
    Activation result{.memory = &memory_,
                      .features = kCommonFeatures,
                      .queues = {},
                      .interrupt = interrupt_,
                      .needs_reset = [this](const Error&) { needs_reset_.fetch_add(1); }};
    result.queues.emplace_back(std::move(queue).value());
    return result;
  }
  void activate() {
    auto ok = device_->activate(activation());
    ASSERT_TRUE(ok) << ok.error().message();
  }
  // Publishes one request: a 64-byte writable buffer. Returns its head.
  std::uint16_t add_request() { return driver_->add_chain(std::vector{driver_->allocate(64, true)}); }
  // Plays KVM: the guest wrote queue 0's notify address.
  void ioeventfd_kick() { ASSERT_TRUE(device_->queue_event(0).write(1)); }
  // A driver re-initialising its queue after a reset: the rings zeroed, indices back to 0.
  void new_driver() { driver_.emplace(memory_, MockLayout{.size = kQueueSize}); }

  // The used ring is consistent: as many entries as the used index says, each a head that was published, none twice.
  void expect_consistent_used(const std::set<std::uint16_t>& published) {
    const std::uint16_t used_index = driver_->used_index();
    const auto used = driver_->collect_used();
    EXPECT_EQ(used.size(), used_index);
    std::set<std::uint32_t> heads;
    for (const auto& element : used) {
      EXPECT_TRUE(heads.insert(element.id).second) << "head " << element.id << " returned twice";
      EXPECT_TRUE(published.contains(static_cast<std::uint16_t>(element.id))) << "head " << element.id;
      EXPECT_EQ(element.len, 64u);
    }
  }

  memory::GuestMemory memory_ = vmm::testing::make_test_memory();
  std::optional<MockDriver> driver_{std::in_place, memory_, MockLayout{.size = kQueueSize}};
  std::shared_ptr<QueueCounters> counters_ = std::make_shared<QueueCounters>();
  std::shared_ptr<RecordingInterrupt> interrupt_ = std::make_shared<RecordingInterrupt>();
  std::atomic<int> needs_reset_{0};
  std::shared_ptr<rng::RngDevice> rng_;
  std::shared_ptr<ThreadedDevice> device_;
};

// --- description --------------------------------------------------------------------------------------------------

TEST_F(ThreadedDeviceTest, DescribesItselfAsTheInnerDevice) {
  EXPECT_EQ(device_->device_type(), VIRTIO_ID_RNG);
  EXPECT_EQ(device_->features(), rng_->features());
  EXPECT_EQ(device_->queue_max_sizes(), rng_->queue_max_sizes());
  EXPECT_EQ(device_->config_size(), 0u);
  EXPECT_EQ(device_->name(), "virtio-rng");
  EXPECT_EQ(device_->queue_count(), 1u);
  EXPECT_GE(device_->queue_event(0).fd(), 0);
  EXPECT_EQ(device_->queue_event(0).mode(), event::EventFd::Mode::Counter);
  EXPECT_FALSE(device_->worker_running());
  EXPECT_FALSE(device_->worker_tid());
  EXPECT_FALSE(ThreadedDevice::create(nullptr)) << "nothing to wrap";
}

// --- serving ------------------------------------------------------------------------------------------------------

TEST_F(ThreadedDeviceTest, QueueEventKickIsServedOnTheWorkerThread) {
  activate();
  ASSERT_TRUE(device_->worker_running());
  const auto head = add_request();
  ioeventfd_kick();

  ASSERT_TRUE(eventually([&] { return driver_->used_index() == 1; }));
  ASSERT_TRUE(interrupt_->wait_for_signals(1));
  for (const auto id : interrupt_->threads()) {
    EXPECT_NE(id, std::this_thread::get_id()) << "the interrupt came from the test thread, not the worker";
  }
  const auto used = driver_->collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].id, head);
  EXPECT_EQ(used[0].len, 64u);
  // The kick went to the eventfd, never through the transport: the worker counts it as a notification.
  EXPECT_EQ(counters_->notifications.load(), 1u);
  EXPECT_EQ(device_->ioeventfd_kicks(), 1u);
  EXPECT_EQ(device_->wakeups(), 1u);
  EXPECT_EQ(rng_->bytes_served(), 64u);
  device_->reset();
  EXPECT_EQ(needs_reset_.load(), 0);
}

TEST_F(ThreadedDeviceTest, KicksWrittenWhileTheWorkerIsBusyCoalesceButEveryRequestIsServed) {
  activate();
  interrupt_->close_gate();
  add_request();
  ioeventfd_kick();
  // The worker is now inside the device, held at the interrupt: the next kicks pile up in the eventfd.
  ASSERT_TRUE(interrupt_->wait_for_signals(1));
  constexpr int kMore = 5;
  for (int i = 0; i < kMore; ++i) {
    add_request();
    ioeventfd_kick();
  }
  interrupt_->open_gate();

  ASSERT_TRUE(eventually([&] { return driver_->used_index() == 1 + kMore; }));
  ASSERT_TRUE(interrupt_->wait_for_signals(2));
  EXPECT_EQ(device_->wakeups(), 2u) << "the five kicks are one read of 5";
  EXPECT_EQ(device_->ioeventfd_kicks(), 1u + kMore);
  EXPECT_EQ(counters_->notifications.load(), 1u + kMore);
  EXPECT_EQ(counters_->used.load(), 1u + kMore);
  EXPECT_EQ(interrupt_->threads().size(), 2u) << "one interrupt per processing round";
  device_->reset();
}

TEST_F(ThreadedDeviceTest, FallbackNotifyIsServedOnTheWorkerAndNotCountedAgain) {
  activate();
  const auto head = add_request();
  // The transport counted this kick (an MMIO exit) before calling the device.
  device_->queue_notify(0);
  device_->queue_notify(7);  // no such queue: ignored

  ASSERT_TRUE(eventually([&] { return driver_->used_index() == 1; }));
  ASSERT_TRUE(interrupt_->wait_for_signals(1));
  EXPECT_NE(interrupt_->threads().at(0), std::this_thread::get_id());
  const auto used = driver_->collect_used();
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].id, head);
  EXPECT_EQ(counters_->notifications.load(), 0u) << "the transport counts MMIO notifications, not the worker";
  EXPECT_EQ(device_->ioeventfd_kicks(), 0u);
  EXPECT_EQ(device_->wakeups(), 1u);
  device_->reset();
}

TEST_F(ThreadedDeviceTest, BothPathsTogetherServeEverything) {
  activate();
  std::set<std::uint16_t> published;
  for (int i = 0; i < 12; ++i) {
    published.insert(add_request());
    if (i % 2 == 0) {
      ioeventfd_kick();
    } else {
      device_->queue_notify(0);
    }
  }
  ASSERT_TRUE(eventually([&] { return driver_->used_index() == 12; }));
  device_->reset();
  expect_consistent_used(published);
  EXPECT_EQ(device_->ioeventfd_kicks(), 6u);
  EXPECT_EQ(counters_->notifications.load(), 6u);
}

// --- lifecycle ----------------------------------------------------------------------------------------------------

TEST_F(ThreadedDeviceTest, WorkerHasItsOwnThreadAndName) {
  activate();
  const auto tid = device_->worker_tid();
  ASSERT_TRUE(tid);
  EXPECT_NE(*tid, ::gettid());
  std::ifstream comm("/proc/self/task/" + std::to_string(*tid) + "/comm");
  std::string name;
  std::getline(comm, name);
  EXPECT_EQ(name, "rng-worker");

  device_->reset();
  EXPECT_FALSE(device_->worker_running());
  EXPECT_FALSE(device_->worker_tid());
}

TEST_F(ThreadedDeviceTest, ActivationObserverSeesTrueThenFalseWhileTheWorkerRuns) {
  ObserverLog log;
  device_->set_activation_observer(log.observer(*device_));
  device_->reset();  // idle: nothing to tell
  EXPECT_TRUE(log.calls().empty());

  activate();
  device_->reset();
  device_->reset();
  new_driver();
  activate();
  device_->reset();
  // true: told once the worker listens; false: told first, while the worker still runs (the ioeventfds go before
  // the worker does).
  const std::vector<std::pair<bool, bool>> expected{{true, true}, {false, true}, {true, true}, {false, true}};
  EXPECT_EQ(log.calls(), expected);
  EXPECT_FALSE(device_->worker_running());
}

TEST_F(ThreadedDeviceTest, FailingInnerActivationLeavesNoWorker) {
  ObserverLog log;
  device_->set_activation_observer(log.observer(*device_));
  Activation without_queue = activation();
  without_queue.queues.clear();  // RngDevice refuses: the request queue was not enabled
  EXPECT_FALSE(device_->activate(std::move(without_queue)));
  EXPECT_FALSE(device_->worker_running());
  EXPECT_FALSE(device_->worker_tid());
  EXPECT_TRUE(log.calls().empty());
  EXPECT_FALSE(rng_->active());

  // Nothing left behind: a proper activation works.
  activate();
  add_request();
  ioeventfd_kick();
  EXPECT_TRUE(eventually([&] { return driver_->used_index() == 1; }));
  device_->reset();
}

TEST_F(ThreadedDeviceTest, SecondActivateIsRefusedAndKeepsTheWorker) {
  activate();
  const auto tid = device_->worker_tid();
  EXPECT_FALSE(device_->activate(activation()));
  EXPECT_TRUE(device_->worker_running());
  EXPECT_EQ(device_->worker_tid(), tid);
  device_->reset();
}

TEST_F(ThreadedDeviceTest, ResetDrainsStaleKicks) {
  ASSERT_TRUE(device_->queue_event(0).write(3));
  device_->queue_notify(0);
  device_->reset();
  auto left = device_->queue_event(0).read();
  ASSERT_TRUE(left);
  EXPECT_FALSE(*left) << "a kick from before the reset would reach the next activation";

  // And the fallback kick was drained too: activating finds nothing to wake for.
  activate();
  device_->reset();
  EXPECT_EQ(device_->wakeups(), 0u);
}

TEST_F(ThreadedDeviceTest, KicksStillUnreadAtResetCountAsNotifications) {
  activate();
  interrupt_->close_gate();
  add_request();
  ioeventfd_kick();
  ASSERT_TRUE(interrupt_->wait_for_signals(1));  // the worker is busy: the next kicks wait in the eventfd
  ASSERT_TRUE(device_->queue_event(0).write(2));
  auto reset = std::async(std::launch::async, [&] { device_->reset(); });
  interrupt_->open_gate();
  ASSERT_EQ(reset.wait_for(kGenerous), std::future_status::ready) << "reset deadlocked with the worker";
  reset.get();
  // Whether the worker read the two late kicks before it stopped or reset drained them, the driver made three and
  // the activation's counters say three: the demo and the lab compare this count with the guest's.
  EXPECT_EQ(counters_->notifications.load(), 3u);
  EXPECT_EQ(device_->ioeventfd_kicks(), 3u);
}

TEST_F(ThreadedDeviceTest, ResetWithRequestsInFlightIsConsistentAndFinal) {
  ObserverLog log;
  device_->set_activation_observer(log.observer(*device_));
  activate();
  std::set<std::uint16_t> published;
  interrupt_->close_gate();
  published.insert(add_request());
  ioeventfd_kick();
  ASSERT_TRUE(interrupt_->wait_for_signals(1));  // the worker is mid-request, the device's lock held
  for (int i = 0; i < 3; ++i) {
    published.insert(add_request());
  }
  ioeventfd_kick();

  // Reset from another thread (as a vCPU would): it tells the observer, then waits for the worker.
  auto reset = std::async(std::launch::async, [&] { device_->reset(); });
  ASSERT_TRUE(log.wait_for_calls(2));
  EXPECT_EQ(log.calls().back(), std::make_pair(false, true));
  interrupt_->open_gate();
  ASSERT_EQ(reset.wait_for(kGenerous), std::future_status::ready) << "reset deadlocked with the worker";
  reset.get();

  EXPECT_FALSE(device_->worker_running());
  EXPECT_FALSE(rng_->active());
  const std::uint16_t used_at_reset = driver_->used_index();
  // Either the worker served the second batch before it saw the stop, or not at all: never part of it twice.
  EXPECT_TRUE(used_at_reset == 1 || used_at_reset == 4) << used_at_reset;
  EXPECT_EQ(counters_->used.load(), used_at_reset);
  const std::uint64_t served = rng_->bytes_served();

  // Nothing is processed after reset: a kick stays in the eventfd, unread, and the ring does not move.
  published.insert(add_request());
  ioeventfd_kick();
  device_->queue_notify(0);
  auto unread = device_->queue_event(0).read();
  ASSERT_TRUE(unread);
  EXPECT_EQ(*unread, std::optional<std::uint64_t>(1));
  EXPECT_EQ(driver_->used_index(), used_at_reset);
  EXPECT_EQ(rng_->bytes_served(), served);
  expect_consistent_used(published);
}

TEST_F(ThreadedDeviceTest, RepeatedActivateResetCyclesWithAKickingThread) {
  constexpr int kCycles = 200;
  std::atomic<bool> done{false};
  // Plays KVM signalling the ioeventfd at any moment, the reset windows included (reset drains those).
  std::thread producer([&] {
    while (!done.load()) {
      (void)device_->queue_event(0).write(1);
      std::this_thread::yield();
    }
  });

  int served_cycles = 0;
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    new_driver();  // the worker is stopped: the driver may rewrite its rings
    auto ok = device_->activate(activation());
    ASSERT_TRUE(ok) << "cycle " << cycle << ": " << ok.error().message();
    const std::set<std::uint16_t> published{add_request()};
    if (cycle % 2 == 0) {
      // Published while active: served, by the producer's kicks or ours.
      ioeventfd_kick();
      ASSERT_TRUE(eventually([&] { return driver_->used_index() == 1; })) << "cycle " << cycle;
      ++served_cycles;
    } else if (cycle % 4 == 1) {
      device_->queue_notify(0);  // reset races the fallback path too
    }
    device_->reset();
    ASSERT_FALSE(device_->worker_running());
    const std::uint16_t used = driver_->used_index();
    ASSERT_LE(used, 1u) << "cycle " << cycle;
    expect_consistent_used(published);
  }
  done.store(true);
  producer.join();

  EXPECT_EQ(served_cycles, kCycles / 2);
  EXPECT_GT(device_->ioeventfd_kicks(), 0u);
  EXPECT_EQ(needs_reset_.load(), 0);
  EXPECT_FALSE(rng_->last_error());
}

TEST_F(ThreadedDeviceTest, DestructionWhileActiveStopsTheWorker) {
  activate();
  add_request();
  ioeventfd_kick();
  const auto tid = device_->worker_tid();
  ASSERT_TRUE(tid);
  // A request may be in flight: the destructor joins the worker whatever it is doing.
  std::weak_ptr<ThreadedDevice> weak = device_;
  device_.reset();
  EXPECT_TRUE(weak.expired());
  // The thread is gone from the process (the kernel may take a moment to reap it after the join).
  const std::filesystem::path task = "/proc/self/task/" + std::to_string(*tid);
  EXPECT_TRUE(eventually([&] { return !std::filesystem::exists(task); }));
  // The inner device was not reset (whoever owns the machine does that); it was not left mid-request either.
  const std::uint16_t used = driver_->used_index();
  EXPECT_LE(used, 1u);
  rng_->reset();
}

}  // namespace
}  // namespace vmm::virtio
