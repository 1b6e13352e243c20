#pragma once
/// @file
/// @brief `GuestOutcome`: how a demo's main thread waits for its guest (stage04 on): the exit status the guest wrote,
///        or the vCPU loop ending first, or a timeout, and the message and process status for each.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "vmm/error.hpp"
#include "vmm/machine/vcpu_loop.hpp"

namespace vmm::stage03 {

/// @brief Collects what the vCPU thread reports and lets the main thread wait for it.
///
/// Pass `exited` as the machine's exit-status callback and `vcpu_stopped` as the vCPU thread's `OnExit`, start the
/// vCPU, `wait`, stop the machine, then `finish` prints the outcome and returns the demo's exit status.
class GuestOutcome {
 public:
  /// @brief The guest wrote its exit status (called on the vCPU thread).
  void exited(std::uint32_t status);
  /// @brief The vCPU loop ended (called on the vCPU thread).
  void vcpu_stopped(const Result<machine::VcpuOutcome>& outcome);
  /// @brief Something outside the guest ended the run on purpose (gdb's `kill`): `finish` reports `reason`, status 0.
  void ended(std::string reason);
  /// @brief Waits until any of these happened, or `timeout_seconds` passed (0: wait forever); false on timeout.
  [[nodiscard]] bool wait(double timeout_seconds);
  /// @brief The guest's exit status, if it wrote one.
  [[nodiscard]] std::optional<std::uint32_t> exit_status() const;
  /// @brief Prints to stderr why the run ended (prefixed with `program`) and returns the process status: 0 when the
  /// guest exited with 0, 1 when it failed or the vCPU stopped first, 124 after a timeout (`finished` false).
  [[nodiscard]] int finish(std::string_view program, bool finished, double timeout_seconds) const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<std::uint32_t> exit_status_;
  std::optional<std::string> ended_;
  std::optional<Result<machine::VcpuOutcome>> vcpu_;
};

}  // namespace vmm::stage03
