#pragma once
/// @file
/// @brief `write_all`: write(2) until every byte is out.

#include <cstdint>
#include <span>

#include "vmm/error.hpp"

namespace vmm::event {

/// @brief Writes all of `bytes` to `fd`, retrying short writes and EINTR. Used for a UART's output on stdout.
[[nodiscard]] Result<void> write_all(int fd, std::span<const std::uint8_t> bytes);

}  // namespace vmm::event
