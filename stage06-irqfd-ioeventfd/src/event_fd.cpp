#include "vmm/event/event_fd.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

namespace vmm::event {

Result<EventFd> EventFd::create(Mode mode, std::uint32_t initial) {
  // Non-blocking always: a device worker polls many fds with epoll and must never sleep inside read(2) on one of
  // them. Close-on-exec always: a guest's kick fd has no business in a child process (the rig, a peer, gdb).
  int flags = EFD_CLOEXEC | EFD_NONBLOCK;
  if (mode == Mode::Semaphore) {
    flags |= EFD_SEMAPHORE;
  }
  int fd = ::eventfd(initial, flags);
  if (fd < 0) {
    return sys_error("eventfd", errno, mode == Mode::Semaphore ? "semaphore mode" : "counter mode");
  }
  return EventFd(Fd(fd), mode);
}

Result<void> EventFd::write(std::uint64_t value) const {
  for (;;) {
    // eventfd takes exactly 8 bytes in host byte order; anything else is EINVAL.
    ssize_t n = ::write(fd_.get(), &value, sizeof value);
    if (n == static_cast<ssize_t>(sizeof value)) {
      return {};
    }
    if (n >= 0) {
      return logic_error("write(eventfd)", fmt::format("short write of {} bytes", n));
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN) {
      // The counter would pass 2^64-2. Blocking until a reader drains it is what a blocking eventfd would do; ours
      // reports it instead, since the writer is often a thread that must not stall (a vCPU, the main loop).
      return sys_error("write(eventfd)", errno,
                       fmt::format("fd {}: adding {} would overflow the counter", fd(), value));
    }
    return sys_error("write(eventfd)", errno, fmt::format("fd {}, value {}", fd(), value));
  }
}

Result<std::optional<std::uint64_t>> EventFd::read() const {
  for (;;) {
    std::uint64_t value = 0;
    ssize_t n = ::read(fd_.get(), &value, sizeof value);
    if (n == static_cast<ssize_t>(sizeof value)) {
      return value;
    }
    if (n >= 0) {
      return logic_error("read(eventfd)", fmt::format("short read of {} bytes", n));
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN) {
      // The counter is 0: nothing happened since the last read, or another reader of a clone took it first.
      return std::optional<std::uint64_t>{};
    }
    return sys_error("read(eventfd)", errno, fmt::format("fd {}", fd()));
  }
}

Result<EventFd> EventFd::try_clone() const {
  // dup(2) shares the open file, so the counter and the O_NONBLOCK status flag; EFD_SEMAPHORE lives in the
  // eventfd context, so the clone reads the same way.
  auto dup = fd_.duplicate();
  if (!dup) {
    return std::unexpected(std::move(dup.error()).with_context("cloning an eventfd"));
  }
  return EventFd(std::move(*dup), mode_);
}

}  // namespace vmm::event
