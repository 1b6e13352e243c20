#pragma once
/// @file
/// @brief Mapping a passed-through BAR into the guest: which parts of it may be mapped (`guest_mappable_areas`), and
/// `DeviceMemorySlots`, the KVM memory slots that put them at the guest's BAR address.

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/kvm/vm.hpp"
#include "vmm/vfio/device.hpp"

namespace vmm::vfio {

/// @brief A byte range [offset, offset + size) of a BAR.
struct BarArea {
  std::uint64_t offset = 0;  ///< From the start of the BAR.
  std::uint64_t size = 0;    ///< Length in bytes.
  /// @brief One past the last byte.
  [[nodiscard]] std::uint64_t end() const noexcept { return offset + size; }
  /// @brief Member-wise equality.
  friend bool operator==(const BarArea&, const BarArea&) = default;
};

/// @brief The parts of BAR `region` that may be mapped straight into the guest, page-aligned, by offset.
///
/// Start from what VFIO lets this process mmap: nothing without VFIO_REGION_INFO_FLAG_MMAP, else the sparse areas if
/// the region lists them, else the whole region. Then take out every page that overlaps a `trapped` area (the MSI-X
/// table and PBA: the guest's accesses there must reach the VMM, see VfioPciDevice), and every partial page (a KVM
/// memory slot covers whole pages). What is left becomes memory slots; the rest of the BAR traps and is served with
/// region reads and writes. Adjacent results are merged; empty ones dropped. `page_size` is a power of two.
[[nodiscard]] std::vector<BarArea> guest_mappable_areas(const RegionInfo& region, std::span<const BarArea> trapped,
                                                        std::uint64_t page_size);

/// @brief Where device memory goes into the guest's physical address space: KVM memory slots in a VM, a recorder in
/// tests.
class DeviceMemorySlots {
 public:
  DeviceMemorySlots() = default;
  DeviceMemorySlots(const DeviceMemorySlots&) = delete;
  DeviceMemorySlots& operator=(const DeviceMemorySlots&) = delete;
  DeviceMemorySlots(DeviceMemorySlots&&) = delete;
  DeviceMemorySlots& operator=(DeviceMemorySlots&&) = delete;
  virtual ~DeviceMemorySlots() = default;

  /// @brief Maps host memory [host, host + size) at guest-physical `guest_address` (all page-aligned); returns a
  /// handle for `unmap`.
  [[nodiscard]] virtual Result<std::uint32_t> map(std::uint64_t guest_address, std::uint64_t size, void* host) = 0;
  /// @brief Removes the mapping `handle`.
  [[nodiscard]] virtual Result<void> unmap(std::uint32_t handle) = 0;
};

/// @brief `DeviceMemorySlots` as KVM memory slots of `vm`, numbered from `first_slot` up (lowest free first).
///
/// A slot backed by an mmap of a VFIO BAR is device memory (a VM_PFNMAP mapping): KVM maps the guest's pages to the
/// device's physical addresses, so the guest's loads and stores reach the device without any exit. Thread-safe (BARs
/// move on whichever vCPU reprograms them).
class KvmDeviceMemorySlots final : public DeviceMemorySlots {
 public:
  /// @brief Slots of `vm` (which must outlive this object) from `first_slot`, up to `first_slot + max_slots`.
  KvmDeviceMemorySlots(kvm::Vm& vm, std::uint32_t first_slot, std::uint32_t max_slots = 64)
      : vm_(vm), first_slot_(first_slot), max_slots_(max_slots) {}
  /// @brief Removes the slots still mapped.
  ~KvmDeviceMemorySlots() override;

  /// @brief KVM_SET_USER_MEMORY_REGION in the lowest free slot; the handle is the slot number.
  [[nodiscard]] Result<std::uint32_t> map(std::uint64_t guest_address, std::uint64_t size, void* host) override;
  /// @brief Deletes slot `handle`.
  [[nodiscard]] Result<void> unmap(std::uint32_t handle) override;
  /// @brief The slots mapped now.
  [[nodiscard]] std::vector<kvm::MemorySlot> slots() const;

 private:
  kvm::Vm& vm_;
  std::uint32_t first_slot_;
  std::uint32_t max_slots_;
  mutable std::mutex mutex_;
  std::map<std::uint32_t, kvm::MemorySlot> used_;
};

}  // namespace vmm::vfio
