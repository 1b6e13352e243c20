#pragma once
/// @file
/// @brief `Fd`: an owned file descriptor, and the checked `ioctl` every KVM wrapper uses.

#include <sys/ioctl.h>

#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>

#include "vmm/error.hpp"

namespace vmm {

/// @brief Owns one file descriptor and closes it exactly once. Move-only, like seastar's `file_desc`.
///
/// An empty `Fd` holds -1. Nothing in vmmlab calls close(2) directly: ownership is always an `Fd`.
class Fd {
 public:
  Fd() = default;
  /// @brief Takes ownership of `fd` (which may be -1).
  explicit Fd(int fd) noexcept : fd_(fd) {}
  /// @brief Takes over `other`'s descriptor; `other` is left empty.
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  /// @brief Closes the held descriptor (if any), then takes over `other`'s; `other` is left empty.
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset(std::exchange(other.fd_, -1));
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  /// @brief open(2) with O_CLOEXEC added: descriptors must not leak into child processes (rig, peers, gdb).
  [[nodiscard]] static Result<Fd> open(const char* path, int flags);

  /// @brief The descriptor number, still owned by this object.
  [[nodiscard]] int get() const noexcept { return fd_; }
  /// @brief True when a descriptor is held.
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  /// @brief Same as valid().
  explicit operator bool() const noexcept { return valid(); }
  /// @brief Gives up ownership without closing.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }
  /// @brief Closes the held descriptor (if any) and holds `fd` instead.
  void reset(int fd = -1) noexcept;
  /// @brief dup(2) with O_CLOEXEC: a second owner of the same open file.
  [[nodiscard]] Result<Fd> duplicate() const;

 private:
  int fd_ = -1;
};

namespace detail {
Result<int> checked_ioctl(int fd, unsigned long request, std::string_view name, std::uintptr_t arg);
}  // namespace detail

/// @brief ioctl(2) that names the request in its error: `ioctl(fd, KVM_RUN, "KVM_RUN")`.
///
/// Returns the ioctl's non-negative result. Use the `VMM_IOCTL` macro to avoid spelling the name twice.
template <typename Arg = std::uintptr_t>
Result<int> ioctl(const Fd& fd, unsigned long request, std::string_view name, Arg arg = 0) {
  if constexpr (std::is_pointer_v<Arg>) {
    return detail::checked_ioctl(fd.get(), request, name, reinterpret_cast<std::uintptr_t>(arg));
  } else {
    return detail::checked_ioctl(fd.get(), request, name, static_cast<std::uintptr_t>(arg));
  }
}

}  // namespace vmm

/// @brief `VMM_IOCTL(fd, KVM_RUN)` or `VMM_IOCTL(fd, KVM_GET_REGS, &regs)`: the request's name goes into the error.
#define VMM_IOCTL(fd, request, ...) ::vmm::ioctl((fd), (request), #request __VA_OPT__(, ) __VA_ARGS__)
