#pragma once
/// @file
/// @brief `TestVm`: the smallest complete VMM. One memory slot, one vCPU in real mode, and a run loop.

#include <linux/kvm.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/guest_image.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/mmap.hpp"

namespace vmm::stage01 {

/// @brief Where the test VM's memory is and how its vCPU starts.
struct TestVmConfig {
  std::uint64_t memory_address = 0x0;    ///< Guest-physical start of the single memory slot.
  std::uint64_t memory_size = 0x100000;  ///< 1 MiB: all a real-mode guest can address.
  std::uint64_t rax = 2;                 ///< The two numbers test_vm adds.
  std::uint64_t rbx = 3;
  bool trace = false;         ///< Print every exit to stderr as it happens.
  bool record_trace = false;  ///< Keep `describe()` of every exit in RunOutcome::trace (tests).
};

/// @brief Why `TestVm::run` stopped.
enum class StopReason { Halted, Shutdown, InternalError, FailEntry, UnhandledExit, ExitLimit };

/// @brief What a run produced: the bytes written to port 0x3f8, the exits seen, and how it ended.
struct RunOutcome {
  StopReason reason = StopReason::Halted;
  std::string serial_output;         ///< Every byte the guest wrote to port 0x3f8.
  std::vector<std::uint32_t> exits;  ///< KVM_EXIT_* reasons, in order.
  std::vector<std::string> trace;    ///< `describe()` of each exit, when TestVmConfig::record_trace is set.
  std::string detail;                ///< For abnormal stops: the exit and a register dump.
};

/// @brief A port-I/O hook consulted before the default handling; returns true if it handled the exit.
using IoHook = std::function<bool(kvm::IoExit&)>;

/// @brief How `run_vcpu` reports exits.
struct RunOptions {
  bool trace = false;         ///< Print every exit to stderr as it happens.
  bool record_trace = false;  ///< Keep `describe()` of every exit in RunOutcome::trace.
};

/// @brief The run loop: runs `vcpu` until HLT, a fatal exit, or `max_exits`.
///
/// `hook` sees every port-I/O exit first. Otherwise OUT to port 0x3f8 appends to the serial output (every item of a
/// string OUT), and IN from a port nobody handles reads all-ones, as on real hardware with nothing on the bus.
/// Any vCPU in any mode can be run this way: stage02 runs its 64-bit guests with it.
[[nodiscard]] Result<RunOutcome> run_vcpu(kvm::Vcpu& vcpu, const RunOptions& options, const IoHook& hook = {},
                                          std::size_t max_exits = 10000);

/// @brief The stage01 machine: everything in one object so the run loop is easy to read and to step through.
class TestVm {
 public:
  /// @brief Opens /dev/kvm, creates the VM, maps memory, copies `image` in, creates vCPU 0 in real mode at the
  ///        image's entry point.
  [[nodiscard]] static Result<TestVm> create(const GuestImage& image, const TestVmConfig& config = {});

  /// @brief Runs the vCPU with `run_vcpu` until HLT, a fatal exit, or `max_exits`.
  [[nodiscard]] Result<RunOutcome> run(const IoHook& hook = {}, std::size_t max_exits = 10000);

  /// @brief Copies bytes into guest memory at a guest-physical address (checked against the slot).
  [[nodiscard]] Result<void> write_memory(std::uint64_t guest_address, std::span<const std::byte> bytes);

  [[nodiscard]] kvm::Vm& vm() noexcept { return vm_; }
  [[nodiscard]] kvm::Vcpu& vcpu() noexcept { return vcpu_; }
  [[nodiscard]] const TestVmConfig& config() const noexcept { return config_; }

 private:
  TestVm(kvm::Kvm kvm, kvm::Vm vm, Mmap memory, kvm::Vcpu vcpu, TestVmConfig config)
      : kvm_(std::move(kvm)), vm_(std::move(vm)), memory_(std::move(memory)), vcpu_(std::move(vcpu)), config_(config) {}

  kvm::Kvm kvm_;
  kvm::Vm vm_;
  Mmap memory_;
  kvm::Vcpu vcpu_;
  TestVmConfig config_;
};

/// @brief Sets up `vcpu` for real mode with CS base 0 and RIP = `entry` (which must be below 64 KiB).
[[nodiscard]] Result<void> enter_real_mode(kvm::Vcpu& vcpu, std::uint64_t entry, std::uint64_t rax, std::uint64_t rbx);

/// @brief "halted", "shutdown", ...
[[nodiscard]] const char* to_string(StopReason reason);

}  // namespace vmm::stage01
