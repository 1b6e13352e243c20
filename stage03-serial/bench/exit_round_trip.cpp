// Figure 1 of the benchmark report: the userspace exit round trip.
//
// The guest (guest/exit_loop.S) is one instruction in a loop that always exits: OUT to port 0xe0, or a byte store
// to guest-physical 0x20000 where no memory slot is. Two machines run it side by side in this one binary:
//
//   vmmlab  TestVm's VM and vCPU, driven by stage03's run_vcpu_loop: Vcpu::run, exit decoding, ExitCounters off,
//           the IoBus/MmioBus lookup under its shared_mutex, a BusDevice call.
//   raw     the floor: the smallest correct loop over the same KVM API, written with bare ioctls on a VM set up the
//           same way (one 64 KiB slot, real mode, the same image). Its only work per exit is KVM_RUN and a check of
//           the exit reason and port.
//
// Both report items = exits, so Google Benchmark's items_per_second is exits per second; tools/bench-report turns
// that into ns per exit and divides vmmlab's by the floor's. The difference is what the VMM's abstractions cost.
//
// The other half of figure 1 is a count, not a time: system calls per exit. `--exits N --loop vmmlab|raw
// --kind pio|mmio` runs exactly N exits once and returns; tools/bench-report runs that under strace for two values
// of N and divides the difference in system calls by the difference in N, which cancels the set-up calls exactly.
// The target is one (KVM_RUN): nothing on the hot path may read or write registers.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <guest/exit_loop.hpp>
#include <memory>
#include <string>
#include <string_view>

#include "test_vm.hpp"
#include "vmm/devices/bus.hpp"
#include "vmm/devices/bus_device.hpp"
#include "vmm/fd.hpp"
#include "vmm/machine/vcpu_loop.hpp"
#include "vmm/mmap.hpp"

namespace {

using vmm::Result;

constexpr std::uint16_t kPort = 0xe0;            // guest/exit_loop.S
constexpr std::uint64_t kMmioAddress = 0x20000;  // ES:0 with ES = 0x2000
constexpr std::uint64_t kRamSize = 0x10000;      // 64 KiB: 0x20000 is outside it
/// Exits per benchmark iteration: enough that the loop's own start and end vanish in the average.
constexpr std::int64_t kExitsPerIteration = 1000;

/// @brief Which instruction the guest loops on (the value it finds in AX).
enum class ExitKind { Pio = 0, Mmio = 1 };

/// @brief A device that counts the guest's accesses and asks the run loop to stop after a quota.
///
/// It is what a real device costs at the least: a virtual call from the bus with the offset and the bytes.
class CountingDevice : public vmm::devices::BusDevice {
 public:
  explicit CountingDevice(std::atomic<bool>& stop) : stop_(stop) {}
  void read(std::uint64_t, std::span<std::uint8_t> data) override { std::fill(data.begin(), data.end(), 0); }
  void write(std::uint64_t, std::span<const std::uint8_t>) override {
    if (++seen_ == quota_) {
      stop_.store(true, std::memory_order_release);
    }
  }
  void arm(std::int64_t quota) {
    seen_ = 0;
    quota_ = quota;
    stop_.store(false, std::memory_order_release);
  }
  [[nodiscard]] std::int64_t seen() const { return seen_; }

 private:
  std::atomic<bool>& stop_;
  std::int64_t seen_ = 0;
  std::int64_t quota_ = 0;
};

/// @brief vmmlab's machine for the benchmark: TestVm plus the buses stage03's run loop dispatches to.
struct VmmlabMachine {
  std::unique_ptr<vmm::stage01::TestVm> vm;
  vmm::machine::Buses buses;
  std::atomic<bool> stop{false};
  std::shared_ptr<CountingDevice> device;

  static Result<std::unique_ptr<VmmlabMachine>> create(ExitKind kind) {
    auto machine = std::make_unique<VmmlabMachine>();
    vmm::stage01::TestVmConfig config;
    config.memory_size = kRamSize;
    config.rax = static_cast<std::uint64_t>(kind);
    auto vm = vmm::stage01::TestVm::create(vmm::guest::exit_loop(), config);
    if (!vm) {
      return std::unexpected(vm.error());
    }
    machine->vm = std::make_unique<vmm::stage01::TestVm>(std::move(*vm));
    machine->device = std::make_shared<CountingDevice>(machine->stop);
    auto inserted = kind == ExitKind::Pio ? machine->buses.io.insert(machine->device, kPort, 1, "bench port")
                                          : machine->buses.mmio.insert(machine->device, kMmioAddress, 1, "bench mmio");
    if (!inserted) {
      return std::unexpected(inserted.error());
    }
    return machine;
  }

  /// @brief Runs exactly `exits` exits through run_vcpu_loop.
  Result<void> run(std::int64_t exits) {
    device->arm(exits);
    auto outcome = vmm::machine::run_vcpu_loop(vm->vcpu(), buses, stop);
    if (!outcome) {
      return std::unexpected(outcome.error());
    }
    if (outcome->reason != vmm::machine::VcpuStop::Requested || device->seen() != exits) {
      return vmm::logic_error("run_vcpu_loop", fmt::format("stopped ({}) after {} of {} exits: {}",
                                                           vmm::machine::to_string(outcome->reason), device->seen(),
                                                           exits, outcome->detail));
    }
    return {};
  }
};

/// @brief The floor: the same VM built and run with bare ioctls, nothing between KVM_RUN and the next KVM_RUN but
///        a check that the exit is the expected one.
class RawMachine {
 public:
  static Result<std::unique_ptr<RawMachine>> create(ExitKind kind) {
    auto machine = std::unique_ptr<RawMachine>(new RawMachine(kind));
    if (auto rc = machine->set_up(); !rc) {
      return std::unexpected(rc.error());
    }
    return machine;
  }

  Result<void> run(std::int64_t exits) {
    const int vcpu = vcpu_.get();
    for (std::int64_t i = 0; i < exits; ++i) {
      if (ioctl(vcpu, KVM_RUN, 0) != 0) {
        return vmm::sys_error("KVM_RUN", errno, "raw loop");
      }
      const bool expected = kind_ == ExitKind::Pio
                                ? run_->exit_reason == KVM_EXIT_IO && run_->io.port == kPort
                                : run_->exit_reason == KVM_EXIT_MMIO && run_->mmio.phys_addr == kMmioAddress;
      if (!expected) {
        return vmm::logic_error("raw loop", fmt::format("unexpected exit reason {}", run_->exit_reason));
      }
    }
    return {};
  }

 private:
  explicit RawMachine(ExitKind kind) : kind_(kind) {}

  Result<void> set_up() {
    kvm_ = vmm::Fd(open("/dev/kvm", O_RDWR | O_CLOEXEC));
    if (!kvm_.valid()) {
      return vmm::sys_error("open", errno, "/dev/kvm");
    }
    vm_ = vmm::Fd(ioctl(kvm_.get(), KVM_CREATE_VM, 0));
    if (!vm_.valid()) {
      return vmm::sys_error("KVM_CREATE_VM", errno);
    }
    auto ram = vmm::Mmap::anonymous(kRamSize);
    if (!ram) {
      return std::unexpected(ram.error());
    }
    ram_ = std::move(*ram);
    const auto image = vmm::guest::exit_loop();
    std::memcpy(ram_.data() + image.load_address, image.bytes.data(), image.bytes.size());
    kvm_userspace_memory_region region{};
    region.memory_size = kRamSize;
    region.userspace_addr = reinterpret_cast<std::uint64_t>(ram_.data());
    if (ioctl(vm_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0) {
      return vmm::sys_error("KVM_SET_USER_MEMORY_REGION", errno);
    }
    vcpu_ = vmm::Fd(ioctl(vm_.get(), KVM_CREATE_VCPU, 0));
    if (!vcpu_.valid()) {
      return vmm::sys_error("KVM_CREATE_VCPU", errno);
    }
    const int run_size = ioctl(kvm_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < static_cast<int>(sizeof(kvm_run))) {
      return vmm::sys_error("KVM_GET_VCPU_MMAP_SIZE", errno);
    }
    auto run = vmm::Mmap::map(vcpu_, static_cast<std::size_t>(run_size));
    if (!run) {
      return std::unexpected(run.error());
    }
    run_map_ = std::move(*run);
    run_ = reinterpret_cast<kvm_run*>(run_map_.data());
    // Real mode at the image's entry with CS base 0, exactly as TestVm starts its vCPU.
    kvm_sregs sregs{};
    if (ioctl(vcpu_.get(), KVM_GET_SREGS, &sregs) != 0) {
      return vmm::sys_error("KVM_GET_SREGS", errno);
    }
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (ioctl(vcpu_.get(), KVM_SET_SREGS, &sregs) != 0) {
      return vmm::sys_error("KVM_SET_SREGS", errno);
    }
    kvm_regs regs{};
    regs.rip = image.entry;
    regs.rax = static_cast<std::uint64_t>(kind_);
    regs.rflags = 0x2;  // bit 1 is reserved and must be set
    if (ioctl(vcpu_.get(), KVM_SET_REGS, &regs) != 0) {
      return vmm::sys_error("KVM_SET_REGS", errno);
    }
    return {};
  }

  ExitKind kind_;
  vmm::Fd kvm_;
  vmm::Fd vm_;
  vmm::Fd vcpu_;
  vmm::Mmap ram_;
  vmm::Mmap run_map_;
  kvm_run* run_ = nullptr;
};

template <typename Machine>
void bm_exits(benchmark::State& state, ExitKind kind) {
  auto machine = Machine::create(kind);
  if (!machine) {
    state.SkipWithError(fmt::format("{}", machine.error()).c_str());
    return;
  }
  for (auto _ : state) {
    if (auto rc = (*machine)->run(kExitsPerIteration); !rc) {
      state.SkipWithError(fmt::format("{}", rc.error()).c_str());
      return;
    }
  }
  state.SetItemsProcessed(state.iterations() * kExitsPerIteration);
}

/// @brief `--exits N --loop vmmlab|raw --kind pio|mmio`: N exits once, for counting system calls under strace.
int run_once(std::int64_t exits, std::string_view loop, std::string_view kind_name) {
  const ExitKind kind = kind_name == "mmio" ? ExitKind::Mmio : ExitKind::Pio;
  Result<void> rc;
  if (loop == "raw") {
    auto machine = RawMachine::create(kind);
    rc = machine ? (*machine)->run(exits) : std::unexpected(machine.error());
  } else {
    auto machine = VmmlabMachine::create(kind);
    rc = machine ? (*machine)->run(exits) : std::unexpected(machine.error());
  }
  if (!rc) {
    fmt::print(stderr, "stage03-bench-exits: {}\n", rc.error());
    return 1;
  }
  fmt::print("{} {} exits: {}\n", loop, kind_name, exits);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t exits = 0;
  std::string loop = "vmmlab";
  std::string kind = "pio";
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.starts_with("--exits=")) {
      exits = std::stoll(std::string(arg.substr(8)));
    } else if (arg.starts_with("--loop=")) {
      loop = arg.substr(7);
    } else if (arg.starts_with("--kind=")) {
      kind = arg.substr(7);
    }
  }
  if (exits > 0) {
    return run_once(exits, loop, kind);
  }
  // Registered in pairs, vmmlab first: one process runs A B A B ... and tools/bench-report runs the process several
  // times, so each pair is measured side by side, interleaved.
  benchmark::RegisterBenchmark("pio/vmmlab", bm_exits<VmmlabMachine>, ExitKind::Pio);
  benchmark::RegisterBenchmark("pio/raw", bm_exits<RawMachine>, ExitKind::Pio);
  benchmark::RegisterBenchmark("mmio/vmmlab", bm_exits<VmmlabMachine>, ExitKind::Mmio);
  benchmark::RegisterBenchmark("mmio/raw", bm_exits<RawMachine>, ExitKind::Mmio);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
