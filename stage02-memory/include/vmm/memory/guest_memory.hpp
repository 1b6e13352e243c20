#pragma once
/// @file
/// @brief `GuestMemory`: the guest's physical memory map as the VMM sees it, and every way of touching it.

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/memory/guest_address.hpp"
#include "vmm/memory/region.hpp"

namespace vmm::memory {

/// @brief The integer types `GuestMemory::load` and `GuestMemory::store` accept: the widths virtio rings use.
template <typename T>
concept AtomicWord = std::same_as<T, std::uint16_t> || std::same_as<T, std::uint32_t> || std::same_as<T, std::uint64_t>;

/// @brief A view of guest bytes that a running guest (or another vCPU) may change at any moment.
///
/// Devices must never parse guest memory in place: a value checked and then read again may have changed in between
/// (a TOCTOU bug). So this view offers no pointer, only copies: each copy reads every byte once, and the caller
/// validates its private copy. The copies use memcpy; the guest's concurrent writes are outside the C++ memory model
/// anyway, exactly as with memory shared with another process.
class VolatileSlice {
 public:
  /// @brief An empty slice.
  VolatileSlice() = default;
  /// @brief A slice of `size` bytes at host address `data` (inside a `GuestMemoryRegion`).
  VolatileSlice(std::byte* data, std::size_t size) noexcept : data_(data), size_(size) {}

  /// @brief Length in bytes.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// @brief Copies the first `out.size()` bytes of the slice out; fails if the slice is shorter.
  [[nodiscard]] Result<void> copy_to(std::span<std::byte> out) const;
  /// @brief Copies `in` over the first `in.size()` bytes of the slice; fails if the slice is shorter.
  [[nodiscard]] Result<void> copy_from(std::span<const std::byte> in) const;
  /// @brief The `length` bytes at `offset` within this slice.
  [[nodiscard]] Result<VolatileSlice> subslice(std::size_t offset, std::size_t length) const;

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

/// @brief Guest-physical memory: a sorted set of non-overlapping `GuestMemoryRegion`s, with checked accessors.
///
/// Modelled on rust-vmm's vm-memory `GuestMemory` trait. Every accessor takes a guest address and a length, checks
/// the whole range (overflow past 2^64 included) before touching a byte, and fails with an error naming the
/// operation, the address and the length. Accessors are `const`: the collection of regions does not change, while the
/// bytes inside belong to the guest and change under us whatever C++ says, so `const` protects nothing there.
class GuestMemory {
 public:
  /// @brief No memory at all.
  GuestMemory() = default;
  /// @brief A memory map from `regions`, in any order; fails if two overlap.
  [[nodiscard]] static Result<GuestMemory> from_regions(std::vector<GuestMemoryRegion> regions);

  /// @brief Adds a region, keeping the regions sorted; fails (naming both ranges) if it overlaps one already there.
  [[nodiscard]] Result<void> add_region(GuestMemoryRegion region);
  /// @brief The regions, sorted by start address.
  [[nodiscard]] std::span<const GuestMemoryRegion> regions() const noexcept { return regions_; }
  /// @brief Total bytes of guest memory.
  [[nodiscard]] std::uint64_t total_size() const noexcept;

  /// @brief The region containing `address`, or nullptr when no region does (a hole, or past the end of memory).
  [[nodiscard]] const GuestMemoryRegion* find_region(GuestAddress address) const noexcept;

  /// @brief Succeeds when every byte of [address, address + length) is guest memory (the range may span adjacent
  ///        regions); otherwise the error names the range. Devices check a guest-supplied buffer with it before using
  ///        it (stage05's descriptor chains). An empty range always succeeds.
  [[nodiscard]] Result<void> check_range(GuestAddress address, std::uint64_t length) const;

  /// @brief The host bytes behind [address, address + length): fails unless the whole range lies in ONE region, since
  ///        two regions are two unrelated host mappings. An empty range yields an empty span.
  [[nodiscard]] Result<std::span<std::byte>> to_host(GuestAddress address, std::size_t length) const;
  /// @brief `to_host`, as a `VolatileSlice` for device DMA.
  [[nodiscard]] Result<VolatileSlice> volatile_slice(GuestAddress address, std::size_t length) const;

  /// @brief Copies guest bytes [address, address + out.size()) into `out`. The range may span adjacent regions; it
  ///        is checked entirely first, so on error nothing has been copied.
  [[nodiscard]] Result<void> read(GuestAddress address, std::span<std::byte> out) const;
  /// @brief Copies `in` to guest bytes [address, address + in.size()). May span adjacent regions; checked entirely
  ///        first, so on error guest memory is unchanged.
  [[nodiscard]] Result<void> write(GuestAddress address, std::span<const std::byte> in) const;

  /// @brief Reads a `T` (a copy, byte for byte, of any alignment) from guest memory.
  template <typename T>
  requires std::is_trivially_copyable_v<T>
  [[nodiscard]] Result<T> read_obj(GuestAddress address) const {
    T value{};
    if (auto ok = read(address, std::as_writable_bytes(std::span(&value, 1))); !ok) {
      return std::unexpected(std::move(ok).error());
    }
    return value;
  }
  /// @brief Writes `value`'s bytes to guest memory (any alignment).
  template <typename T>
  requires std::is_trivially_copyable_v<T>
  [[nodiscard]] Result<void> write_obj(GuestAddress address, const T& value) const {
    return write(address, std::as_bytes(std::span(&value, 1)));
  }

  /// @brief An atomic load of a naturally aligned 16/32/64-bit word (virtio ring indices, for instance). Misaligned
  ///        addresses are errors: x86 does not guarantee atomicity for them, and std::atomic_ref forbids them.
  template <AtomicWord T>
  [[nodiscard]] Result<T> load(GuestAddress address, std::memory_order order = std::memory_order_seq_cst) const {
    auto host = atomic_target(address, sizeof(T), "GuestMemory::load", order, false);
    if (!host) {
      return std::unexpected(std::move(host).error());
    }
    return std::atomic_ref<T>(*reinterpret_cast<T*>(*host)).load(order);
  }
  /// @brief An atomic store of a naturally aligned 16/32/64-bit word; misaligned addresses are errors.
  template <AtomicWord T>
  [[nodiscard]] Result<void> store(GuestAddress address, T value,
                                   std::memory_order order = std::memory_order_seq_cst) const {
    auto host = atomic_target(address, sizeof(T), "GuestMemory::store", order, true);
    if (!host) {
      return std::unexpected(std::move(host).error());
    }
    std::atomic_ref<T>(*reinterpret_cast<T*>(*host)).store(value, order);
    return {};
  }

 private:
  // Checks alignment, the memory order and that the word lies in one region; returns its host address.
  [[nodiscard]] Result<std::byte*> atomic_target(GuestAddress address, std::size_t width, std::string_view operation,
                                                 std::memory_order order, bool is_store) const;
  // The whole of [address, address + length) must be backed (possibly by several adjacent regions).
  [[nodiscard]] Result<void> check_backed(GuestAddress address, std::size_t length, std::string_view operation) const;

  std::vector<GuestMemoryRegion> regions_;  // sorted by start, never overlapping
};

}  // namespace vmm::memory
