#include "vmm/event/console_input.hpp"

#include <algorithm>
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

}  // namespace vmm::event
