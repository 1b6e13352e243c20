#pragma once
/// @file
/// @brief Kernel structs that end in a flexible array, used from C++.
///
/// Linux 6.1's UAPI headers declare trailing arrays with `__DECLARE_FLEX_ARRAY(type, name)`, which expands to a
/// struct holding an empty struct and the array. In C an empty struct has size 0; in C++ it has size 1. So in C++
/// `sizeof(kvm_cpuid2)` is 12, not 8, and `entries` starts at offset 12, not 8. Worse, ioctl numbers encode the
/// argument size: KVM_GET_SUPPORTED_CPUID computed in C++ carries 12, the kernel does not recognise it and answers
/// EINVAL. The kernel's layout is the C layout: a fixed header, then the array right after it.
///
/// `FlexArrayBuffer` lays out such a struct the kernel's way, and `with_ioctl_size` fixes the ioctl number.

#include <linux/ioctl.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>

namespace vmm {

/// @brief `request` with its encoded argument size replaced by `size` (see the file comment for why).
constexpr unsigned long with_ioctl_size(unsigned long request, std::size_t size) {
  const unsigned long size_mask = static_cast<unsigned long>(_IOC_SIZEMASK) << _IOC_SIZESHIFT;
  return (request & ~size_mask) | (static_cast<unsigned long>(size) << _IOC_SIZESHIFT);
}

/// @brief A zeroed buffer holding a `Header` of `header_size` bytes followed by `count` `Entry`s, as the kernel
///        lays out structs ending in a flexible array.
template <typename Header, typename Entry>
class FlexArrayBuffer {
 public:
  /// @brief `header_size` is the C size of the fixed part (8 for kvm_cpuid2: nent and padding).
  FlexArrayBuffer(std::size_t header_size, std::size_t count)
      : header_size_(header_size),
        count_(count),
        storage_(std::make_unique<std::uint64_t[]>((header_size + count * sizeof(Entry) + 7) / 8)) {}

  /// @brief The fixed part. Only its first `header_size` bytes are meaningful.
  [[nodiscard]] Header* header() noexcept { return reinterpret_cast<Header*>(storage_.get()); }
  /// @brief Entry `i` (precondition: i < capacity()).
  [[nodiscard]] Entry* entries() noexcept {
    return reinterpret_cast<Entry*>(reinterpret_cast<std::byte*>(storage_.get()) + header_size_);
  }
  /// @brief How many entries fit.
  [[nodiscard]] std::size_t capacity() const noexcept { return count_; }
  /// @brief The first `n` entries.
  [[nodiscard]] std::span<Entry> first(std::size_t n) noexcept { return {entries(), n}; }

 private:
  std::size_t header_size_;
  std::size_t count_;
  std::unique_ptr<std::uint64_t[]> storage_;  // uint64_t keeps the entries 8-byte aligned
};

}  // namespace vmm
