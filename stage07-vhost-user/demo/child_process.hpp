#pragma once
/// @file
/// @brief `ChildProcess`: a program started by the demo or a test (a vhost-user daemon, qemu-storage-daemon, QEMU),
/// with its standard output captured, stopped and reaped when the object goes away.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"

namespace vmm::stage07 {

/// @brief How a `ChildProcess::wait` ended.
struct ExitStatus {
  int code = 0;               ///< exit() status, or 128 + the signal that killed it.
  std::optional<int> signal;  ///< The signal that killed it, if one did.
  /// @brief "exit status 3" or "killed by SIGKILL".
  [[nodiscard]] std::string describe() const;
};

/// @brief One child process. Move-only; the destructor kills (SIGKILL) and reaps a child that is still running, so
/// a failing test never leaves a daemon behind.
///
/// Its stdout is a pipe read by `wait_for_output` and `output` (the whole text so far is kept); stderr is inherited,
/// so a daemon's `--trace-vhost-user` lines appear where the caller's own diagnostics do. stdin is /dev/null.
class ChildProcess {
 public:
  /// @brief Starts `argv[0]` (a path, or a name looked up in PATH) with `argv`.
  [[nodiscard]] static Result<ChildProcess> spawn(const std::vector<std::string>& argv);
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  /// @brief SIGKILL and waitpid if it still runs.
  ~ChildProcess();

  /// @brief Reads its stdout until the text read so far contains `needle` (true), the child closes stdout or exits
  /// (false), or `timeout` passes (ETIMEDOUT).
  [[nodiscard]] Result<bool> wait_for_output(std::string_view needle, std::chrono::milliseconds timeout);
  /// @brief Everything it has written to stdout so far (reads what is pending without blocking).
  [[nodiscard]] const std::string& output();
  /// @brief Waits up to `timeout` for it to exit (ETIMEDOUT otherwise; it keeps running).
  [[nodiscard]] Result<ExitStatus> wait(std::chrono::milliseconds timeout);
  /// @brief SIGTERM, then `wait(grace)`; SIGKILL if that timed out. The status says which ended it.
  [[nodiscard]] Result<ExitStatus> terminate(std::chrono::milliseconds grace);
  /// @brief Sends `signal` (e.g. SIGKILL to simulate a crash).
  [[nodiscard]] Result<void> kill(int signal);
  /// @brief Its process ID (0 once reaped).
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

 private:
  ChildProcess(pid_t pid, Fd stdout_pipe) : pid_(pid), stdout_(std::move(stdout_pipe)) {}
  // Appends what the pipe has now; waits up to `timeout` for something first. False at EOF.
  bool read_some(std::chrono::milliseconds timeout);

  pid_t pid_ = 0;
  Fd stdout_;
  bool eof_ = false;
  std::string output_;
  std::optional<ExitStatus> status_;
};

}  // namespace vmm::stage07
