#include "vmm/event/event_manager.hpp"

#include <gtest/gtest.h>

#include <sys/epoll.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "vmm/event/event_fd.hpp"

namespace vmm::event {
namespace {

using namespace std::chrono_literals;

EventManager make_manager() {
  auto manager = EventManager::create();
  EXPECT_TRUE(manager) << manager.error().message();
  return std::move(*manager);
}

EventFd make_event() {
  auto event = EventFd::create();
  EXPECT_TRUE(event) << event.error().message();
  return std::move(*event);
}

// Dispatches one round and returns how many process() calls it made; fails the test on an error.
std::size_t dispatch(EventManager& manager, std::chrono::milliseconds timeout) {
  auto count = manager.run_once(timeout);
  EXPECT_TRUE(count) << count.error().message();
  return count ? *count : 0;
}

struct Call {
  int fd;
  std::uint32_t events;
  friend bool operator==(const Call&, const Call&) = default;
};

// Registers `fds` in init, records every process() call, and runs an optional hook (which by default drains the
// eventfds it is given so that level triggering does not report them again).
class TestSubscriber : public EventSubscriber {
 public:
  using Hook = std::function<void(int fd, std::uint32_t events, EventOps& ops)>;

  explicit TestSubscriber(std::vector<int> fds, Hook hook = {}) : fds_(std::move(fds)), hook_(std::move(hook)) {}

  void init(EventOps& ops) override {
    for (int fd : fds_) {
      init_results.push_back(ops.add(fd, EPOLLIN));
    }
  }

  void process(int fd, std::uint32_t events, EventOps& ops) override {
    calls.push_back(Call{fd, events});
    if (hook_) {
      hook_(fd, events, ops);
    }
  }

  std::vector<Result<void>> init_results;
  std::vector<Call> calls;

 private:
  std::vector<int> fds_;
  Hook hook_;
};

// A hook that reads the eventfd behind `fd`, as a real subscriber would.
TestSubscriber::Hook draining(const std::vector<const EventFd*>& events) {
  return [events](int fd, std::uint32_t, EventOps&) {
    for (const EventFd* event : events) {
      if (event->fd() == fd) {
        (void)event->read();
      }
    }
  };
}

TEST(EventManager, InitRegistersFdsAndProcessGetsTheReadyOne) {
  EventManager manager = make_manager();
  EventFd event = make_event();
  auto subscriber = std::make_shared<TestSubscriber>(std::vector{event.fd()}, draining({&event}));
  auto id = manager.add_subscriber(subscriber);
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(manager.subscriber_count(), 1U);
  ASSERT_EQ(subscriber->init_results.size(), 1U);
  EXPECT_TRUE(subscriber->init_results[0]);
  EXPECT_EQ(manager.loop().watch_count(), 1U);

  EXPECT_EQ(dispatch(manager, 0ms), 0U);
  EXPECT_TRUE(subscriber->calls.empty());

  ASSERT_TRUE(event.write(1));
  EXPECT_EQ(dispatch(manager, 1000ms), 1U);
  ASSERT_EQ(subscriber->calls.size(), 1U);
  EXPECT_EQ(subscriber->calls[0].fd, event.fd());
  EXPECT_NE(subscriber->calls[0].events & EPOLLIN, 0U);

  // Drained by the hook: nothing more to report.
  EXPECT_EQ(dispatch(manager, 0ms), 0U);
  EXPECT_EQ(subscriber->calls.size(), 1U);
}

TEST(EventManager, RoutesEachFdToTheSubscriberThatRegisteredIt) {
  EventManager manager = make_manager();
  EventFd a_event = make_event();
  EventFd b_event = make_event();
  auto a = std::make_shared<TestSubscriber>(std::vector{a_event.fd()}, draining({&a_event}));
  auto b = std::make_shared<TestSubscriber>(std::vector{b_event.fd()}, draining({&b_event}));
  auto a_id = manager.add_subscriber(a);
  auto b_id = manager.add_subscriber(b);
  ASSERT_TRUE(a_id) << a_id.error().message();
  ASSERT_TRUE(b_id) << b_id.error().message();
  EXPECT_FALSE(*a_id == *b_id);
  EXPECT_EQ(manager.subscriber_count(), 2U);

  ASSERT_TRUE(b_event.write(1));
  EXPECT_EQ(dispatch(manager, 1000ms), 1U);
  EXPECT_TRUE(a->calls.empty());
  ASSERT_EQ(b->calls.size(), 1U);
  EXPECT_EQ(b->calls[0].fd, b_event.fd());

  ASSERT_TRUE(a_event.write(1));
  ASSERT_TRUE(b_event.write(1));
  EXPECT_EQ(dispatch(manager, 1000ms), 2U);
  ASSERT_EQ(a->calls.size(), 1U);
  EXPECT_EQ(a->calls[0].fd, a_event.fd());
  ASSERT_EQ(b->calls.size(), 2U);
  EXPECT_EQ(b->calls[1].fd, b_event.fd());
}

TEST(EventManager, ASubscriberCanRemoveItsOwnFdWhileProcessingIt) {
  EventManager manager = make_manager();
  EventFd event = make_event();
  std::vector<bool> removed;
  std::vector<bool> removed_again;
  // Does not drain the eventfd: were the fd still watched, level triggering would report it on every round.
  auto subscriber =
      std::make_shared<TestSubscriber>(std::vector{event.fd()}, [&](int fd, std::uint32_t, EventOps& ops) {
        removed.push_back(ops.remove(fd).has_value());
        removed_again.push_back(ops.remove(fd).has_value());  // no longer ours
      });
  ASSERT_TRUE(manager.add_subscriber(subscriber));

  ASSERT_TRUE(event.write(1));
  EXPECT_EQ(dispatch(manager, 1000ms), 1U);
  EXPECT_EQ(removed, std::vector<bool>{true});
  EXPECT_EQ(removed_again, std::vector<bool>{false});

  ASSERT_TRUE(event.write(1));
  EXPECT_EQ(dispatch(manager, 50ms), 0U);
  EXPECT_EQ(subscriber->calls.size(), 1U);
  EXPECT_EQ(manager.subscriber_count(), 1U);  // the subscriber stays, with no fds
  EXPECT_EQ(manager.loop().watch_count(), 0U);
}

TEST(EventManager, ASubscriberCanChangeTheEventsItWatches) {
  EventManager manager = make_manager();
  EventFd event = make_event();
  std::vector<bool> modified;
  auto subscriber =
      std::make_shared<TestSubscriber>(std::vector{event.fd()}, [&](int fd, std::uint32_t events, EventOps& ops) {
        if ((events & EPOLLIN) != 0) {
          (void)event.read();
          // An eventfd is writable while its counter is below the maximum: EPOLLOUT fires at once.
          modified.push_back(ops.modify(fd, EPOLLOUT).has_value());
        } else {
          modified.push_back(ops.modify(fd, EPOLLIN).has_value());
        }
      });
  ASSERT_TRUE(manager.add_subscriber(subscriber));
  ASSERT_TRUE(event.write(1));
  EXPECT_EQ(dispatch(manager, 1000ms), 1U);
  EXPECT_EQ(dispatch(manager, 1000ms), 1U);  // EPOLLOUT, no write needed
  EXPECT_EQ(dispatch(manager, 0ms), 0U);     // back to EPOLLIN on an empty counter
  ASSERT_EQ(subscriber->calls.size(), 2U);
  EXPECT_NE(subscriber->calls[0].events & EPOLLIN, 0U);
  EXPECT_NE(subscriber->calls[1].events & EPOLLOUT, 0U);
  EXPECT_EQ(modified, (std::vector<bool>{true, true}));
}

TEST(EventManager, RemoveSubscriberUnwatchesAllItsFds) {
  EventManager manager = make_manager();
  EventFd first = make_event();
  EventFd second = make_event();
  auto subscriber = std::make_shared<TestSubscriber>(std::vector{first.fd(), second.fd()});
  auto id = manager.add_subscriber(subscriber);
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(manager.loop().watch_count(), 2U);

  auto removed = manager.remove_subscriber(*id);
  ASSERT_TRUE(removed) << removed.error().message();
  EXPECT_EQ(manager.subscriber_count(), 0U);
  EXPECT_EQ(manager.loop().watch_count(), 0U);
  EXPECT_EQ(subscriber.use_count(), 1L);  // the manager let go of it

  ASSERT_TRUE(first.write(1));
  ASSERT_TRUE(second.write(1));
  EXPECT_EQ(dispatch(manager, 50ms), 0U);
  EXPECT_TRUE(subscriber->calls.empty());

  auto again = manager.remove_subscriber(*id);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("no subscriber"), std::string::npos) << again.error().message();

  // epoll forgot both fds: another subscriber can watch them (EEXIST otherwise).
  auto next = std::make_shared<TestSubscriber>(std::vector{first.fd(), second.fd()});
  auto next_id = manager.add_subscriber(next);
  ASSERT_TRUE(next_id) << next_id.error().message();
  EXPECT_EQ(dispatch(manager, 1000ms), 2U);
}

TEST(EventManager, RunReturnsOnceStopIsSetAndAnEventFdWakesIt) {
  EventManager manager = make_manager();
  EventFd work = make_event();
  EventFd wake = make_event();
  std::atomic<bool> stop{false};
  std::promise<void> worked;
  auto subscriber =
      std::make_shared<TestSubscriber>(std::vector{work.fd(), wake.fd()}, [&](int fd, std::uint32_t, EventOps&) {
        if (fd == work.fd()) {
          (void)work.read();
          worked.set_value();
        } else {
          (void)wake.read();
        }
      });
  ASSERT_TRUE(manager.add_subscriber(subscriber));

  auto runner = std::async(std::launch::async, [&manager, &stop] { return manager.run(stop); });
  // First prove the loop dispatches on its thread, so returning below is not just returning at once.
  ASSERT_TRUE(work.write(1));
  auto worked_future = worked.get_future();
  ASSERT_EQ(worked_future.wait_for(10s), std::future_status::ready);

  stop.store(true, std::memory_order_release);
  ASSERT_TRUE(wake.write(1));
  ASSERT_EQ(runner.wait_for(10s), std::future_status::ready);
  auto result = runner.get();
  EXPECT_TRUE(result) << result.error().message();
  EXPECT_GE(subscriber->calls.size(), 1U);
}

TEST(EventManager, RunReturnsWhenAPostedCallbackSetsStop) {
  EventManager manager = make_manager();
  std::atomic<bool> stop{false};
  auto notifier = manager.notifier();
  auto runner = std::async(std::launch::async, [&manager, &stop] { return manager.run(stop); });
  std::thread poster(
      [notifier, &stop] { ASSERT_TRUE(notifier->post([&stop] { stop.store(true, std::memory_order_release); })); });
  poster.join();
  ASSERT_EQ(runner.wait_for(10s), std::future_status::ready);
  auto result = runner.get();
  EXPECT_TRUE(result) << result.error().message();
  EXPECT_TRUE(stop.load());
}

TEST(EventManager, AddingABadFdReturnsAnErrorAndAddsNothing) {
  EventManager manager = make_manager();
  EventFd good = make_event();
  // init adds a good fd, then an invalid one: the whole subscriber is refused and the good fd unwatched again.
  auto subscriber = std::make_shared<TestSubscriber>(std::vector{good.fd(), -1});
  Result<SubscriberId> id = logic_error("not called", "");
  EXPECT_NO_THROW(id = manager.add_subscriber(subscriber));
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().errno_value, EBADF);
  EXPECT_NE(id.error().message().find("epoll_ctl: EBADF"), std::string::npos) << id.error().message();
  ASSERT_EQ(subscriber->init_results.size(), 2U);
  EXPECT_TRUE(subscriber->init_results[0]);
  EXPECT_FALSE(subscriber->init_results[1]);
  EXPECT_EQ(manager.subscriber_count(), 0U);
  EXPECT_EQ(manager.loop().watch_count(), 0U);

  EXPECT_FALSE(manager.add_subscriber(nullptr));

  // An fd another subscriber watches is refused too (EEXIST), and from process() the error reaches the subscriber.
  auto owner = std::make_shared<TestSubscriber>(std::vector{good.fd()});
  ASSERT_TRUE(manager.add_subscriber(owner));
  EventFd trigger = make_event();
  std::vector<int> errors;
  auto greedy = std::make_shared<TestSubscriber>(std::vector{trigger.fd()}, [&](int, std::uint32_t, EventOps& ops) {
    (void)trigger.read();
    auto added = ops.add(good.fd(), EPOLLIN);
    errors.push_back(added ? 0 : added.error().errno_value);
    auto foreign = ops.remove(good.fd());  // owner's fd, not greedy's
    errors.push_back(foreign ? 0 : -1);
  });
  ASSERT_TRUE(manager.add_subscriber(greedy));
  ASSERT_TRUE(trigger.write(1));
  EXPECT_NO_THROW(EXPECT_EQ(dispatch(manager, 1000ms), 1U));
  EXPECT_EQ(errors, (std::vector<int>{EEXIST, -1}));
  EXPECT_EQ(manager.loop().watch_count(), 2U);
}

TEST(EventManager, KeepsWorkingAfterAMove) {
  EventManager original = make_manager();
  EventFd event = make_event();
  auto subscriber = std::make_shared<TestSubscriber>(std::vector{event.fd()}, draining({&event}));
  ASSERT_TRUE(original.add_subscriber(subscriber));

  EventManager moved = std::move(original);
  ASSERT_TRUE(event.write(1));
  EXPECT_EQ(dispatch(moved, 1000ms), 1U);
  ASSERT_EQ(subscriber->calls.size(), 1U);
  EXPECT_EQ(subscriber->calls[0].fd, event.fd());
}

}  // namespace
}  // namespace vmm::event
