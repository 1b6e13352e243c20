#include "vmm/machine/vcpu_loop.hpp"

#include <pthread.h>
#include <signal.h>

#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "vmm/kvm/dump.hpp"

namespace vmm::machine {

const char* to_string(VcpuStop stop) {
  switch (stop) {
    case VcpuStop::Requested:
      return "requested";
    case VcpuStop::Halted:
      return "halted";
    case VcpuStop::Shutdown:
      return "shutdown";
    case VcpuStop::InternalError:
      return "internal error";
    case VcpuStop::FailEntry:
      return "failed entry";
    case VcpuStop::Unhandled:
      return "unhandled exit";
  }
  return "?";
}

namespace {

// Port I/O, item by item: a REP INSB of 16 bytes is 16 one-byte reads of the same port.
void dispatch_io(kvm::IoExit& io, const devices::IoBus& bus) {
  for (std::uint32_t i = 0; i < io.count; ++i) {
    auto item = io.item(i);
    if (io.direction == kvm::IoDirection::Out) {
      bus.write(io.port, item);
    } else {
      bus.read(io.port, item);
    }
  }
}

void dispatch_mmio(kvm::MmioExit& mmio, const devices::MmioBus& bus) {
  if (mmio.is_write) {
    bus.write(mmio.address, mmio.data);
  } else {
    bus.read(mmio.address, mmio.data);
  }
}

}  // namespace

Result<VcpuOutcome> run_vcpu_loop(kvm::Vcpu& vcpu, const Buses& buses, const std::atomic<bool>& stop,
                                  const VcpuLoopOptions& options) {
  // However the loop ends, a debugger waiting for this vCPU to stop must hear that it never will; `normal` is set
  // only on the two ordinary ends (stop requested, HLT).
  struct LoopEndNotice {
    VcpuDebugHook* hook;
    kvm::Vcpu& vcpu;
    bool normal = false;
    ~LoopEndNotice() {
      if (hook != nullptr) {
        hook->on_loop_end(vcpu, normal);
      }
    }
  } end_notice{options.debug_hook, vcpu};
  VcpuOutcome outcome;
  auto fatal = [&](VcpuStop reason, const kvm::VcpuExit& exit) {
    outcome.reason = reason;
    auto dump = kvm::dump_vcpu(vcpu);
    outcome.detail = fmt::format("{}\n{}", kvm::describe(exit), dump ? *dump : dump.error().message());
    return outcome;
  };
  while (!stop.load(std::memory_order_acquire)) {
    if (options.debug_hook != nullptr) {
      options.debug_hook->before_run(vcpu, stop);
      if (stop.load(std::memory_order_acquire)) {
        break;
      }
    }
    auto exit = vcpu.run();
    if (!exit) {
      return std::unexpected(exit.error());
    }
    ++outcome.exits;
    if (options.counters != nullptr) {
      options.counters->record(*exit);
    }
    if (options.trace) {
      fmt::print(stderr, "vcpu{} exit #{}: {}\n", vcpu.id(), outcome.exits, kvm::describe(*exit));
    }
    if (auto* io = std::get_if<kvm::IoExit>(&*exit)) {
      if (options.debug_hook != nullptr && io->direction == kvm::IoDirection::Out &&
          options.debug_hook->on_port_write(vcpu, *io)) {
        continue;
      }
      dispatch_io(*io, buses.io);
    } else if (auto* mmio = std::get_if<kvm::MmioExit>(&*exit)) {
      dispatch_mmio(*mmio, buses.mmio);
    } else if (std::holds_alternative<kvm::InterruptedExit>(*exit)) {
      continue;  // a kick: the loop condition (or the debugger) decides
    } else if (auto* debug = std::get_if<kvm::DebugExit>(&*exit); debug != nullptr && options.debug_hook != nullptr) {
      options.debug_hook->on_debug_exit(vcpu, *debug);
    } else if (std::holds_alternative<kvm::HltExit>(*exit)) {
      outcome.reason = VcpuStop::Halted;
      end_notice.normal = true;
      return outcome;
    } else if (std::holds_alternative<kvm::ShutdownExit>(*exit)) {
      return fatal(VcpuStop::Shutdown, *exit);
    } else if (std::holds_alternative<kvm::InternalErrorExit>(*exit)) {
      return fatal(VcpuStop::InternalError, *exit);
    } else if (std::holds_alternative<kvm::FailEntryExit>(*exit)) {
      return fatal(VcpuStop::FailEntry, *exit);
    } else {
      return fatal(VcpuStop::Unhandled, *exit);
    }
  }
  outcome.reason = VcpuStop::Requested;
  end_notice.normal = true;
  return outcome;
}

namespace {

// The kick signal only has to interrupt KVM_RUN; the handler itself has nothing to do. No SA_RESTART, so the ioctl
// returns EINTR instead of being restarted.
constexpr int kKickSignal = SIGUSR1;
void on_kick(int) {}

Result<void> install_kick_handler() {
  static std::once_flag once;
  static int saved_errno = 0;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_handler = on_kick;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;
    if (::sigaction(kKickSignal, &action, nullptr) != 0) {
      saved_errno = errno;
    }
  });
  if (saved_errno != 0) {
    return sys_error("sigaction(SIGUSR1)", saved_errno);
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<VcpuThread>> VcpuThread::start(kvm::Vcpu& vcpu, const Buses& buses, VcpuLoopOptions options,
                                                      OnExit on_exit) {
  if (auto rc = install_kick_handler(); !rc) {
    return std::unexpected(rc.error());
  }
  std::unique_ptr<VcpuThread> thread(new VcpuThread(vcpu));
  VcpuThread* self = thread.get();
  self->thread_ = std::thread([self, &buses, options, on_exit = std::move(on_exit)] {
    // Name the thread so `info threads` in gdb shows which vCPU is which.
    ::pthread_setname_np(::pthread_self(), fmt::format("vcpu{}", self->vcpu_.id()).c_str());
    auto outcome = run_vcpu_loop(self->vcpu_, buses, self->stop_, options);
    if (on_exit) {
      on_exit(outcome);
    }
  });
  return thread;
}

void kick_vcpu(kvm::Vcpu& vcpu, std::thread::native_handle_type thread) {
  // immediate_exit covers the window between the loop's check and the next KVM_RUN; the signal covers a KVM_RUN
  // already running the guest.
  __atomic_store_n(&vcpu.run_page().immediate_exit, 1, __ATOMIC_SEQ_CST);
  ::pthread_kill(thread, kKickSignal);
}

void VcpuThread::request_stop() {
  stop_.store(true, std::memory_order_seq_cst);
  if (thread_.joinable()) {
    kick_vcpu(vcpu_, thread_.native_handle());
  } else {
    __atomic_store_n(&vcpu_.run_page().immediate_exit, 1, __ATOMIC_SEQ_CST);
  }
}

void VcpuThread::join() {
  if (thread_.joinable()) {
    thread_.join();
  }
}

VcpuThread::~VcpuThread() {
  request_stop();
  join();
}

}  // namespace vmm::machine
