// Figure 3 of the benchmark report: the cost of injecting an interrupt, through vmmlab's interfaces and raw.
//
// One VM with KVM's in-kernel irqchip and one vCPU (which never runs: the interrupt stays pending in its LAPIC or
// the IOAPIC, which is all KVM's delivery path needs). Three ways in, each twice, side by side:
//
//   irqfd        vmmlab: Irqfd::trigger() (EventFd::write, Result<void>) on an irqfd assigned with Irqfd::assign;
//                raw: write(2) of 1 to an eventfd assigned with a bare KVM_IRQFD.
//   signal_msi   vmmlab: KvmSignalMsi::signal (stage04's MsiSink, the path MSI-X takes without irqfd);
//                raw: ioctl(KVM_SIGNAL_MSI) with the same message.
//   irq_line     vmmlab: KvmIrqLine::pulse() (stage03's IrqLine: raise, then lower);
//                raw: two ioctl(KVM_IRQ_LINE), level 1 then 0.
//
// Each item is one interrupt; tools/bench-report reports ns per interrupt and vmmlab's ratio to raw.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <linux/kvm.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>

#include "vmm/devices/kvm_irq_line.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/fd.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/kvm/vm.hpp"
#include "vmm/pci/msi.hpp"

namespace {

// GSIs of the default routing: 0-23 are IOAPIC pins (0-15 also PIC inputs). Two distinct pins so the vmmlab and
// raw irqfds never share state.
constexpr std::uint32_t kVmmlabGsi = 5;
constexpr std::uint32_t kRawGsi = 6;
constexpr std::uint32_t kLineGsi = 7;
// An MSI to LAPIC 0, vector 0x40, fixed delivery (Intel SDM 11.11: address 0xfee00000 | dest << 12).
constexpr vmm::pci::MsiMessage kMessage{.address = 0xfee0'0000, .data = 0x40};

/// @brief The VM every benchmark injects into: irqchip and vCPU 0.
struct InterruptVm {
  vmm::kvm::Kvm kvm;
  vmm::kvm::Vm vm;
  vmm::kvm::Vcpu vcpu;

  static vmm::Result<std::unique_ptr<InterruptVm>> create() {
    auto kvm = vmm::kvm::Kvm::open();
    if (!kvm) {
      return std::unexpected(kvm.error());
    }
    auto vm = kvm->create_vm();
    if (!vm) {
      return std::unexpected(vm.error());
    }
    if (auto rc = vmm::devices::create_irqchip(*vm); !rc) {
      return std::unexpected(rc.error());
    }
    auto vcpu = vm->create_vcpu(0);
    if (!vcpu) {
      return std::unexpected(vcpu.error());
    }
    return std::make_unique<InterruptVm>(InterruptVm{std::move(*kvm), std::move(*vm), std::move(*vcpu)});
  }
};

InterruptVm* shared_vm(benchmark::State& state) {
  static auto vm = InterruptVm::create();
  if (!vm) {
    state.SkipWithError(fmt::format("{}", vm.error()).c_str());
    return nullptr;
  }
  return vm->get();
}

void fail(benchmark::State& state, const vmm::Error& error) {
  state.SkipWithError(fmt::format("{}", error).c_str());
}

void irqfd_vmmlab(benchmark::State& state) {
  auto* vm = shared_vm(state);
  if (vm == nullptr) {
    return;
  }
  auto irqfd = vmm::irq::Irqfd::assign(vm->vm, kVmmlabGsi);
  if (!irqfd) {
    return fail(state, irqfd.error());
  }
  for (auto _ : state) {
    if (auto rc = irqfd->trigger(); !rc) {
      return fail(state, rc.error());
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void irqfd_raw(benchmark::State& state) {
  auto* vm = shared_vm(state);
  if (vm == nullptr) {
    return;
  }
  vmm::Fd event(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  kvm_irqfd request{};
  request.fd = static_cast<std::uint32_t>(event.get());
  request.gsi = kRawGsi;
  if (!event || ioctl(vm->vm.fd().get(), KVM_IRQFD, &request) != 0) {
    state.SkipWithError(fmt::format("raw KVM_IRQFD: errno {}", errno).c_str());
    return;
  }
  const std::uint64_t one = 1;
  for (auto _ : state) {
    if (write(event.get(), &one, sizeof one) != sizeof one) {
      state.SkipWithError("raw eventfd write failed");
      break;
    }
  }
  request.flags = KVM_IRQFD_FLAG_DEASSIGN;
  (void)ioctl(vm->vm.fd().get(), KVM_IRQFD, &request);
  state.SetItemsProcessed(state.iterations());
}

void signal_msi_vmmlab(benchmark::State& state) {
  auto* vm = shared_vm(state);
  if (vm == nullptr) {
    return;
  }
  vmm::pci::KvmSignalMsi sink(vm->vm);
  for (auto _ : state) {
    if (auto rc = sink.signal(kMessage, 0); !rc) {
      return fail(state, rc.error());
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void signal_msi_raw(benchmark::State& state) {
  auto* vm = shared_vm(state);
  if (vm == nullptr) {
    return;
  }
  kvm_msi msi{};
  msi.address_lo = static_cast<std::uint32_t>(kMessage.address);
  msi.data = kMessage.data;
  for (auto _ : state) {
    if (ioctl(vm->vm.fd().get(), KVM_SIGNAL_MSI, &msi) < 0) {
      state.SkipWithError(fmt::format("raw KVM_SIGNAL_MSI: errno {}", errno).c_str());
      return;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void irq_line_vmmlab(benchmark::State& state) {
  auto* vm = shared_vm(state);
  if (vm == nullptr) {
    return;
  }
  vmm::devices::KvmIrqLine line(vm->vm, kLineGsi);
  for (auto _ : state) {
    if (auto rc = line.pulse(); !rc) {
      return fail(state, rc.error());
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void irq_line_raw(benchmark::State& state) {
  auto* vm = shared_vm(state);
  if (vm == nullptr) {
    return;
  }
  kvm_irq_level level{};
  level.irq = kLineGsi;
  for (auto _ : state) {
    level.level = 1;
    const int raised = ioctl(vm->vm.fd().get(), KVM_IRQ_LINE, &level);
    level.level = 0;
    if (raised != 0 || ioctl(vm->vm.fd().get(), KVM_IRQ_LINE, &level) != 0) {
      state.SkipWithError(fmt::format("raw KVM_IRQ_LINE: errno {}", errno).c_str());
      return;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

int main(int argc, char** argv) {
  // Pairs, vmmlab first (tools/bench-report runs the program several times: A B A B ...).
  benchmark::RegisterBenchmark("irqfd/vmmlab", irqfd_vmmlab);
  benchmark::RegisterBenchmark("irqfd/raw", irqfd_raw);
  benchmark::RegisterBenchmark("signal_msi/vmmlab", signal_msi_vmmlab);
  benchmark::RegisterBenchmark("signal_msi/raw", signal_msi_raw);
  benchmark::RegisterBenchmark("irq_line/vmmlab", irq_line_vmmlab);
  benchmark::RegisterBenchmark("irq_line/raw", irq_line_raw);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
