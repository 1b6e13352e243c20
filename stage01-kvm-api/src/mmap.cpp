#include "vmm/mmap.hpp"

#include <fmt/format.h>

namespace vmm {

Result<Mmap> Mmap::anonymous(std::size_t size, int prot, int extra_flags) {
  void* addr = ::mmap(nullptr, size, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
  if (addr == MAP_FAILED) {
    return sys_error("mmap", errno, fmt::format("anonymous, {:#x} bytes", size));
  }
  return Mmap(addr, size);
}

Result<Mmap> Mmap::map(const Fd& fd, std::size_t size, int prot, int flags, off_t offset) {
  void* addr = ::mmap(nullptr, size, prot, flags, fd.get(), offset);
  if (addr == MAP_FAILED) {
    return sys_error("mmap", errno, fmt::format("fd {}, {:#x} bytes at offset {:#x}", fd.get(), size, offset));
  }
  return Mmap(addr, size);
}

void Mmap::reset() noexcept {
  if (addr_ != nullptr) {
    ::munmap(addr_, size_);
    addr_ = nullptr;
    size_ = 0;
  }
}

}  // namespace vmm
