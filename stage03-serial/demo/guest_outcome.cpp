#include "guest_outcome.hpp"

#include <fmt/format.h>

namespace vmm::stage03 {

void GuestOutcome::exited(std::uint32_t status) {
  std::lock_guard lock(mutex_);
  exit_status_ = status;
  changed_.notify_all();
}

void GuestOutcome::vcpu_stopped(const Result<machine::VcpuOutcome>& outcome) {
  std::lock_guard lock(mutex_);
  vcpu_ = outcome;
  changed_.notify_all();
}

void GuestOutcome::ended(std::string reason) {
  std::lock_guard lock(mutex_);
  ended_ = std::move(reason);
  changed_.notify_all();
}

bool GuestOutcome::wait(double timeout_seconds) {
  std::unique_lock lock(mutex_);
  auto done = [this] { return exit_status_.has_value() || vcpu_.has_value() || ended_.has_value(); };
  if (timeout_seconds > 0) {
    return changed_.wait_for(lock, std::chrono::duration<double>(timeout_seconds), done);
  }
  changed_.wait(lock, done);
  return true;
}

std::optional<std::uint32_t> GuestOutcome::exit_status() const {
  std::lock_guard lock(mutex_);
  return exit_status_;
}

int GuestOutcome::finish(std::string_view program, bool finished, double timeout_seconds) const {
  std::lock_guard lock(mutex_);
  if (!finished) {
    fmt::print(stderr, "{}: stopped: timed out after {} s\n", program, timeout_seconds);
    return 124;
  }
  if (ended_ && !exit_status_) {
    fmt::print(stderr, "{}: stopped: {}\n", program, *ended_);
    return 0;
  }
  if (!exit_status_) {
    if (vcpu_ && !*vcpu_) {
      fmt::print(stderr, "{}: {}\n", program, vcpu_->error());
    } else if (vcpu_) {
      fmt::print(stderr, "{}: vCPU stopped: {}\n{}", program, machine::to_string((*vcpu_)->reason), (*vcpu_)->detail);
    }
    return 1;
  }
  fmt::print(stderr, "{}: stopped: the guest exited with status {}\n", program, *exit_status_);
  return *exit_status_ == 0 ? 0 : 1;
}

}  // namespace vmm::stage03
