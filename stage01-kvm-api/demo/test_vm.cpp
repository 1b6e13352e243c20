#include "test_vm.hpp"

#include <cstring>

#include <fmt/format.h>

#include "vmm/kvm/dump.hpp"

namespace vmm::stage01 {

namespace {

constexpr std::uint16_t kSerialPort = 0x3f8;  // COM1's data register: where test_vm prints.
constexpr std::uint32_t kMemorySlot = 0;

}  // namespace

const char* to_string(StopReason reason) {
  switch (reason) {
    case StopReason::Halted:
      return "halted";
    case StopReason::Shutdown:
      return "shutdown";
    case StopReason::InternalError:
      return "internal error";
    case StopReason::FailEntry:
      return "failed entry";
    case StopReason::UnhandledExit:
      return "unhandled exit";
    case StopReason::ExitLimit:
      return "exit limit reached";
  }
  return "?";
}

Result<void> enter_real_mode(kvm::Vcpu& vcpu, std::uint64_t entry, std::uint64_t rax, std::uint64_t rbx) {
  if (entry > 0xffff) {
    return logic_error("enter_real_mode",
                       fmt::format("entry {:#x} is not reachable with CS base 0 (IP is 16 bits)", entry));
  }
  // A new vCPU is at the x86 reset vector: CS selector 0xf000 with base 0xffff0000 and RIP 0xfff0, i.e. the top of
  // the 4 GiB space where a BIOS would be. We have no BIOS, so point CS at segment 0 and RIP at our code.
  auto sregs = vcpu.get_sregs();
  if (!sregs) {
    return std::unexpected(sregs.error());
  }
  sregs->cs.base = 0;
  sregs->cs.selector = 0;
  if (auto rc = vcpu.set_sregs(*sregs); !rc) {
    return rc;
  }
  kvm_regs regs{};
  regs.rip = entry;
  regs.rax = rax;
  regs.rbx = rbx;
  regs.rflags = 0x2;  // Bit 1 of RFLAGS is reserved and must be 1; everything else (IF included) off.
  return vcpu.set_regs(regs);
}

Result<TestVm> TestVm::create(const GuestImage& image, const TestVmConfig& config) {
  auto kvm = kvm::Kvm::open();
  if (!kvm) {
    return std::unexpected(kvm.error());
  }
  if (auto rc = kvm->require_extension(KVM_CAP_USER_MEMORY); !rc) {
    return std::unexpected(rc.error());
  }
  auto vm = kvm->create_vm();
  if (!vm) {
    return std::unexpected(vm.error());
  }
  // Guest RAM is ordinary anonymous memory in this process: KVM maps it into the guest through a memory slot.
  auto memory = Mmap::anonymous(config.memory_size, PROT_READ | PROT_WRITE, MAP_NORESERVE);
  if (!memory) {
    return std::unexpected(memory.error());
  }
  if (auto rc = vm->set_memory_slot({.slot = kMemorySlot,
                                     .guest_address = config.memory_address,
                                     .size = config.memory_size,
                                     .host_address = memory->data()});
      !rc) {
    return std::unexpected(rc.error());
  }
  auto vcpu = vm->create_vcpu(0);
  if (!vcpu) {
    return std::unexpected(vcpu.error());
  }
  TestVm test_vm(std::move(*kvm), std::move(*vm), std::move(*memory), std::move(*vcpu), config);
  if (auto rc = test_vm.write_memory(image.load_address, image.bytes); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("loading guest '{}'", image.name)));
  }
  if (auto rc = enter_real_mode(test_vm.vcpu_, image.entry, config.rax, config.rbx); !rc) {
    return std::unexpected(rc.error());
  }
  return test_vm;
}

Result<void> TestVm::write_memory(std::uint64_t guest_address, std::span<const std::byte> bytes) {
  const std::uint64_t start = config_.memory_address;
  const std::uint64_t size = memory_.size();
  if (guest_address < start || guest_address - start > size || bytes.size() > size - (guest_address - start)) {
    return logic_error("write guest memory",
                       fmt::format("[{:#x}, {:#x}) is outside guest RAM [{:#x}, {:#x})", guest_address,
                                   guest_address + bytes.size(), start, start + size));
  }
  std::memcpy(memory_.data() + (guest_address - start), bytes.data(), bytes.size());
  return {};
}

Result<RunOutcome> TestVm::run(const IoHook& hook, std::size_t max_exits) {
  return run_vcpu(vcpu_, {.trace = config_.trace, .record_trace = config_.record_trace}, hook, max_exits);
}

Result<RunOutcome> run_vcpu(kvm::Vcpu& vcpu, const RunOptions& options, const IoHook& hook, std::size_t max_exits) {
  RunOutcome outcome;
  auto stop = [&](StopReason reason, const kvm::VcpuExit& exit) -> Result<RunOutcome> {
    outcome.reason = reason;
    auto dump = kvm::dump_vcpu(vcpu);
    outcome.detail = fmt::format("{}\n{}", kvm::describe(exit), dump ? *dump : dump.error().message());
    return outcome;
  };

  for (std::size_t n = 0; n < max_exits; ++n) {
    auto exit = vcpu.run();  // The guest runs inside this call until it needs us.
    if (!exit) {
      return std::unexpected(exit.error());
    }
    outcome.exits.push_back(kvm::exit_reason(*exit));
    // Formatting a description costs far more than the exit's bookkeeping: only do it when someone will read it.
    if (options.trace || options.record_trace) {
      std::string line = kvm::describe(*exit);
      if (options.trace) {
        fmt::print(stderr, "exit #{}: {}\n", n + 1, line);
      }
      if (options.record_trace) {
        outcome.trace.push_back(std::move(line));
      }
    }

    if (auto* io = std::get_if<kvm::IoExit>(&*exit)) {
      if (hook && hook(*io)) {
        continue;
      }
      if (io->direction == kvm::IoDirection::Out && io->port == kSerialPort) {
        // Every item of a string OUT: a VMM that looks only at data[0] drops characters.
        for (std::uint32_t i = 0; i < io->count; ++i) {
          outcome.serial_output.push_back(static_cast<char>(io->item(i)[0]));
        }
      } else if (io->direction == kvm::IoDirection::In) {
        std::ranges::fill(io->data, std::uint8_t{0xff});  // Nothing decodes this port: the bus floats high.
      }
      continue;
    }
    if (std::holds_alternative<kvm::HltExit>(*exit)) {
      outcome.reason = StopReason::Halted;
      return outcome;
    }
    if (std::holds_alternative<kvm::InterruptedExit>(*exit)) {
      continue;
    }
    if (std::holds_alternative<kvm::ShutdownExit>(*exit)) {
      return stop(StopReason::Shutdown, *exit);
    }
    if (std::holds_alternative<kvm::InternalErrorExit>(*exit)) {
      return stop(StopReason::InternalError, *exit);
    }
    if (std::holds_alternative<kvm::FailEntryExit>(*exit)) {
      return stop(StopReason::FailEntry, *exit);
    }
    return stop(StopReason::UnhandledExit, *exit);
  }
  outcome.reason = StopReason::ExitLimit;
  return outcome;
}

}  // namespace vmm::stage01
