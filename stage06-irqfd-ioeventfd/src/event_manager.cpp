#include "vmm/event/event_manager.hpp"

#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>

namespace vmm::event {

namespace detail {

// Everything a manager owns, on the heap: the loop's callbacks and every EventOps point here, so moving the
// EventManager (a unique_ptr) leaves them valid.
struct EventManagerState {
  struct Entry {
    std::shared_ptr<EventSubscriber> subscriber;
    std::unordered_set<int> fds;  // what it registered, so remove_subscriber can unwatch them all
  };

  explicit EventManagerState(EventLoop event_loop) : loop(std::move(event_loop)) {}

  // Declared first, destroyed last: subscribers may close their fds in their destructors while still watched, which
  // epoll tolerates (closing an fd removes it from every epoll set).
  EventLoop loop;
  std::unordered_map<std::uint64_t, Entry> subscribers;
  std::uint64_t next_id = 1;
  std::size_t dispatched = 0;  // process() calls in the current run_once

  Entry* find(SubscriberId id) {
    auto it = subscribers.find(id.value);
    return it == subscribers.end() ? nullptr : &it->second;
  }

  // Adds the loop watch that routes `fd` to subscriber `id`. The callback captures the id, not the subscriber:
  // a subscriber removed earlier in the same batch is simply not found.
  Result<void> watch(SubscriberId id, int fd, std::uint32_t events) {
    return loop.add(fd, events, [this, id, fd](std::uint32_t ready) { dispatch(id, fd, ready); });
  }

  void dispatch(SubscriberId id, int fd, std::uint32_t ready) {
    Entry* entry = find(id);
    if (entry == nullptr || !entry->fds.contains(fd)) {
      return;  // unreachable while the loop drops events of removed watches; cheap to keep honest
    }
    // Our own reference: process() may remove its subscriber (erasing the entry) and must not destroy itself.
    const std::shared_ptr<EventSubscriber> subscriber = entry->subscriber;
    EventOps ops(*this, id);
    ++dispatched;
    subscriber->process(fd, ready, ops);
  }
};

}  // namespace detail

// ---- EventOps -----------------------------------------------------------------------------------------------------

namespace {

// The subscriber an EventOps acts for, or an error naming `operation` if it has been removed meanwhile (by another
// subscriber, or by itself through the manager).
Result<detail::EventManagerState::Entry*> entry_for(detail::EventManagerState& state, SubscriberId id,
                                                    std::string_view operation) {
  auto* entry = state.find(id);
  if (entry == nullptr) {
    return logic_error(operation, fmt::format("subscriber {} has been removed", id.value));
  }
  return entry;
}

Result<void> require_owned(const detail::EventManagerState::Entry& entry, SubscriberId id, int fd,
                           std::string_view operation) {
  if (!entry.fds.contains(fd)) {
    return logic_error(operation, fmt::format("fd {} is not watched for subscriber {}", fd, id.value));
  }
  return {};
}

}  // namespace

Result<void> EventOps::add(int fd, std::uint32_t events) {
  auto result = [&]() -> Result<void> {
    auto entry = entry_for(*state_, id_, "EventOps::add");
    if (!entry) {
      return std::unexpected(std::move(entry.error()));
    }
    if (auto rc = state_->watch(id_, fd, events); !rc) {
      return std::unexpected(std::move(rc.error()).with_context(fmt::format("subscriber {}", id_.value)));
    }
    (*entry)->fds.insert(fd);
    return {};
  }();
  if (!result && !first_error_) {
    first_error_ = result.error();
  }
  return result;
}

Result<void> EventOps::modify(int fd, std::uint32_t events) {
  auto result = [&]() -> Result<void> {
    auto entry = entry_for(*state_, id_, "EventOps::modify");
    if (!entry) {
      return std::unexpected(std::move(entry.error()));
    }
    if (auto rc = require_owned(**entry, id_, fd, "EventOps::modify"); !rc) {
      return rc;
    }
    // EventLoop has no EPOLL_CTL_MOD: a new watch replaces the old one. Its new token means an event already returned
    // for the old mask is dropped, and level triggering reports the fd again next round if it is still ready.
    auto removed = state_->loop.remove(fd);
    if (removed) {
      removed = state_->watch(id_, fd, events);
    }
    if (!removed) {
      (*entry)->fds.erase(fd);  // no longer watched either way
      return std::unexpected(std::move(removed.error()).with_context(fmt::format("subscriber {}", id_.value)));
    }
    return {};
  }();
  if (!result && !first_error_) {
    first_error_ = result.error();
  }
  return result;
}

Result<void> EventOps::remove(int fd) {
  auto result = [&]() -> Result<void> {
    auto entry = entry_for(*state_, id_, "EventOps::remove");
    if (!entry) {
      return std::unexpected(std::move(entry.error()));
    }
    if (auto rc = require_owned(**entry, id_, fd, "EventOps::remove"); !rc) {
      return rc;
    }
    (*entry)->fds.erase(fd);
    return state_->loop.remove(fd);
  }();
  if (!result && !first_error_) {
    first_error_ = result.error();
  }
  return result;
}

// ---- EventManager -------------------------------------------------------------------------------------------------

EventManager::EventManager(std::unique_ptr<detail::EventManagerState> state) noexcept : state_(std::move(state)) {}
EventManager::EventManager(EventManager&&) noexcept = default;
EventManager& EventManager::operator=(EventManager&&) noexcept = default;
EventManager::~EventManager() = default;

Result<EventManager> EventManager::create() {
  auto loop = EventLoop::create();
  if (!loop) {
    return std::unexpected(std::move(loop.error()));
  }
  return EventManager(std::make_unique<detail::EventManagerState>(std::move(*loop)));
}

Result<SubscriberId> EventManager::add_subscriber(std::shared_ptr<EventSubscriber> subscriber) {
  if (!subscriber) {
    return logic_error("EventManager::add_subscriber", "null subscriber");
  }
  const SubscriberId id{state_->next_id++};
  EventSubscriber& raw = *subscriber;
  state_->subscribers.emplace(id.value,
                              detail::EventManagerState::Entry{.subscriber = std::move(subscriber), .fds = {}});
  EventOps ops(*state_, id);
  try {
    raw.init(ops);
  } catch (...) {
    // Not ours to handle, but a half-registered subscriber must not stay behind.
    (void)remove_subscriber(id);
    throw;
  }
  if (ops.first_error_) {
    (void)remove_subscriber(id);
    return std::unexpected(
        std::move(*ops.first_error_).with_context(fmt::format("init of subscriber {} (not added)", id.value)));
  }
  if (state_->find(id) == nullptr) {
    return logic_error("EventManager::add_subscriber", fmt::format("subscriber {} was removed during init", id.value));
  }
  return id;
}

Result<void> EventManager::remove_subscriber(SubscriberId id) {
  auto it = state_->subscribers.find(id.value);
  if (it == state_->subscribers.end()) {
    return logic_error("EventManager::remove_subscriber", fmt::format("no subscriber {}", id.value));
  }
  // Moved out before unwatching, so the subscriber is forgotten whatever epoll says; destroyed at the end of this
  // function (unless dispatch holds it because it is the one running).
  detail::EventManagerState::Entry entry = std::move(it->second);
  state_->subscribers.erase(it);
  Result<void> result;
  for (int fd : entry.fds) {
    if (auto rc = state_->loop.remove(fd); !rc && result) {
      result = std::unexpected(std::move(rc.error()).with_context(fmt::format("removing subscriber {}", id.value)));
    }
  }
  return result;
}

Result<std::size_t> EventManager::run_once(std::chrono::milliseconds timeout) {
  state_->dispatched = 0;
  if (auto rc = state_->loop.run_once(timeout); !rc) {
    return std::unexpected(std::move(rc.error()));
  }
  return state_->dispatched;
}

Result<void> EventManager::run(const std::atomic<bool>& stop) {
  // Acquire pairs with the stopper's release store, so what it wrote before stopping is visible here afterwards.
  while (!stop.load(std::memory_order_acquire)) {
    if (auto rc = run_once(std::chrono::milliseconds(-1)); !rc) {
      return std::unexpected(std::move(rc.error()));
    }
  }
  return {};
}

std::size_t EventManager::subscriber_count() const noexcept {
  return state_->subscribers.size();
}

EventLoop& EventManager::loop() noexcept {
  return state_->loop;
}

std::shared_ptr<Notifier> EventManager::notifier() const {
  return state_->loop.notifier();
}

}  // namespace vmm::event
