#include "vmm/machine/console.hpp"

#include <algorithm>
#include <vector>

namespace vmm::machine {

void PanicWatch::observe(std::span<const std::uint8_t> bytes) {
  static constexpr std::string_view kMarker = "Kernel panic - not syncing";
  std::lock_guard lock(mutex_);
  for (const auto byte : bytes) {
    if (byte == '\n' || byte == '\r') {
      if (panic_.empty() && line_.find(kMarker) != std::string::npos) {
        panic_ = line_.substr(line_.find(kMarker));
      }
      line_.clear();
    } else if (line_.size() < 512) {
      line_.push_back(static_cast<char>(byte));
    }
  }
}

std::string PanicWatch::panic_line() const {
  std::lock_guard lock(mutex_);
  return panic_;
}

}  // namespace vmm::machine
