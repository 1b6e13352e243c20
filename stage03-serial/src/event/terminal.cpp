#include "vmm/event/terminal.hpp"

#include <signal.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <utility>

#include <fmt/format.h>

namespace vmm::event {

namespace {

// The one terminal in raw mode, where a signal handler or an atexit hook can find it. Written only on the thread
// that makes and restores the Terminal; `active` is published last (and cleared last), so a handler that sees it
// true also sees the fd and settings.
struct SavedTerminal {
  std::atomic<bool> active{false};
  int fd = -1;
  termios settings{};
};
SavedTerminal g_saved;  // NOLINT: a signal handler can reach nothing else

constexpr std::array kFatalSignals = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGABRT};

// Async-signal-safe: tcsetattr is on POSIX's list, and errno is preserved for the interrupted code.
void restore_saved() noexcept {
  if (g_saved.active.load()) {
    const int saved_errno = errno;
    ::tcsetattr(g_saved.fd, TCSANOW, &g_saved.settings);
    errno = saved_errno;
  }
}

extern "C" void restore_and_reraise(int signal) {
  restore_saved();
  // SA_RESETHAND has put back the default action; the signal is blocked while this handler runs, so it is delivered
  // (and kills the process) as soon as the handler returns.
  ::raise(signal);
}

extern "C" void restore_at_exit() {
  restore_saved();
}

}  // namespace

termios Terminal::raw_attributes(const termios& original, SignalKeys keys) {
  termios raw = original;
  // Input: bytes arrive as typed. No CR -> NL (the guest gets the Enter key's CR, as from a serial terminal), no
  // XON/XOFF (Ctrl-S and Ctrl-Q belong to the guest), no parity stripping, no break -> SIGINT.
  raw.c_iflag &= ~static_cast<tcflag_t>(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
  // Output processing stays on, unlike cfmakeraw(), which clears OPOST. Guests (and stage03's little test guests)
  // write bare "\n"; with OPOST off the host terminal would only move down a line and the text would staircase
  // across the screen. So would the VMM's own messages on stdout/stderr, which share the terminal. The price is
  // small: a guest that already sends "\r\n" now produces "\r\r\n", which looks the same. QEMU's stdio makes the
  // same choice. ONLCR and the rest of c_oflag stay as the user had them.
  raw.c_oflag |= OPOST;
  // No echo (the guest echoes what it wants echoed), no line editing (every key is sent at once), no signal keys
  // (Ctrl-C and Ctrl-Z go to the guest; Ctrl-A x quits the VMM), no Ctrl-V literal-next.
  raw.c_lflag &= ~static_cast<tcflag_t>(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
  if (keys == SignalKeys::ToVmm) {
    raw.c_lflag |= ISIG;  // ...unless the caller wants Ctrl-C to stop the VMM (stage03's demo does)
  }
  // 8-bit bytes, no parity.
  raw.c_cflag &= ~static_cast<tcflag_t>(CSIZE | PARENB);
  raw.c_cflag |= CS8;
  // read() returns as soon as one byte is there.
  raw.c_cc[VMIN] = 1;
  raw.c_cc[VTIME] = 0;
  return raw;
}

Result<Terminal> Terminal::make_raw(int fd, SignalKeys keys) {
  termios original{};
  if (::tcgetattr(fd, &original) < 0) {
    if (errno == ENOTTY) {
      return Terminal(fd, false, original);  // a pipe or a file: nothing to change, nothing to restore
    }
    return sys_error("tcgetattr", errno, fmt::format("fd {}", fd));
  }
  if (g_saved.active.load()) {
    return logic_error("Terminal::make_raw",
                       fmt::format("fd {}: another Terminal is already in raw mode (fd {})", fd, g_saved.fd));
  }
  // Saved before switching: a signal between the two finds the settings and restores them.
  g_saved.fd = fd;
  g_saved.settings = original;
  g_saved.active.store(true);
  const termios raw = raw_attributes(original, keys);
  if (::tcsetattr(fd, TCSANOW, &raw) < 0) {
    const int error = errno;
    g_saved.active.store(false);
    return sys_error("tcsetattr", error, fmt::format("fd {}: entering raw mode", fd));
  }
  return Terminal(fd, true, original);
}

Result<void> Terminal::restore_on_fatal_signal() {
  static std::once_flag at_exit_once;
  int at_exit_rc = 0;
  std::call_once(at_exit_once, [&at_exit_rc] { at_exit_rc = std::atexit(restore_at_exit); });
  if (at_exit_rc != 0) {
    return logic_error("std::atexit", "cannot register the terminal restore hook");
  }
  for (int signal : kFatalSignals) {
    struct sigaction current {};
    if (::sigaction(signal, nullptr, &current) < 0) {
      return sys_error("sigaction", errno, fmt::format("reading signal {}", signal));
    }
    if (current.sa_handler == SIG_IGN) {
      continue;  // the user asked for it to be ignored (nohup): it cannot kill us, so there is nothing to restore
    }
    struct sigaction action {};
    action.sa_handler = restore_and_reraise;
    sigemptyset(&action.sa_mask);
    // The handler runs once; the re-raised signal then gets the default action.
    action.sa_flags = SA_RESETHAND;
    if (::sigaction(signal, &action, nullptr) < 0) {
      return sys_error("sigaction", errno, fmt::format("signal {}", signal));
    }
  }
  return {};
}

Terminal::Terminal(Terminal&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      tty_(std::exchange(other.tty_, false)),
      raw_(std::exchange(other.raw_, false)),
      saved_(other.saved_) {}

Terminal& Terminal::operator=(Terminal&& other) noexcept {
  if (this != &other) {
    (void)restore();  // our own terminal first: the slot holds one terminal at a time
    fd_ = std::exchange(other.fd_, -1);
    tty_ = std::exchange(other.tty_, false);
    raw_ = std::exchange(other.raw_, false);
    saved_ = other.saved_;
  }
  return *this;
}

Terminal::~Terminal() {
  (void)restore();
}

Result<void> Terminal::restore() {
  if (!raw_) {
    return {};
  }
  raw_ = false;
  // TCSANOW, not TCSADRAIN: draining waits for the other side to read our output, which on a pty nobody may do.
  const int rc = ::tcsetattr(fd_, TCSANOW, &saved_);
  const int error = errno;
  g_saved.active.store(false);  // cleared after: a signal in between restores once more, harmlessly
  if (rc < 0) {
    return sys_error("tcsetattr", error, fmt::format("fd {}: restoring the saved settings", fd_));
  }
  return {};
}

}  // namespace vmm::event
