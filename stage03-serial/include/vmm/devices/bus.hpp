#pragma once
/// @file
/// @brief `Bus`, `IoBus`, `MmioBus`: address ranges mapped to devices, the way an exit finds its device.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "vmm/devices/bus_device.hpp"
#include "vmm/error.hpp"

namespace vmm::devices {

/// @brief One device's place on a bus: [base, base + size).
struct BusRange {
  std::uint64_t base = 0;  ///< First address.
  std::uint64_t size = 0;  ///< Length in bytes (non-zero).
  /// @brief One past the last address (`insert` checks it does not wrap).
  [[nodiscard]] std::uint64_t end() const noexcept { return base + size; }
  /// @brief True when [address, address + length) lies inside this range.
  [[nodiscard]] bool contains(std::uint64_t address, std::uint64_t length) const noexcept {
    return address >= base && address - base < size && length <= size - (address - base);
  }
};

/// @brief A bus entry: the range, the device, and the name used in errors, traces and `vmm bus` in gdb.
struct BusEntry {
  BusRange range;                     ///< Where the device sits.
  std::shared_ptr<BusDevice> device;  ///< Shared: the VMM keeps its own reference to drive it.
  std::string name;                   ///< "serial0", "pci-host", ...
};

/// @brief Counters of accesses that no device claimed.
struct UnclaimedCounts {
  std::uint64_t reads = 0;   ///< Reads answered with all-ones.
  std::uint64_t writes = 0;  ///< Writes dropped.
};

/// @brief Non-overlapping address ranges mapped to devices.
///
/// Lookups take a shared lock, so vCPU threads dispatch in parallel; inserting and removing take it exclusively
/// (stage04 moves devices when the guest reprograms a BAR). An access that falls in no range, or straddles the end of
/// one, is *unclaimed*: reads return all-ones, as a PC's floating bus does, writes are dropped, and both are counted.
class Bus {
 public:
  /// @brief `name` is "io" or "mmio"; it appears in errors.
  explicit Bus(std::string name) : name_(std::move(name)) {}

  /// @brief Places `device` at [base, base + size). Refused, naming both, when it overlaps another device.
  [[nodiscard]] Result<void> insert(std::shared_ptr<BusDevice> device, std::uint64_t base, std::uint64_t size,
                                    std::string name);
  /// @brief Removes the device inserted at exactly `base`; returns it.
  [[nodiscard]] Result<std::shared_ptr<BusDevice>> remove(std::uint64_t base);

  /// @brief Dispatches a read; true if a device claimed it (otherwise `data` is filled with 0xff).
  bool read(std::uint64_t address, std::span<std::uint8_t> data) const;
  /// @brief Dispatches a write; true if a device claimed it.
  bool write(std::uint64_t address, std::span<const std::uint8_t> data) const;

  /// @brief The entry whose range contains `address`, if any (a copy: safe after the lock is released).
  [[nodiscard]] std::optional<BusEntry> find(std::uint64_t address) const;
  /// @brief Every entry, by address.
  [[nodiscard]] std::vector<BusEntry> entries() const;
  /// @brief Accesses no device claimed so far.
  [[nodiscard]] UnclaimedCounts unclaimed() const noexcept {
    return {unclaimed_reads_.load(std::memory_order_relaxed), unclaimed_writes_.load(std::memory_order_relaxed)};
  }
  /// @brief "io" or "mmio".
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  const BusEntry* lookup(std::uint64_t address, std::uint64_t length) const;

  std::string name_;
  mutable std::shared_mutex mutex_;
  std::map<std::uint64_t, BusEntry> entries_;  // keyed by base
  mutable std::atomic<std::uint64_t> unclaimed_reads_{0};
  mutable std::atomic<std::uint64_t> unclaimed_writes_{0};
};

/// @brief The port-I/O bus: 64 KiB of ports (IN/OUT).
class IoBus : public Bus {
 public:
  IoBus() : Bus("io") {}
};

/// @brief The MMIO bus: guest-physical addresses no memory slot backs.
class MmioBus : public Bus {
 public:
  MmioBus() : Bus("mmio") {}
};

}  // namespace vmm::devices
