#include "vmm/devices/report_channel.hpp"

#include <algorithm>
#include <cstring>

namespace vmm::devices {

void ReportChannel::read(std::uint64_t, std::span<std::uint8_t> data) {
  std::ranges::fill(data, std::uint8_t{0xff});
}

void ReportChannel::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
  // Only whole 32-bit writes at the two register offsets mean something; anything else is ignored, as hardware would.
  if (data.size() != sizeof(std::uint32_t) || (offset != 0 && offset != 4)) {
    return;
  }
  std::uint32_t value = 0;
  std::memcpy(&value, data.data(), sizeof(value));
  std::function<void(std::uint32_t)> callback;
  {
    std::lock_guard lock(mutex_);
    if (offset == 0) {
      values_.push_back(value);
      return;
    }
    exit_status_ = value;
    callback = on_exit_;
  }
  if (callback) {
    callback(value);  // outside the lock: it may stop the VM, which may read values()
  }
}

std::vector<std::uint32_t> ReportChannel::values() const {
  std::lock_guard lock(mutex_);
  return values_;
}

std::optional<std::uint32_t> ReportChannel::exit_status() const {
  std::lock_guard lock(mutex_);
  return exit_status_;
}

}  // namespace vmm::devices
