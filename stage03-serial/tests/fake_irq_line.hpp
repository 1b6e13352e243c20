#pragma once
/// @file
/// @brief `FakeIrqLine`: an IrqLine for unit tests that records every call and can be told to fail.

#include <cerrno>
#include <mutex>
#include <string>
#include <vector>

#include "vmm/devices/irq_line.hpp"
#include "vmm/error.hpp"

namespace vmm::testing {

/// @brief Records "raise" and "lower" calls in order; `level()` is the line's level after the last successful call.
///
/// With `fail_next(n)`, the next n calls fail with EIO and do not change the level. Thread-safe: devices call it
/// from several threads.
class FakeIrqLine final : public devices::IrqLine {
 public:
  /// @brief Records "raise"; asserts the line unless told to fail.
  Result<void> raise() override { return record("raise", true); }
  /// @brief Records "lower"; deasserts the line unless told to fail.
  Result<void> lower() override { return record("lower", false); }

  /// @brief Every call so far, successful or not ("raise", "lower").
  [[nodiscard]] std::vector<std::string> calls() const {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  /// @brief Forgets the calls recorded so far (the level stays).
  void clear_calls() {
    std::lock_guard lock(mutex_);
    calls_.clear();
  }
  /// @brief True while the line is asserted.
  [[nodiscard]] bool level() const {
    std::lock_guard lock(mutex_);
    return level_;
  }
  /// @brief Makes the next `count` calls fail.
  void fail_next(int count) {
    std::lock_guard lock(mutex_);
    failures_left_ = count;
  }

 private:
  Result<void> record(const char* what, bool level) {
    std::lock_guard lock(mutex_);
    calls_.emplace_back(what);
    if (failures_left_ > 0) {
      --failures_left_;
      return sys_error("KVM_IRQ_LINE", EIO, std::string("fake ") + what);
    }
    level_ = level;
    return {};
  }

  mutable std::mutex mutex_;
  std::vector<std::string> calls_;
  bool level_ = false;
  int failures_left_ = 0;
};

}  // namespace vmm::testing
