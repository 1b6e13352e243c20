#pragma once
/// @file
/// @brief `Vm`: a virtual machine's file descriptor: memory slots and vCPU creation.

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/kvm/vcpu.hpp"

namespace vmm::kvm {

/// @brief One KVM memory slot: guest-physical range [guest_address, guest_address + size) backed by host memory.
struct MemorySlot {
  std::uint32_t slot = 0;           ///< Slot number: KVM identifies a slot by it.
  std::uint64_t guest_address = 0;  ///< Guest-physical address of the first byte; page-aligned.
  std::uint64_t size = 0;           ///< Length in bytes; a multiple of the page size.
  void* host_address = nullptr;     ///< Where the backing memory is mapped in this process; page-aligned.
  std::uint32_t flags = 0;          ///< KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY.

  /// @brief One past the last guest-physical byte.
  [[nodiscard]] std::uint64_t guest_end() const noexcept { return guest_address + size; }
};

/// @brief A VM: owns the VM descriptor and remembers its memory slots so errors can say which slot clashed.
class Vm {
 public:
  /// @brief KVM_SET_USER_MEMORY_REGION for a new or changed slot.
  ///
  /// KVM does the validation; on failure the error adds what KVM does not say, e.g.
  /// "KVM_SET_USER_MEMORY_REGION: EEXIST (slot 1 [0x0, 0x10000) overlaps slot 0 [0x0, 0x10000))".
  [[nodiscard]] Result<void> set_memory_slot(const MemorySlot& slot);
  /// @brief Deletes a slot (KVM_SET_USER_MEMORY_REGION with size 0).
  [[nodiscard]] Result<void> remove_memory_slot(std::uint32_t slot);
  /// @brief The slots registered so far, sorted by slot number.
  [[nodiscard]] std::span<const MemorySlot> memory_slots() const noexcept { return slots_; }

  /// @brief KVM_CREATE_VCPU and the mmap of its `kvm_run` page.
  [[nodiscard]] Result<Vcpu> create_vcpu(std::uint32_t id);
  /// @brief KVM_CHECK_EXTENSION on the VM descriptor (some answers depend on the VM).
  [[nodiscard]] Result<int> check_extension(int capability) const;
  /// @brief KVM_SET_TSS_ADDR: three pages Intel VMX needs for real mode; harmless elsewhere.
  [[nodiscard]] Result<void> set_tss_address(std::uint64_t guest_address);

  /// @brief The VM descriptor, for ioctls this class does not wrap.
  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }

 private:
  friend class Kvm;
  Vm(Fd fd, std::size_t vcpu_mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}

  Fd fd_;
  std::size_t vcpu_mmap_size_ = 0;
  std::vector<MemorySlot> slots_;
};

}  // namespace vmm::kvm
