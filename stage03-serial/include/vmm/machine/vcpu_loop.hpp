#pragma once
/// @file
/// @brief The vCPU run loop every later stage uses: exits dispatched to the I/O and MMIO buses, on its own thread.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "vmm/devices/bus.hpp"
#include "vmm/error.hpp"
#include "vmm/kvm/vcpu.hpp"
#include "vmm/machine/exit_counters.hpp"

namespace vmm::machine {

/// @brief The two buses a vCPU's exits are dispatched to.
struct Buses {
  devices::IoBus io;      ///< Port I/O (IN/OUT/INS/OUTS).
  devices::MmioBus mmio;  ///< Guest-physical addresses no memory slot backs.
};

/// @brief Why a vCPU loop returned.
enum class VcpuStop {
  Requested,      ///< `VcpuThread::request_stop` (or the stop flag) ended it.
  Halted,         ///< KVM_EXIT_HLT: only without an in-kernel irqchip.
  Shutdown,       ///< Triple fault.
  InternalError,  ///< KVM could not continue (e.g. its emulator failed).
  FailEntry,      ///< The hardware refused to enter the guest.
  Unhandled,      ///< An exit this loop does not handle.
};

/// @brief "requested", "halted", ...
[[nodiscard]] const char* to_string(VcpuStop stop);

/// @brief How a vCPU loop ended, with the fatal exit and a register dump when there was one.
struct VcpuOutcome {
  VcpuStop reason = VcpuStop::Requested;  ///< Why it stopped.
  std::uint64_t exits = 0;                ///< KVM_RUN returns handled.
  std::string detail;                     ///< For abnormal stops: the exit and the registers.
};

/// @brief What a debugger (the gdb stub, vmm::gdb::GdbStub) needs from a vCPU loop: a place to hold the vCPU before
///        each KVM_RUN, and the KVM_EXIT_DEBUG exits. Called on the vCPU's own thread.
///
/// The loop knows nothing about gdb: it asks the hook before every KVM_RUN and hands it every debug exit. A hook
/// that never blocks costs one virtual call per exit.
class VcpuDebugHook {
 public:
  virtual ~VcpuDebugHook() = default;
  /// @brief Before each KVM_RUN: blocks while the debugger holds `vcpu` stopped. Must return (soon) once `stop` is
  ///        set, so a VMM that shuts down is never held by its debugger.
  virtual void before_run(kvm::Vcpu& vcpu, const std::atomic<bool>& stop) = 0;
  /// @brief A KVM_EXIT_DEBUG (a breakpoint, a watchpoint or a single step); the next `before_run` usually blocks.
  virtual void on_debug_exit(kvm::Vcpu& vcpu, const kvm::DebugExit& exit) = 0;
  /// @brief A port write, before the buses see it: true when it was the debugger's (a breakpoint made of an OUT
  ///        instruction, where the CPU traps nothing else) and must not reach a device.
  virtual bool on_port_write(kvm::Vcpu& vcpu, const kvm::IoExit& io) {
    (void)vcpu;
    (void)io;
    return false;
  }
  /// @brief The loop is about to return: the debugger must stop waiting for this vCPU. `normal` is false when it
  ///        ends on an error or a fatal exit (triple fault, emulation failure, ...).
  virtual void on_loop_end(kvm::Vcpu& vcpu, bool normal) = 0;
};

/// @brief Options of the loop.
struct VcpuLoopOptions {
  bool trace = false;  ///< Print every exit to stderr.
  /// Where to count every KVM_RUN return (by reason and address), or null. Shared by any number of loops; it must
  /// outlive them.
  ExitCounters* counters = nullptr;
  /// A debugger that may hold the vCPU and takes KVM_EXIT_DEBUG exits, or null (a debug exit then ends the loop as
  /// `Unhandled`). It must outlive the loop.
  VcpuDebugHook* debug_hook = nullptr;
};

/// @brief Runs `vcpu` until `stop` is set (and the vCPU kicked out of KVM_RUN) or a fatal exit.
///
/// Port I/O goes to `buses.io` item by item (string I/O has `count` items), MMIO to `buses.mmio`. Unclaimed
/// accesses are the buses' business (all-ones, counted). This function never exits the process: it returns.
[[nodiscard]] Result<VcpuOutcome> run_vcpu_loop(kvm::Vcpu& vcpu, const Buses& buses, const std::atomic<bool>& stop,
                                                const VcpuLoopOptions& options = {});

/// @brief Makes `thread`, which runs `vcpu`, leave KVM_RUN soon: `immediate_exit` for a KVM_RUN about to start, the
///        kick signal (SIGUSR1) for one running. The loop sees an `InterruptedExit`. `VcpuThread::start` installs the
///        signal's handler; the caller clears `immediate_exit` again when the vCPU should run.
void kick_vcpu(kvm::Vcpu& vcpu, std::thread::native_handle_type thread);

/// @brief One vCPU on its own thread, running `run_vcpu_loop`.
///
/// Stopping a thread that sits inside KVM_RUN takes two things: `immediate_exit` in the kvm_run page (so a KVM_RUN
/// that is about to start returns at once) and a signal to the thread (so one that is running returns with EINTR).
/// `start` installs a do-nothing SIGUSR1 handler for that; keep SIGUSR1 unblocked in vCPU threads.
class VcpuThread {
 public:
  /// @brief Called on the vCPU thread when the loop returns, with its outcome or error.
  using OnExit = std::function<void(const Result<VcpuOutcome>&)>;

  /// @brief Starts the loop for `vcpu` on a new thread. `vcpu` and `buses` must outlive the thread.
  [[nodiscard]] static Result<std::unique_ptr<VcpuThread>> start(kvm::Vcpu& vcpu, const Buses& buses,
                                                                 VcpuLoopOptions options, OnExit on_exit);
  VcpuThread(const VcpuThread&) = delete;
  VcpuThread& operator=(const VcpuThread&) = delete;
  VcpuThread(VcpuThread&&) = delete;
  VcpuThread& operator=(VcpuThread&&) = delete;
  /// @brief Stops and joins.
  ~VcpuThread();

  /// @brief Asks the loop to stop and kicks the vCPU out of KVM_RUN. Safe from any thread, more than once.
  void request_stop();
  /// @brief Waits for the thread to end.
  void join();
  /// @brief The thread's pthread id (for `info threads` in gdb and for the kick signal).
  [[nodiscard]] std::thread::native_handle_type native_handle() { return thread_.native_handle(); }

 private:
  VcpuThread(kvm::Vcpu& vcpu) : vcpu_(vcpu) {}
  kvm::Vcpu& vcpu_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace vmm::machine
