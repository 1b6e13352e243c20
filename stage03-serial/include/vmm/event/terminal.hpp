#pragma once
/// @file
/// @brief `Terminal`: the host terminal in raw mode while the guest owns it, restored on every way out.

#include <termios.h>
#include <unistd.h>

#include "vmm/error.hpp"

namespace vmm::event {

/// @brief Whether Ctrl-C, Ctrl-\\ and Ctrl-Z still raise signals in the VMM while the terminal is raw.
enum class SignalKeys {
  ToGuest,  ///< ISIG off: the keys are bytes for the guest (a Linux shell wants its Ctrl-C); Ctrl-A x quits.
  ToVmm,    ///< ISIG on: Ctrl-C sends SIGINT to the VMM, which stops and restores the terminal.
};

/// @brief Puts a terminal into raw mode and restores its saved settings when destroyed (RAII, move-only).
///
/// The guest's serial console wants every key as it is typed: no line editing, no local echo (the guest echoes),
/// and, by default, no keys turned into signals (Ctrl-C must reach the guest's shell, so the VMM quits on Ctrl-A x
/// instead, see `EscapeDetector`; `SignalKeys::ToVmm` keeps them). `raw_attributes` says what changes and why.
///
/// A terminal left in raw mode is a broken shell for the user, so the saved settings are also restored when the
/// process dies of a fatal signal or calls std::exit: see `restore_on_fatal_signal`. The settings live in one
/// process-wide slot that signal handlers can read, so only one `Terminal` at a time may hold a terminal in raw mode.
///
/// The file descriptor is not owned (it is normally stdin). The file status flags are not touched: setting
/// O_NONBLOCK on stdin would change the open file the shell shares with us, and the shell would see EAGAIN after we
/// exit. The event loop only reads stdin when epoll says it is readable, so blocking reads never block.
class Terminal {
 public:
  /// @brief A terminal that does nothing, as for a non-tty.
  Terminal() = default;

  /// @brief Puts `fd` into raw mode if it is a terminal; if not (a pipe, a file), returns a `Terminal` that does
  ///        nothing and says so with `is_tty()`. Tests pass a pseudo-terminal's slave side.
  [[nodiscard]] static Result<Terminal> make_raw(int fd, SignalKeys keys = SignalKeys::ToGuest);
  /// @brief `make_raw(STDIN_FILENO, keys)`.
  [[nodiscard]] static Result<Terminal> make_raw_stdin(SignalKeys keys = SignalKeys::ToGuest) {
    return make_raw(STDIN_FILENO, keys);
  }

  /// @brief The settings `make_raw` applies to a terminal whose settings were `original`.
  [[nodiscard]] static termios raw_attributes(const termios& original, SignalKeys keys = SignalKeys::ToGuest);

  /// @brief Installs handlers that restore the terminal before the process dies of SIGHUP, SIGINT, SIGQUIT, SIGTERM
  ///        or SIGABRT, and an std::atexit hook that restores it on std::exit. Idempotent; call once at startup.
  ///
  /// The handlers cover the signals that arrive before `EventLoop::add_signals` blocks them (or in a VMM that never
  /// does); once blocked, a signal goes to the loop, which stops and lets destructors restore the terminal. Each
  /// handler restores the settings, then re-raises the signal with its default action, so the exit status still
  /// says "killed by SIGTERM". A signal that is ignored (SIGHUP under nohup) stays ignored. Nothing can restore
  /// the terminal after SIGKILL: `stty sane` can.
  static Result<void> restore_on_fatal_signal();

  /// @brief Takes over `other`'s saved settings (and the duty to restore them).
  Terminal(Terminal&& other) noexcept;
  /// @brief Restores this terminal's settings, then takes over `other`'s.
  Terminal& operator=(Terminal&& other) noexcept;
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;
  /// @brief Restores the saved settings, if this object still holds them. Errors are ignored; call `restore` to see
  ///        them.
  ~Terminal();

  /// @brief Restores the saved settings now. Idempotent: later calls and the destructor do nothing.
  Result<void> restore();

  /// @brief True if the fd was a terminal (and so was put into raw mode).
  [[nodiscard]] bool is_tty() const noexcept { return tty_; }
  /// @brief True while this object holds the terminal in raw mode (until restored or moved from).
  [[nodiscard]] bool is_raw() const noexcept { return raw_; }
  /// @brief The terminal's file descriptor (-1 for a default-constructed `Terminal`).
  [[nodiscard]] int fd() const noexcept { return fd_; }

 private:
  Terminal(int fd, bool tty, const termios& saved) : fd_(fd), tty_(tty), raw_(tty), saved_(saved) {}

  int fd_ = -1;
  bool tty_ = false;
  bool raw_ = false;
  termios saved_{};
};

}  // namespace vmm::event
