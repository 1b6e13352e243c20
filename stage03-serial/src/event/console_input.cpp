#include "vmm/event/console_input.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace vmm::event {

bool ConsoleInput::feed(std::span<const std::uint8_t> bytes) {
  auto result = escape_.feed(bytes);
  pending_.insert(pending_.end(), result.forward.begin(), result.forward.end());
  pump();
  return result.quit;
}

void ConsoleInput::pump() {
  if ((uart_.state().ier & devices::uart::kIerErbfi) == 0) {
    return;
  }
  while (!pending_.empty()) {
    const std::size_t room = std::min(uart_.rx_free(), pending_.size());
    if (room == 0) {
      return;
    }
    const std::vector<std::uint8_t> chunk(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(room));
    const std::size_t taken = uart_.enqueue_input(chunk);
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(taken));
    if (taken == 0) {
      return;
    }
  }
}

void ConsoleInput::read_stdin(EventLoop& loop) {
  std::uint8_t buffer[256];
  const ssize_t n = ::read(STDIN_FILENO, buffer, sizeof(buffer));
  if (n <= 0) {
    if (n < 0 && errno == EINTR) {
      return;
    }
    if (stdin_open_) {
      (void)loop.remove(STDIN_FILENO);  // end of input (or an error): the guest runs on without it
    }
    stdin_open_ = false;
    return;
  }
  if (feed(std::span(buffer, static_cast<std::size_t>(n))) && on_quit_) {
    on_quit_();
  }
}

Result<void> ConsoleInput::watch_stdin(EventLoop& loop, std::function<void()> on_quit,
                                       std::chrono::milliseconds pump_period) {
  on_quit_ = std::move(on_quit);
  stdin_open_ = true;
  if (auto rc = loop.add(STDIN_FILENO, EPOLLIN, [this, &loop](std::uint32_t) { read_stdin(loop); }); !rc) {
    if (rc.error().errno_value != EPERM) {
      return rc;
    }
    // epoll refuses regular files and /dev/null (they are always "ready"): read such stdin to the end right away.
    while (stdin_open_) {
      read_stdin(loop);
    }
  }
  if (auto timer = loop.add_timer(pump_period, [this] { pump(); }); !timer) {
    return std::unexpected(timer.error());
  }
  return {};
}

}  // namespace vmm::event
