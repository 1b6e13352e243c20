#pragma once
/// @file
/// @brief `Connection`: one end of a vhost-user unix socket, sending and receiving `Message`s with their fds
/// (SCM_RIGHTS); `Listener`: the backend's listening socket; `Tracer`: the `--trace-vhost-user` printer.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/vhost/protocol.hpp"

namespace vmm::vhost {

/// @brief Where `--trace-vhost-user` lines go (null: nowhere). Called on whichever thread sends or receives.
using TraceSink = std::function<void(std::string_view line)>;

/// @brief Formats and forwards one traced message: "<side> <arrow> <describe(message)>", e.g.
/// "frontend > SET_VRING_CALL index=0 fds=[21]" for a message the frontend sent and
/// "backend < SET_VRING_CALL index=0 fds=[14]" for the same message received (with the receiver's fd numbers).
/// `Connection` traces a message it sends just before the bytes leave (so in a shared trace the sender's line comes
/// first; a failed send adds a note), and one it receives once it decoded; a refused message becomes a note.
class Tracer {
 public:
  /// @brief No tracing.
  Tracer() = default;
  /// @brief Traces as `side` ("frontend", "backend", "vhost-user-blk") into `sink` (null: no tracing).
  Tracer(std::string side, TraceSink sink) : side_(std::move(side)), sink_(std::move(sink)) {}
  /// @brief A message that was sent.
  void sent(const Message& message) const;
  /// @brief A message that was received.
  void received(const Message& message) const;
  /// @brief A free-form line, printed as "<side>: <text>": `note("frontend disconnected")` on the backend's tracer
  /// gives "backend: frontend disconnected".
  void note(std::string_view text) const;
  /// @brief True when lines go somewhere.
  [[nodiscard]] bool enabled() const noexcept { return static_cast<bool>(sink_); }

 private:
  std::string side_;
  TraceSink sink_;
};

/// @brief A connected vhost-user socket (SOCK_STREAM, AF_UNIX). Move-only; owns the socket.
///
/// Framing: a message is the 12-byte header, then `size` payload bytes; its fds ride as SCM_RIGHTS ancillary data
/// on the first byte of the header. `receive` reads the header with recvmsg (taking the fds, MSG_CMSG_CLOEXEC), refuses
/// a header whose size is above `kMaxPayloadSize` before reading on (the stream cannot be trusted after that, so the
/// caller should drop the connection: `Error::errno_value` is EPROTO), then reads the payload and calls `decode`.
/// A decode error (wrong size for the type, wrong fd count...) has consumed exactly one message: the stream is still
/// in step and the caller may go on (EBADMSG). Truncated ancillary data (more fds than `kMaxFds`) closes what did
/// arrive and is EPROTO. The peer closing the socket is ECONNRESET ("peer closed the connection"), also in the middle
/// of a message.
///
/// Timeouts: both directions wait at most `timeout` (poll) for the peer; ETIMEDOUT then. A negative timeout waits
/// forever. `send` uses MSG_NOSIGNAL: a closed peer is EPIPE, never SIGPIPE.
///
/// Not thread-safe: one request/reply exchange at a time (the owner serialises).
class Connection {
 public:
  /// @brief Connects to the backend listening at `path`, retrying (every 10 ms) until `timeout` while the socket
  /// does not exist or refuses (the daemon may still be starting). Paths must be shorter than 108 bytes
  /// (ENAMETOOLONG). Giving up reports the last attempt's errno (ENOENT, ECONNREFUSED, or EAGAIN for a full backlog).
  [[nodiscard]] static Result<Connection> connect(const std::string& path, std::chrono::milliseconds timeout);
  /// @brief Wraps a connected socket (from `Listener::accept` or socketpair).
  explicit Connection(Fd socket, Tracer tracer = {}) : socket_(std::move(socket)), tracer_(std::move(tracer)) {}
  /// @brief A connected pair (socketpair), for tests.
  [[nodiscard]] static Result<std::pair<Connection, Connection>> pair();

  /// @brief Sends `message` (encoded, with its fds). The fds stay owned by `message`.
  [[nodiscard]] Result<void> send(const Message& message, std::chrono::milliseconds timeout = kDefaultTimeout);
  /// @brief Receives one message travelling in `direction` (see `decode` for `expected` and `ack`).
  [[nodiscard]] Result<Message> receive(Direction direction, std::chrono::milliseconds timeout = kDefaultTimeout,
                                        std::optional<Request> expected = std::nullopt, bool ack = false);
  /// @brief Sends raw bytes with `fds` as one sendmsg, unvalidated: for tests that play a hostile peer.
  [[nodiscard]] Result<void> send_raw(std::span<const std::uint8_t> bytes, std::span<const int> fds = {});

  /// @brief Sets how messages are traced (sent and received).
  void set_tracer(Tracer tracer) { tracer_ = std::move(tracer); }
  /// @brief The socket (to watch it for EPOLLHUP/EPOLLRDHUP in an event loop).
  [[nodiscard]] const Fd& socket() const noexcept { return socket_; }
  /// @brief Shuts the socket down both ways (the peer sees EOF); the fd stays open until destruction.
  void shutdown() noexcept;

  /// @brief What `send`/`receive` wait by default.
  static constexpr std::chrono::milliseconds kDefaultTimeout{5000};

 private:
  Fd socket_;
  Tracer tracer_;
};

/// @brief The backend's listening socket: binds `path` (removing a stale socket file first), listens, and removes the
/// file again when destroyed. Move-only.
///
/// "Stale" is decided by connecting to the existing file: refused means nobody listens, so it goes. A live listener
/// sees that probe as a connection that closes at once (its next `receive` is ECONNRESET). Anything at `path` that
/// is not a socket is never removed (EADDRINUSE).
class Listener {
 public:
  /// @brief socket + bind + listen(1). Fails (EADDRINUSE) if another process is listening there.
  [[nodiscard]] static Result<Listener> bind(const std::string& path);
  /// @brief Takes over `other`'s socket and path (`other` no longer unlinks it).
  Listener(Listener&& other) noexcept;
  /// @brief Closes and unlinks this listener's socket, then takes over `other`'s.
  Listener& operator=(Listener&& other) noexcept;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  /// @brief Closes the socket and unlinks the path.
  ~Listener();

  /// @brief Waits up to `timeout` (negative: forever) for a frontend; nothing on timeout.
  [[nodiscard]] Result<std::optional<Connection>> accept(std::chrono::milliseconds timeout);
  /// @brief The listening socket (to watch it in an event loop).
  [[nodiscard]] const Fd& socket() const noexcept { return socket_; }
  /// @brief The path bound.
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  Listener(Fd socket, std::string path) : socket_(std::move(socket)), path_(std::move(path)) {}
  Fd socket_;
  std::string path_;
};

}  // namespace vmm::vhost
