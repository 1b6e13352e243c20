#pragma once
/// @file
/// @brief `Mmap`: an owned memory mapping.

#include <sys/mman.h>

#include <cstddef>
#include <span>
#include <utility>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"

namespace vmm {

/// @brief Owns one mmap(2) mapping and unmaps it exactly once. Move-only.
///
/// Used for the vCPU's `kvm_run` page here, and for guest RAM from stage02 on.
class Mmap {
 public:
  Mmap() = default;
  /// @brief Takes over `other`'s mapping; `other` is left empty.
  Mmap(Mmap&& other) noexcept : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  /// @brief Unmaps the held mapping (if any), then takes over `other`'s; `other` is left empty.
  Mmap& operator=(Mmap&& other) noexcept {
    if (this != &other) {
      reset();
      addr_ = std::exchange(other.addr_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  Mmap(const Mmap&) = delete;
  Mmap& operator=(const Mmap&) = delete;
  ~Mmap() { reset(); }

  /// @brief Anonymous private memory, zero-filled (MAP_PRIVATE | MAP_ANONYMOUS | extra_flags).
  [[nodiscard]] static Result<Mmap> anonymous(std::size_t size, int prot = PROT_READ | PROT_WRITE, int extra_flags = 0);
  /// @brief A mapping of `fd` at `offset` (MAP_SHARED unless `flags` says otherwise).
  [[nodiscard]] static Result<Mmap> map(const Fd& fd, std::size_t size, int prot = PROT_READ | PROT_WRITE,
                                        int flags = MAP_SHARED, off_t offset = 0);

  /// @brief First byte of the mapping (nullptr when empty).
  [[nodiscard]] std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
  /// @brief Length of the mapping in bytes.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// @brief The mapping as bytes.
  [[nodiscard]] std::span<std::byte> bytes() const noexcept { return {data(), size_}; }
  /// @brief True when something is mapped.
  explicit operator bool() const noexcept { return addr_ != nullptr; }
  /// @brief Unmaps now.
  void reset() noexcept;

 private:
  Mmap(void* addr, std::size_t size) : addr_(addr), size_(size) {}
  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace vmm
