#include "vmm/event/escape.hpp"

namespace vmm::event {

EscapeResult EscapeDetector::feed(std::span<const std::uint8_t> input) {
  EscapeResult result;
  result.forward.reserve(input.size() + 1);
  for (std::uint8_t byte : input) {
    if (!after_escape_) {
      if (byte == kEscape) {
        after_escape_ = true;  // hold it back: the next byte says whether it is a command
      } else {
        result.forward.push_back(byte);
      }
      continue;
    }
    after_escape_ = false;
    if (byte == kQuit) {
      result.quit = true;
      return result;
    }
    if (byte == kEscape) {
      result.forward.push_back(kEscape);  // Ctrl-A Ctrl-A: the guest gets one Ctrl-A
    } else {
      result.forward.push_back(kEscape);  // not a command: the held-back Ctrl-A and this byte both go through
      result.forward.push_back(byte);
    }
  }
  return result;
}

}  // namespace vmm::event
