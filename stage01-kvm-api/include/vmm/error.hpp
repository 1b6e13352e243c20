#pragma once
/// @file
/// @brief `Error` and `Result<T>`: how every fallible call in vmmlab reports failure.

#include <cerrno>
#include <expected>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace vmm {

/// @brief What went wrong: the operation that failed, the errno it returned (0 if none) and context for a human.
///
/// Formatted as "OPERATION: ERRNO-NAME (context)", e.g.
/// "KVM_SET_USER_MEMORY_REGION: EEXIST (slot 1 [0x0, 0x10000) overlaps slot 0 [0x0, 0x10000))".
struct Error {
  std::string operation;  ///< The syscall, ioctl or step that failed, e.g. "KVM_CREATE_VCPU".
  int errno_value = 0;    ///< errno from the failed call; 0 when the failure is not a syscall's.
  std::string context;    ///< Why it matters or what was being attempted; may be empty.

  /// @brief The one-line human-readable message.
  [[nodiscard]] std::string message() const;

  /// @brief The same error with more context appended (the outer caller knows what it was doing).
  [[nodiscard]] Error with_context(std::string_view more) const&;
  /// @brief The same, for a temporary: moves the strings instead of copying them.
  [[nodiscard]] Error with_context(std::string_view more) &&;
};

/// @brief The return type of every fallible operation.
template <typename T>
using Result = std::expected<T, Error>;

/// @brief The symbolic name of an errno value ("EINVAL"), or its number if unknown.
[[nodiscard]] std::string errno_name(int errno_value);

/// @brief An error for a failed syscall: `operation` and the given errno.
[[nodiscard]] inline std::unexpected<Error> sys_error(std::string_view operation, int errno_value,
                                                      std::string context = {}) {
  return std::unexpected(Error{std::string(operation), errno_value, std::move(context)});
}

/// @brief An error that is not a syscall failure (bad input, a missing capability, a guest that misbehaved).
[[nodiscard]] inline std::unexpected<Error> logic_error(std::string_view operation, std::string context) {
  return std::unexpected(Error{std::string(operation), 0, std::move(context)});
}

}  // namespace vmm

/// @brief Lets `fmt::print("{}", error)` print the one-line message.
template <>
struct fmt::formatter<vmm::Error> : fmt::formatter<std::string_view> {
  /// @brief Formats `error.message()`, honouring string format specs such as width and alignment.
  auto format(const vmm::Error& error, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(error.message(), ctx);
  }
};
