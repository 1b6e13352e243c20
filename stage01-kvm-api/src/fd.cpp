#include "vmm/fd.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace vmm {

Result<Fd> Fd::open(const char* path, int flags) {
  int fd = ::open(path, flags | O_CLOEXEC);
  if (fd < 0) {
    return sys_error("open", errno, path);
  }
  return Fd(fd);
}

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0) {
    // Linux always releases the descriptor, even when close() reports EINTR, so never retry.
    ::close(fd_);
  }
  fd_ = fd;
}

Result<Fd> Fd::duplicate() const {
  int fd = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    return sys_error("fcntl(F_DUPFD_CLOEXEC)", errno);
  }
  return Fd(fd);
}

namespace detail {
Result<int> checked_ioctl(int fd, unsigned long request, std::string_view name, std::uintptr_t arg) {
  int rc = ::ioctl(fd, request, arg);
  if (rc < 0) {
    return sys_error(name, errno);
  }
  return rc;
}
}  // namespace detail

}  // namespace vmm
