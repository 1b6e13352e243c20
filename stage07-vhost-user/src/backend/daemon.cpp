#include "vmm/vhost/backend/daemon.hpp"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <mutex>
#include <utility>

#include <fmt/format.h>

namespace vmm::vhost {

Result<std::unique_ptr<Daemon>> Daemon::create(std::string socket_path, std::shared_ptr<virtio::VirtioDevice> device,
                                               BackendOptions options) {
  auto handler = BackendHandler::create(std::move(device), options);
  if (!handler) {
    return std::unexpected(std::move(handler).error());
  }
  auto stop = event::EventFd::create(event::EventFd::Mode::Counter);
  if (!stop) {
    return std::unexpected(std::move(stop).error().with_context("vhost-user daemon: stop eventfd"));
  }
  auto listener = Listener::bind(socket_path);
  if (!listener) {
    return std::unexpected(std::move(listener).error());
  }
  return std::unique_ptr<Daemon>(
      new Daemon(std::move(*listener), std::move(*stop), std::move(*handler), std::move(options)));
}

Daemon::Daemon(Listener listener, event::EventFd stop_event, std::unique_ptr<BackendHandler> handler,
               BackendOptions options)
    : listener_(std::move(listener)),
      stop_event_(std::move(stop_event)),
      stop_fd_(stop_event_.fd()),
      handler_(std::move(handler)),
      options_(std::move(options)) {}

Daemon::~Daemon() = default;

void Daemon::request_stop() noexcept {
  // Only async-signal-safe operations: a lock-free atomic store and write(2). (EventFd::write could build an Error,
  // which allocates.) The eventfd is never drained, so every later wait sees it too.
  stop_requested_.store(true, std::memory_order_release);
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(stop_fd_, &one, sizeof one);
}

void Daemon::log(std::string_view line) const {
  options_.tracer.note(line);
  if (options_.warn) {
    options_.warn(line);
  }
}

Result<void> Daemon::run() {
  while (!stop_requested()) {
    auto served = serve_one();
    if (!served) {
      return std::unexpected(std::move(served).error());
    }
    if (!*served) {
      break;
    }
  }
  return {};
}

Result<bool> Daemon::serve_one() {
  for (;;) {
    if (stop_requested()) {
      return false;
    }
    std::array<pollfd, 2> fds{pollfd{.fd = listener_.socket().get(), .events = POLLIN, .revents = 0},
                              pollfd{.fd = stop_fd_, .events = POLLIN, .revents = 0}};
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) {
        continue;  // a signal: its handler may have requested the stop, checked at the top
      }
      return sys_error("poll", errno, fmt::format("vhost-user daemon: waiting for a frontend on {}", socket_path()));
    }
    if (fds[1].revents != 0) {
      return false;
    }
    if (fds[0].revents == 0) {
      continue;
    }
    auto accepted = listener_.accept(std::chrono::milliseconds(0));
    if (!accepted) {
      return std::unexpected(std::move(accepted).error());
    }
    if (!*accepted) {
      continue;  // the client gave up between poll and accept
    }
    const std::uint64_t number = sessions_.fetch_add(1, std::memory_order_relaxed) + 1;
    options_.tracer.note(fmt::format("session {}: frontend connected", number));
    const std::string reason = session(std::move(**accepted));
    // Whatever ended the session, the next frontend finds a fresh device: no workers, no fds, no memory.
    handler_->disconnect();
    options_.tracer.note(fmt::format("session {} ended: {}", number, reason));
    if (observer_) {
      observer_(number, reason);
    }
    return true;
  }
}

std::string Daemon::session(Connection connection) {
  connection.set_tracer(options_.tracer);
  for (;;) {
    std::array<pollfd, 2> fds{pollfd{.fd = connection.socket().get(), .events = POLLIN, .revents = 0},
                              pollfd{.fd = stop_fd_, .events = POLLIN, .revents = 0}};
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      return fmt::format("poll: {}", errno_name(errno));
    }
    if (fds[1].revents != 0) {
      return "stop requested";
    }
    if (fds[0].revents == 0) {
      continue;
    }
    // Readable, or hung up: receive tells which.
    auto message = connection.receive(Direction::ToBackend, kMessageTimeout);
    if (!message) {
      const Error& error = message.error();
      if (error.errno_value == EBADMSG) {
        // One whole message was consumed and refused: the stream is still in step, so the session goes on. (If the
        // frontend waits for a reply to it, it will time out: we cannot know what reply it expected.)
        decode_errors_.fetch_add(1, std::memory_order_relaxed);
        log(fmt::format("ignored a message that could not be decoded: {}", error));
        continue;
      }
      if (error.errno_value == ECONNRESET) {
        return "frontend disconnected";
      }
      // EPROTO (framing), ETIMEDOUT (half a message), anything else: the stream cannot be trusted any more.
      return error.message();
    }
    if (auto reply = handler_->serve(std::move(*message)); reply) {
      if (auto sent = connection.send(*reply, kMessageTimeout); !sent) {
        return fmt::format("sending a reply: {}", sent.error());
      }
    }
  }
}

namespace {

// The daemon the signal handler stops. A signal handler can only reach globals; an atomic pointer is async-signal-safe
// to load (lock-free), and request_stop itself is.
std::atomic<Daemon*> g_signalled_daemon{nullptr};

extern "C" void stop_on_signal(int /*signal*/) {
  if (Daemon* daemon = g_signalled_daemon.load(std::memory_order_acquire)) {
    daemon->request_stop();
  }
}

}  // namespace

TraceSink stderr_sink(std::string prefix) {
  auto mutex = std::make_shared<std::mutex>();
  return [prefix = std::move(prefix), mutex](std::string_view line) {
    const std::string text = fmt::format("{}{}\n", prefix, line);
    std::lock_guard lock(*mutex);
    std::fwrite(text.data(), 1, text.size(), stderr);
    std::fflush(stderr);
  };
}

int run_daemon_main(Daemon& daemon, std::string_view program, bool once) {
  const std::string name(program);
  daemon.set_session_observer([name](std::uint64_t session, std::string_view reason) {
    fmt::print("{}: session {} ended: {}\n", name, session, reason);
    std::fflush(stdout);
  });

  g_signalled_daemon.store(&daemon, std::memory_order_release);
  struct sigaction action {};
  action.sa_handler = stop_on_signal;
  ::sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: poll returns EINTR and the loop sees the stop at once
  struct sigaction old_int {};
  struct sigaction old_term {};
  struct sigaction old_pipe {};
  ::sigaction(SIGINT, &action, &old_int);
  ::sigaction(SIGTERM, &action, &old_term);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  ::sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGPIPE, &ignore, &old_pipe);

  fmt::print("{}: listening on {}\n", name, daemon.socket_path());
  std::fflush(stdout);

  int status = 0;
  if (once) {
    if (auto served = daemon.serve_one(); !served) {
      fmt::print(stderr, "{}: {}\n", name, served.error());
      status = 1;
    }
  } else if (auto ran = daemon.run(); !ran) {
    fmt::print(stderr, "{}: {}\n", name, ran.error());
    status = 1;
  }

  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  g_signalled_daemon.store(nullptr, std::memory_order_release);
  return status;
}

int serve_device_main(std::string_view program, const std::string& socket, std::shared_ptr<virtio::VirtioDevice> device,
                      bool trace, bool once) {
  BackendOptions options;
  if (trace) {
    options.tracer = Tracer(std::string(program), stderr_sink(""));
  } else {
    options.warn = stderr_sink(fmt::format("{}: ", program));
  }
  auto daemon = Daemon::create(socket, std::move(device), std::move(options));
  if (!daemon) {
    fmt::print(stderr, "{}: {}\n", program, daemon.error());
    return 1;
  }
  return run_daemon_main(**daemon, program, once);
}

}  // namespace vmm::vhost
