#include "vmm/vhost/connection.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace vmm::vhost {

namespace {

using Clock = std::chrono::steady_clock;

// A deadline that may be "never" (negative timeout).
class Deadline {
 public:
  // Anything beyond a year is "forever" too: it keeps `now + timeout` from overflowing for milliseconds::max().
  explicit Deadline(std::chrono::milliseconds timeout)
      : forever_(timeout.count() < 0 || timeout > std::chrono::hours(24 * 365)),
        end_(Clock::now() + (forever_ ? std::chrono::milliseconds(0) : timeout)) {}
  // What to pass to poll(2): -1 forever, else the milliseconds left (rounded up, so we never spin on 0 early;
  // capped at INT_MAX, about 24 days: the caller loops until `expired`).
  [[nodiscard]] int poll_timeout() const {
    if (forever_) {
      return -1;
    }
    const auto left = end_ - Clock::now();
    if (left <= Clock::duration::zero()) {
      return 0;
    }
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return static_cast<int>(std::min<std::int64_t>(ms, std::numeric_limits<int>::max()));
  }
  [[nodiscard]] bool expired() const { return !forever_ && Clock::now() >= end_; }

 private:
  bool forever_;
  Clock::time_point end_;
};

// Waits until `fd` is ready for `events`. Returns false on timeout.
Result<bool> wait_for(int fd, short events, const Deadline& deadline, std::string_view operation) {
  for (;;) {
    pollfd pfd{.fd = fd, .events = events, .revents = 0};
    const int n = ::poll(&pfd, 1, deadline.poll_timeout());
    if (n > 0) {
      // POLLHUP/POLLERR count as ready: the following sendmsg/recvmsg reports what happened.
      return true;
    }
    if (n == 0) {
      if (deadline.expired()) {
        return false;
      }
      continue;  // poll's millisecond rounding woke us a hair early.
    }
    if (errno != EINTR) {
      return sys_error(operation, errno, "poll");
    }
  }
}

Result<sockaddr_un> unix_address(const std::string& path, std::string_view operation) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return sys_error(operation, ENAMETOOLONG,
                     fmt::format("unix socket path '{}' is {} bytes; it must be 1 to {}", path, path.size(),
                                 sizeof addr.sun_path - 1));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

Result<Fd> unix_socket(std::string_view operation, int extra_flags = 0) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | extra_flags, 0);
  if (fd < 0) {
    return sys_error(operation, errno, "socket(AF_UNIX, SOCK_STREAM)");
  }
  return Fd(fd);
}

// connect(2) on a non-blocking socket: a listener whose backlog is full answers EAGAIN instead of blocking us
// past our deadline. Returns 0 on success or the errno.
int try_connect(const Fd& socket, const sockaddr_un& addr) {
  for (;;) {
    if (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      return 0;
    }
    if (errno != EINTR) {
      return errno;
    }
  }
}

std::string fd_list(std::span<const int> fds) {
  return fmt::format("[{}]", fmt::join(fds, ","));
}

}  // namespace

// --- Connection ----------------------------------------------------------------------------------------------------

Result<Connection> Connection::connect(const std::string& path, std::chrono::milliseconds timeout) {
  constexpr std::string_view kOp = "vhost-user connect";
  auto addr = unix_address(path, kOp);
  if (!addr) {
    return std::unexpected(std::move(addr.error()));
  }
  const Deadline deadline(timeout);
  for (;;) {
    auto socket = unix_socket(kOp, SOCK_NONBLOCK);
    if (!socket) {
      return std::unexpected(std::move(socket.error()));
    }
    const int error = try_connect(*socket, *addr);
    if (error == 0) {
      // Back to blocking: the Connection's I/O uses poll plus MSG_DONTWAIT and works either way, but a blocking
      // socket is what every other owner of a Connection (accept, socketpair) hands over, so be uniform.
      const int flags = ::fcntl(socket->get(), F_GETFL);
      if (flags < 0 || ::fcntl(socket->get(), F_SETFL, flags & ~O_NONBLOCK) < 0) {
        return sys_error(kOp, errno, "fcntl(F_SETFL)");
      }
      return Connection(std::move(*socket));
    }
    // Retry while the daemon may still be starting: no socket file yet (ENOENT), a socket file but nobody listening
    // yet or any more (ECONNREFUSED), or a listener with a full backlog (EAGAIN).
    if (error != ENOENT && error != ECONNREFUSED && error != EAGAIN) {
      return sys_error(kOp, error, path);
    }
    if (deadline.expired()) {
      return sys_error(kOp, error, fmt::format("{} (gave up after {} ms)", path, timeout.count()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Result<std::pair<Connection, Connection>> Connection::pair() {
  std::array<int, 2> fds{};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds.data()) < 0) {
    return sys_error("socketpair", errno, "AF_UNIX, SOCK_STREAM");
  }
  return std::pair<Connection, Connection>(Connection(Fd(fds[0])), Connection(Fd(fds[1])));
}

namespace {

// Writes all of `bytes`, the fds riding as SCM_RIGHTS on the first sendmsg (so on the first byte). Partial writes
// continue without them: the kernel attached them to what the first call queued.
Result<void> send_all(int socket, std::span<const std::uint8_t> bytes, std::span<const int> fds,
                      const Deadline& deadline, std::string_view operation) {
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * 64)> control{};
  if (fds.size() > 64) {
    return sys_error(operation, EINVAL, fmt::format("{} fds in one message", fds.size()));
  }
  std::size_t done = 0;
  bool fds_sent = fds.empty();
  while (done < bytes.size() || !fds_sent) {
    iovec iov{.iov_base = const_cast<std::uint8_t*>(bytes.data() + done), .iov_len = bytes.size() - done};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!fds_sent) {
      msg.msg_control = control.data();
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    }
    // MSG_NOSIGNAL: a closed peer is EPIPE, not a SIGPIPE that kills the VMM. MSG_DONTWAIT: never block past the
    // deadline, whatever the socket's O_NONBLOCK says; poll below does the waiting.
    const ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      done += static_cast<std::size_t>(n);
      fds_sent = true;
      continue;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return sys_error(operation, errno, fmt::format("sendmsg after {} of {} bytes", done, bytes.size()));
    }
    auto ready = wait_for(socket, POLLOUT, deadline, operation);
    if (!ready) {
      return std::unexpected(std::move(ready.error()));
    }
    if (!*ready) {
      return sys_error(operation, ETIMEDOUT,
                       fmt::format("the peer did not take the message ({} of {} bytes sent)", done, bytes.size()));
    }
  }
  return {};
}

// Reads exactly `out.size()` bytes, collecting every fd that arrives (at most kMaxFds in all).
Result<void> receive_exact(int socket, std::span<std::uint8_t> out, std::vector<Fd>& fds, const Deadline& deadline,
                           std::string_view what) {
  constexpr std::string_view kOp = "vhost-user receive";
  // Room for exactly kMaxFds: a peer sending more gets MSG_CTRUNC (the kernel closes the ones that did not fit).
  alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kMaxFds)> control{};
  std::size_t done = 0;
  while (done < out.size()) {
    iovec iov{.iov_base = out.data() + done, .iov_len = out.size() - done};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    const ssize_t n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        auto ready = wait_for(socket, POLLIN, deadline, kOp);
        if (!ready) {
          return std::unexpected(std::move(ready.error()));
        }
        if (!*ready) {
          return sys_error(kOp, ETIMEDOUT,
                           fmt::format("no {} from the peer ({} of {} bytes arrived)", what, done, out.size()));
        }
        continue;
      }
      if (errno == ECONNRESET) {
        return sys_error(kOp, ECONNRESET,
                         fmt::format("peer closed the connection ({} of {} bytes arrived)", done, out.size()));
      }
      return sys_error(kOp, errno, fmt::format("recvmsg {}", what));
    }
    // Take ownership of every fd first, so that whatever is refused below closes them.
    for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
      if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
        const std::size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < count; ++i) {
          int fd = -1;
          std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof fd);
          fds.emplace_back(fd);
        }
      }
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0) {
      const std::size_t got = fds.size();
      fds.clear();
      return sys_error(
          kOp, EPROTO,
          fmt::format("more than {} fds attached to one message ({} arrived and were closed)", kMaxFds, got));
    }
    if (fds.size() > kMaxFds) {
      const std::size_t got = fds.size();
      fds.clear();
      return sys_error(kOp, EPROTO, fmt::format("{} fds attached to one message (at most {})", got, kMaxFds));
    }
    if (n == 0) {
      return sys_error(
          kOp, ECONNRESET,
          done == 0 && what == "header"
              ? std::string("peer closed the connection")
              : fmt::format("peer closed the connection ({} of {} {} bytes arrived)", done, out.size(), what));
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

}  // namespace

Result<void> Connection::send(const Message& message, std::chrono::milliseconds timeout) {
  auto bytes = encode(message);
  if (!bytes) {
    return std::unexpected(std::move(bytes.error()));
  }
  std::vector<int> fds;
  fds.reserve(message.fds.size());
  for (const Fd& fd : message.fds) {
    fds.push_back(fd.get());
  }
  // Traced before the bytes leave, so that in a shared trace the sender's line precedes the receiver's.
  tracer_.sent(message);
  auto sent = send_all(socket_.get(), *bytes, fds, Deadline(timeout), "vhost-user send");
  if (!sent) {
    tracer_.note(fmt::format("sending {} failed: {}", request_name(static_cast<std::uint32_t>(message.request)),
                             sent.error().message()));
    return std::unexpected(
        std::move(sent.error()).with_context(request_name(static_cast<std::uint32_t>(message.request))));
  }
  return {};
}

Result<void> Connection::send_raw(std::span<const std::uint8_t> bytes, std::span<const int> fds) {
  if (tracer_.enabled()) {
    tracer_.note(fmt::format("sending {} raw bytes, fds={}", bytes.size(), fd_list(fds)));
  }
  return send_all(socket_.get(), bytes, fds, Deadline(kDefaultTimeout), "vhost-user send");
}

Result<Message> Connection::receive(Direction direction, std::chrono::milliseconds timeout,
                                    std::optional<Request> expected, bool ack) {
  constexpr std::string_view kOp = "vhost-user receive";
  const Deadline deadline(timeout);
  std::vector<Fd> fds;

  std::array<std::uint8_t, kHeaderSize> header_bytes{};
  if (auto got = receive_exact(socket_.get(), header_bytes, fds, deadline, "header"); !got) {
    return std::unexpected(std::move(got.error()));
  }
  const Header header = decode_header(header_bytes);
  if (header.size > kMaxPayloadSize) {
    // Reading on would mean trusting a length that no valid message has: the stream is out of step for good.
    std::string context = fmt::format(
        "{} header announces {} payload bytes (at most {}); the stream cannot be "
        "trusted any more",
        request_name(header.request), header.size, kMaxPayloadSize);
    tracer_.note(context);
    return sys_error(kOp, EPROTO, std::move(context));
  }
  std::vector<std::uint8_t> payload(header.size);
  if (auto got = receive_exact(socket_.get(), payload, fds, deadline, "payload"); !got) {
    return std::unexpected(std::move(got.error()).with_context(request_name(header.request)));
  }

  auto message = decode(header, payload, std::move(fds), direction, expected, ack);
  if (!message) {
    // The whole message was consumed: the stream is in step, the caller may go on.
    tracer_.note(fmt::format("refused: {}", message.error().message()));
    return sys_error(kOp, EBADMSG, message.error().message());
  }
  tracer_.received(*message);
  return message;
}

void Connection::shutdown() noexcept {
  if (socket_.valid()) {
    ::shutdown(socket_.get(), SHUT_RDWR);
  }
}

// --- Listener ------------------------------------------------------------------------------------------------------

Result<Listener> Listener::bind(const std::string& path) {
  constexpr std::string_view kOp = "vhost-user listen";
  auto addr = unix_address(path, kOp);
  if (!addr) {
    return std::unexpected(std::move(addr.error()));
  }
  // Non-blocking for accept4's sake (see accept).
  auto socket = unix_socket(kOp, SOCK_NONBLOCK);
  if (!socket) {
    return std::unexpected(std::move(socket.error()));
  }
  const auto* sa = reinterpret_cast<const sockaddr*>(&*addr);
  if (::bind(socket->get(), sa, sizeof *addr) < 0) {
    if (errno != EADDRINUSE) {
      return sys_error(kOp, errno, fmt::format("bind {}", path));
    }
    // The path exists. A socket file left by a daemon that died is stale and may go; anything else may not: a
    // regular file is not ours to delete, and a live listener must keep its socket. Probing with connect is the only
    // way to tell a live socket from a stale one (a live listener sees a connection that closes at once).
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
      return sys_error(kOp, EADDRINUSE, fmt::format("{} exists and is not a socket", path));
    }
    auto probe = unix_socket(kOp, SOCK_NONBLOCK);
    if (!probe) {
      return std::unexpected(std::move(probe.error()));
    }
    const int error = try_connect(*probe, *addr);
    if (error != ECONNREFUSED) {
      // 0: someone accepted; EAGAIN: someone listens with a full backlog; anything else: leave the file alone.
      return sys_error(kOp, EADDRINUSE,
                       error == 0 || error == EAGAIN
                           ? fmt::format("another process is listening on {}", path)
                           : fmt::format("{} exists and probing it failed with {}", path, errno_name(error)));
    }
    if (::unlink(path.c_str()) < 0 && errno != ENOENT) {
      return sys_error(kOp, errno, fmt::format("unlink stale socket {}", path));
    }
    if (::bind(socket->get(), sa, sizeof *addr) < 0) {
      return sys_error(kOp, errno, fmt::format("bind {} (after removing a stale socket)", path));
    }
  }
  // From here the file is ours: the Listener's destructor removes it, also if listen fails.
  Listener listener(std::move(*socket), path);
  if (::listen(listener.socket_.get(), 1) < 0) {
    return sys_error(kOp, errno, fmt::format("listen {}", path));
  }
  return listener;
}

Listener::Listener(Listener&& other) noexcept
    : socket_(std::move(other.socket_)), path_(std::exchange(other.path_, std::string())) {}

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this != &other) {
    if (socket_.valid() && !path_.empty()) {
      ::unlink(path_.c_str());
    }
    socket_ = std::move(other.socket_);
    path_ = std::exchange(other.path_, std::string());
  }
  return *this;
}

Listener::~Listener() {
  if (socket_.valid() && !path_.empty()) {
    ::unlink(path_.c_str());
  }
}

Result<std::optional<Connection>> Listener::accept(std::chrono::milliseconds timeout) {
  constexpr std::string_view kOp = "vhost-user accept";
  const Deadline deadline(timeout);
  for (;;) {
    auto ready = wait_for(socket_.get(), POLLIN, deadline, kOp);
    if (!ready) {
      return std::unexpected(std::move(ready.error()));
    }
    if (!*ready) {
      return std::optional<Connection>{};
    }
    // The listening socket is non-blocking, so accept4 never sleeps if the connection went away after poll; the
    // accepted socket does not inherit O_NONBLOCK (Linux accept(2) never copies file status flags).
    const int fd = ::accept4(socket_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      return std::optional<Connection>(Connection(Fd(fd)));
    }
    // EAGAIN: the pending connection went away; ECONNABORTED: likewise. Wait for the next.
    if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED) {
      return sys_error(kOp, errno, path_);
    }
  }
}

}  // namespace vmm::vhost
