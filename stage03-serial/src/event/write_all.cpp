#include "vmm/event/write_all.hpp"

#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

namespace vmm::event {

Result<void> write_all(int fd, std::span<const std::uint8_t> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) {
      continue;  // a signal arrived before anything was written: try again
    }
    if (n < 0) {
      return sys_error("write", errno, fmt::format("fd {}, {} bytes left", fd, bytes.size()));
    }
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
  return {};
}

}  // namespace vmm::event
