#pragma once
// A scripted vhost-user backend for the frontend's tests: it listens on a unix socket, accepts one frontend, records
// every message it receives (with the fds, kept open so a test can write to them or fstat them) and answers the GETs
// and the acks as its script says. It can refuse one request, swallow one (never answer), or hang up on command.
//
// It runs on its own thread; tests read the record with `find`/`requests` and wait for it with `wait_until`. Records
// live in a deque, never removed before the backend is destroyed: a pointer from `find` stays valid and its message
// does not change after it was recorded.

#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/vhost/connection.hpp"
#include "vmm/vhost/protocol.hpp"
#include "vmm/virtio/uapi.hpp"

namespace vmm::vhost::testing {

/// What the fake backend answers and how it misbehaves.
struct FakeBackendScript {
  /// GET_FEATURES: VERSION_1, the ring features, bit 30, and a device-specific bit (5).
  std::uint64_t features = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX) |
                           (1ull << VIRTIO_RING_F_INDIRECT_DESC) | (1ull << kProtocolFeaturesBit) | (1ull << 5);
  /// GET_PROTOCOL_FEATURES: what qemu-storage-daemon offers (MQ, LOG_SHMFD, REPLY_ACK, BACKEND_REQ, PAGEFAULT,
  /// CONFIG, BACKEND_SEND_FD, HOST_NOTIFIER, CONFIGURE_MEM_SLOTS).
  std::uint64_t protocol_features = 0x8f2b;
  std::uint64_t queue_num = 1;                   ///< GET_QUEUE_NUM.
  std::vector<std::uint8_t> config;              ///< GET_CONFIG answers from these bytes (zeros past them).
  std::uint32_t vring_base = 0;                  ///< GET_VRING_BASE's num.
  std::optional<Request> refuse_once;            ///< Ack the first such request with status 1 (needs kNeedReply).
  std::optional<Request> swallow;                ///< Never answer this request (the frontend must time out).
  std::optional<std::size_t> config_reply_size;  ///< Answer GET_CONFIG with this many bytes (hostile backend).
};

/// One message the backend received.
struct Received {
  Request request = Request::GetFeatures;  ///< What it was.
  std::uint32_t flags = 0;                 ///< Its header flags.
  Payload payload;                         ///< Decoded.
  std::vector<Fd> fds;                     ///< The fds it carried, still open.
};

class FakeBackend {
 public:
  /// Binds `path` and starts serving on a thread.
  static Result<std::unique_ptr<FakeBackend>> start(const std::string& path, FakeBackendScript script) {
    auto listener = Listener::bind(path);
    if (!listener) {
      return std::unexpected(listener.error());
    }
    std::unique_ptr<FakeBackend> backend(new FakeBackend(std::move(*listener), std::move(script)));
    backend->thread_ = std::thread([raw = backend.get()] { raw->run(); });
    return backend;
  }
  FakeBackend(const FakeBackend&) = delete;
  FakeBackend& operator=(const FakeBackend&) = delete;
  ~FakeBackend() {
    stop_.store(true);
    thread_.join();
  }

  /// The requests received so far, in order.
  [[nodiscard]] std::vector<Request> requests() const {
    std::lock_guard lock(mutex_);
    std::vector<Request> out;
    for (const Received& r : received_) {
      out.push_back(r.request);
    }
    return out;
  }
  /// The `nth` (0-based) received message with this request, or null.
  [[nodiscard]] const Received* find(Request request, std::size_t nth = 0) const {
    std::lock_guard lock(mutex_);
    for (const Received& r : received_) {
      if (r.request == request && nth-- == 0) {
        return &r;
      }
    }
    return nullptr;
  }
  /// The `nth` message with this request, waiting (bounded) for it to arrive. If it never does, the test fails and an
  /// empty record comes back (its payload holds nothing: a `std::get` on it throws, which the test reports).
  [[nodiscard]] const Received& at(Request request, std::size_t nth = 0) const {
    if (!wait_for(request, nth + 1)) {
      ADD_FAILURE() << "the backend never received " << request_name(static_cast<std::uint32_t>(request)) << " #"
                    << nth;
      static const Received kNothing;
      return kNothing;
    }
    return *find(request, nth);
  }
  /// How many messages with this request arrived.
  [[nodiscard]] std::size_t count(Request request) const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(
        std::ranges::count_if(received_, [&](const Received& r) { return r.request == request; }));
  }
  /// Waits (bounded: 30 s) until `done` holds for the record; returns its last value.
  bool wait_until(const std::function<bool(const FakeBackend&)>& done) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!done(*this)) {
      if (std::chrono::steady_clock::now() > deadline) {
        return false;
      }
      // `done` takes the lock itself, so it is checked outside it: wake up now and then rather than miss a change
      // that happened between the check and the wait.
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, std::chrono::milliseconds(10));
    }
    return true;
  }
  /// Waits until `count` messages with this request arrived.
  bool wait_for(Request request, std::size_t n = 1) const {
    return wait_until([&](const FakeBackend& b) { return b.count(request) >= n; });
  }
  /// Asks the backend thread to close the connection (the frontend sees a hangup).
  void hang_up() { hang_up_.store(true); }
  /// True once the connection is gone (closed by the frontend, or by `hang_up`).
  [[nodiscard]] bool closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
  }
  /// Waits until `closed`.
  bool wait_closed() const {
    return wait_until([](const FakeBackend& b) { return b.closed(); });
  }
  /// An error the backend thread hit that it did not expect (none in a passing test).
  [[nodiscard]] std::optional<Error> error() const {
    std::lock_guard lock(mutex_);
    return error_;
  }

 private:
  FakeBackend(Listener listener, FakeBackendScript script)
      : listener_(std::move(listener)), script_(std::move(script)) {}

  void run() {
    std::optional<Connection> connection;
    while (!stop_.load() && !connection) {
      auto accepted = listener_.accept(std::chrono::milliseconds(20));
      if (!accepted) {
        finish(accepted.error());
        return;
      }
      if (*accepted) {
        connection = std::move(**accepted);
      }
    }
    while (!stop_.load() && connection) {
      if (hang_up_.load()) {
        connection.reset();
        break;
      }
      // Receive only what is there: polling in short steps keeps the thread responsive to stop and hang_up.
      pollfd pfd{.fd = connection->socket().get(), .events = POLLIN, .revents = 0};
      if (::poll(&pfd, 1, 20) <= 0) {
        continue;
      }
      auto message = connection->receive(Direction::ToBackend, std::chrono::seconds(5));
      if (!message) {
        if (message.error().errno_value != ECONNRESET) {
          finish(message.error());
          return;
        }
        break;  // the frontend went away
      }
      if (!answer(*connection, std::move(*message))) {
        return;
      }
    }
    finish(std::nullopt);
  }

  // Records `message`, then answers it as the script says. False after a send error (recorded).
  bool answer(Connection& connection, Message message) {
    const Request request = message.request;
    std::optional<Payload> reply;
    bool refuse = false;
    switch (request) {
      case Request::GetFeatures:
        reply = script_.features;
        break;
      case Request::GetProtocolFeatures:
        reply = script_.protocol_features;
        break;
      case Request::GetQueueNum:
        reply = script_.queue_num;
        break;
      case Request::GetConfig: {
        const auto& asked = std::get<DeviceConfig>(message.payload);
        DeviceConfig config{.offset = asked.offset,
                            .flags = 0,
                            .bytes = std::vector<std::uint8_t>(script_.config_reply_size.value_or(asked.bytes.size()))};
        for (std::size_t i = 0; i < config.bytes.size(); ++i) {
          if (asked.offset + i < script_.config.size()) {
            config.bytes[i] = script_.config[asked.offset + i];
          }
        }
        reply = std::move(config);
        break;
      }
      case Request::GetVringBase: {
        const auto& asked = std::get<vhost_vring_state>(message.payload);
        reply = vhost_vring_state{.index = asked.index, .num = script_.vring_base};
        break;
      }
      default:
        if (message.needs_reply()) {
          refuse = script_.refuse_once == request;
          if (refuse) {
            script_.refuse_once.reset();
          }
          reply = std::uint64_t{refuse ? 1u : 0u};
        }
        break;
    }
    const bool swallow = script_.swallow == request;
    {
      std::lock_guard lock(mutex_);
      received_.push_back(Received{.request = request,
                                   .flags = message.flags,
                                   .payload = std::move(message.payload),
                                   .fds = std::move(message.fds)});
      changed_.notify_all();
    }
    if (!reply || swallow) {
      return true;
    }
    Message out;
    out.request = request;
    out.flags = kVersion | kReplyFlag;
    out.payload = std::move(*reply);
    if (auto sent = connection.send(out, std::chrono::seconds(5)); !sent) {
      // The frontend may have given up and closed already (a test of its timeouts): not the backend's error.
      if (sent.error().errno_value != EPIPE && sent.error().errno_value != ECONNRESET) {
        finish(sent.error());
        return false;
      }
    }
    return true;
  }

  void finish(std::optional<Error> error) {
    std::lock_guard lock(mutex_);
    closed_ = true;
    if (error) {
      error_ = std::move(error);
    }
    changed_.notify_all();
  }

  Listener listener_;
  FakeBackendScript script_;  // the backend thread's (refuse_once is consumed)
  std::atomic<bool> stop_{false};
  std::atomic<bool> hang_up_{false};
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::deque<Received> received_;  // mutex_
  bool closed_ = false;            // mutex_
  std::optional<Error> error_;     // mutex_
  std::thread thread_;
};

}  // namespace vmm::vhost::testing
