#pragma once
/// @file
/// @brief `Daemon`: a vhost-user backend process's main loop: a listening unix socket, one frontend at a time, each
/// session's messages handed to a `BackendHandler`.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "vmm/error.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/vhost/backend/backend_handler.hpp"
#include "vmm/vhost/connection.hpp"
#include "vmm/virtio/virtio_device.hpp"

namespace vmm::vhost {

/// @brief Called when a session ends: its number (1, 2, ...) and why ("frontend disconnected", "stop requested",
/// or the error that ended it).
using SessionObserver = std::function<void(std::uint64_t session, std::string_view reason)>;

/// @brief Serves frontends one after the other on a unix socket (QEMU's `-chardev socket,path=...` connects as a
/// client; so does DPDK's virtio-user).
///
/// One session: accept, then wait (poll) on the connection and on a stop eventfd; each message received goes to
/// `BackendHandler::serve`, whose reply (if any) is sent back. A session ends when:
/// - the frontend closes the socket (ECONNRESET);
/// - the frontend breaks the framing (EPROTO: a header announcing an absurd size, truncated fds): the byte stream
///   cannot be trusted any more;
/// - a message stays incomplete for `kMessageTimeout` (ETIMEDOUT), or a reply cannot be sent;
/// - `request_stop` is called.
/// A message that is framed correctly but cannot be decoded (EBADMSG: a wrong size for its type, an unsupported
/// request, wrong fds) consumed exactly itself: it is traced, warned about, counted (`decode_errors`) and the session
/// goes on. Then `BackendHandler::disconnect` cleans up (workers joined, device reset, fds closed, memory unmapped)
/// and the daemon accepts the next frontend. Nothing a peer sends can crash or stop the daemon.
///
/// Threads: `run`/`serve_one` on one thread; `request_stop` from any thread or a signal handler; the counters from
/// anywhere. `handler()`'s accessors take the handler's lock, so they are safe from any thread too (the handler is
/// otherwise only used by the serving thread).
class Daemon {
 public:
  /// @brief How long the rest of a message may take once its first byte arrived.
  static constexpr std::chrono::milliseconds kMessageTimeout{5000};

  /// @brief Binds `socket_path` (removing a stale socket file; EADDRINUSE if a live daemon listens there) and builds
  /// the handler for `device`. The socket accepts connections from here on (they wait in the backlog until `run`).
  [[nodiscard]] static Result<std::unique_ptr<Daemon>> create(std::string socket_path,
                                                              std::shared_ptr<virtio::VirtioDevice> device,
                                                              BackendOptions options);
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  Daemon(Daemon&&) = delete;
  Daemon& operator=(Daemon&&) = delete;
  /// @brief Closes the socket and removes the socket file.
  ~Daemon();

  /// @brief Serves frontends one after the other until `request_stop`; then returns (also when stopped before it was
  /// called). Errors only for failures of the daemon's own machinery (poll, accept), never for a peer's behaviour.
  [[nodiscard]] Result<void> run();
  /// @brief Waits for one frontend and serves it until its session ends: true; false when a stop was requested
  /// before a frontend came (`--once`).
  [[nodiscard]] Result<bool> serve_one();
  /// @brief Makes `run`/`serve_one` return soon (a session in progress ends). Any thread; async-signal-safe (an atomic
  /// store and a write(2) to an eventfd). Sticky: once requested, the daemon stays stopped.
  void request_stop() noexcept;
  /// @brief True once `request_stop` was called.
  [[nodiscard]] bool stop_requested() const noexcept { return stop_requested_.load(std::memory_order_acquire); }

  /// @brief Sets who hears about ended sessions (before `run`).
  void set_session_observer(SessionObserver observer) { observer_ = std::move(observer); }

  /// @brief Frontends accepted so far.
  [[nodiscard]] std::uint64_t sessions() const noexcept { return sessions_.load(std::memory_order_relaxed); }
  /// @brief Messages dropped because they could not be decoded (EBADMSG).
  [[nodiscard]] std::uint64_t decode_errors() const noexcept { return decode_errors_.load(std::memory_order_relaxed); }
  /// @brief The session state (see the class comment for threads).
  [[nodiscard]] BackendHandler& handler() noexcept { return *handler_; }
  /// @brief The socket path.
  [[nodiscard]] const std::string& socket_path() const noexcept { return listener_.path(); }

 private:
  Daemon(Listener listener, event::EventFd stop_event, std::unique_ptr<BackendHandler> handler, BackendOptions options);

  // Serves one connected frontend; returns why the session ended.
  [[nodiscard]] std::string session(Connection connection);
  // A line to the trace and the warn sink.
  void log(std::string_view line) const;

  Listener listener_;
  event::EventFd stop_event_;
  int stop_fd_;  // stop_event_'s number, for the signal-safe request_stop
  std::unique_ptr<BackendHandler> handler_;
  BackendOptions options_;
  SessionObserver observer_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<std::uint64_t> sessions_{0};
  std::atomic<std::uint64_t> decode_errors_{0};
};

/// @brief What a daemon binary does once its `Daemon` exists (shared by vhost-user-rng and vhost-user-blk): prints
/// "<program>: listening on <path>" on stdout (flushed: scripts and tests wait for it), then
/// "<program>: session N ended: <reason>" after each session; turns SIGINT and SIGTERM into `request_stop` (SIGPIPE
/// is ignored: a vanished peer is an error to handle, not a death); serves one frontend (`once`) or frontends until
/// a signal. Returns the process exit status: 0, or 1 after printing the error on stderr.
[[nodiscard]] int run_daemon_main(Daemon& daemon, std::string_view program, bool once);

/// @brief The whole of a daemon binary after it built its device: a `Daemon` for `device` on `socket` whose
/// refusals and device errors go to stderr ("<program>: ..."), or, with `trace`, every message too
/// (`--trace-vhost-user`), then `run_daemon_main`. Returns the process exit status.
[[nodiscard]] int serve_device_main(std::string_view program, const std::string& socket,
                                    std::shared_ptr<virtio::VirtioDevice> device, bool trace, bool once);

/// @brief A `BackendOptions::tracer`/`warn` sink writing "<prefix><line>" to stderr, one whole line per call (lines
/// from the session thread and the ring workers do not interleave).
[[nodiscard]] TraceSink stderr_sink(std::string prefix);

}  // namespace vmm::vhost
