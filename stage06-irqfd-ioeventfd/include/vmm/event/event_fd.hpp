#pragma once
/// @file
/// @brief `EventFd`: an eventfd(2), the kernel object that carries every notification of stage06 (ioeventfd kicks,
/// irqfd interrupts, a worker's stop request).

#include <cstdint>
#include <optional>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"

namespace vmm::event {

/// @brief A 64-bit counter in the kernel, behind a file descriptor: `write(n)` adds n, `read` takes the value, and
/// the descriptor is readable (for epoll) while the counter is non-zero.
///
/// KVM signals one when a guest writes an ioeventfd address (a write of 1 from the kernel), and reads one it was given
/// as an irqfd to inject an interrupt; threads use them to wake each other. Always created close-on-exec and
/// non-blocking: a read of a zero counter returns nothing instead of blocking, a write that would overflow fails with
/// EAGAIN. Move-only (owns its `Fd`).
class EventFd {
 public:
  /// @brief How `read` consumes the counter.
  enum class Mode : std::uint8_t {
    Counter,    ///< A read returns the whole value and resets it to 0 (N kicks coalesce into one read of N).
    Semaphore,  ///< EFD_SEMAPHORE: a read returns 1 and decrements (one read per write of 1).
  };

  /// @brief eventfd(initial, EFD_CLOEXEC | EFD_NONBLOCK [| EFD_SEMAPHORE]). Errors name eventfd and the errno.
  [[nodiscard]] static Result<EventFd> create(Mode mode = Mode::Counter, std::uint32_t initial = 0);

  /// @brief Adds `value` (1..2^64-2) to the counter; EAGAIN if it would overflow.
  [[nodiscard]] Result<void> write(std::uint64_t value = 1) const;
  /// @brief Takes the counter (Counter mode) or 1 (Semaphore mode); nothing if it is 0.
  [[nodiscard]] Result<std::optional<std::uint64_t>> read() const;
  /// @brief Another descriptor for the same counter (dup), e.g. to hand to KVM while keeping one to read.
  [[nodiscard]] Result<EventFd> try_clone() const;

  /// @brief The descriptor (for epoll, KVM_IOEVENTFD, KVM_IRQFD).
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  /// @brief The mode it was created with.
  [[nodiscard]] Mode mode() const noexcept { return mode_; }

 private:
  EventFd(Fd fd, Mode mode) : fd_(std::move(fd)), mode_(mode) {}

  Fd fd_;
  Mode mode_;
};

}  // namespace vmm::event
