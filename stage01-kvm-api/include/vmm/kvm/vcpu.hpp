#pragma once
/// @file
/// @brief `Vcpu`: a virtual CPU's file descriptor, its `kvm_run` page and its registers.

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/kvm/exit.hpp"
#include "vmm/mmap.hpp"

namespace vmm::kvm {

/// @brief One vCPU. KVM_RUN runs it until the guest does something KVM hands back to us; `run()` says what.
///
/// The `kvm_run` page is shared with the kernel: exit details appear there after KVM_RUN returns, and the answers we
/// write there (an IN's data, an MMIO read's data) are consumed by the next KVM_RUN.
class Vcpu {
 public:
  /// @brief KVM_RUN, then `decode_exit`. A signal (EINTR), or EAGAIN from a CPU that just got its startup IPI, is an
  ///        `InterruptedExit`, not an error.
  [[nodiscard]] Result<VcpuExit> run();

  /// @brief KVM_GET_REGS: general-purpose registers, RIP and RFLAGS.
  [[nodiscard]] Result<kvm_regs> get_regs() const;
  /// @brief KVM_SET_REGS.
  [[nodiscard]] Result<void> set_regs(const kvm_regs& regs);
  /// @brief KVM_GET_SREGS: segment, control and descriptor-table registers, EFER, APIC base.
  [[nodiscard]] Result<kvm_sregs> get_sregs() const;
  /// @brief KVM_SET_SREGS.
  [[nodiscard]] Result<void> set_sregs(const kvm_sregs& sregs);

  /// @brief The shared page KVM_RUN fills in.
  [[nodiscard]] kvm_run& run_page() noexcept { return *reinterpret_cast<kvm_run*>(run_.data()); }
  /// @brief Size of the mapping behind `run_page()` (KVM_GET_VCPU_MMAP_SIZE).
  [[nodiscard]] std::size_t run_page_size() const noexcept { return run_.size(); }
  /// @brief The vCPU id given to KVM_CREATE_VCPU (also the initial APIC id).
  [[nodiscard]] std::uint32_t id() const noexcept { return id_; }
  /// @brief The vCPU descriptor, for ioctls this class does not wrap.
  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }

 private:
  friend class Vm;
  Vcpu(Fd fd, Mmap run, std::uint32_t id) : fd_(std::move(fd)), run_(std::move(run)), id_(id) {}

  Fd fd_;
  Mmap run_;
  std::uint32_t id_ = 0;
};

}  // namespace vmm::kvm
