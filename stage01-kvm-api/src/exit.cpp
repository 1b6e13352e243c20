#include "vmm/kvm/exit.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace vmm::kvm {

namespace {

template <typename... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};

std::string hex_bytes(std::span<const std::uint8_t> bytes, std::size_t max = 16) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size() && i < max; ++i) {
    out += fmt::format("{}{:02x}", i == 0 ? "" : " ", bytes[i]);
  }
  if (bytes.size() > max) {
    out += fmt::format(" ... ({} bytes)", bytes.size());
  }
  return out;
}

}  // namespace

Result<VcpuExit> decode_exit(kvm_run& run, std::size_t run_size) {
  auto* base = reinterpret_cast<std::uint8_t*>(&run);
  switch (run.exit_reason) {
    case KVM_EXIT_IO: {
      const auto& io = run.io;
      if (io.size != 1 && io.size != 2 && io.size != 4) {
        return logic_error("decode KVM_EXIT_IO", fmt::format("invalid access size {} at port {:#x}", io.size, io.port));
      }
      if (io.direction != KVM_EXIT_IO_IN && io.direction != KVM_EXIT_IO_OUT) {
        return logic_error("decode KVM_EXIT_IO", fmt::format("invalid direction {}", io.direction));
      }
      // 64-bit arithmetic: size * count cannot overflow, and offset is checked before it is added.
      const std::uint64_t length = std::uint64_t{io.size} * io.count;
      if (io.count == 0 || io.data_offset > run_size || length > run_size - io.data_offset) {
        return logic_error("decode KVM_EXIT_IO",
                           fmt::format("data at offset {:#x} with {} x {} bytes lies outside the {:#x}-byte kvm_run "
                                       "mapping",
                                       io.data_offset, io.count, io.size, run_size));
      }
      return IoExit{
          .port = io.port,
          .direction = io.direction == KVM_EXIT_IO_IN ? IoDirection::In : IoDirection::Out,
          .size = io.size,
          .count = io.count,
          .data = {base + io.data_offset, static_cast<std::size_t>(length)},
      };
    }
    case KVM_EXIT_MMIO: {
      auto& mmio = run.mmio;
      if (mmio.len == 0 || mmio.len > sizeof(mmio.data)) {
        return logic_error("decode KVM_EXIT_MMIO",
                           fmt::format("invalid length {} at address {:#x}", mmio.len, mmio.phys_addr));
      }
      return MmioExit{
          .address = mmio.phys_addr,
          .length = mmio.len,
          .is_write = mmio.is_write != 0,
          .data = {mmio.data, mmio.len},
      };
    }
    case KVM_EXIT_HLT:
      return HltExit{};
    case KVM_EXIT_SHUTDOWN:
      return ShutdownExit{};
    case KVM_EXIT_FAIL_ENTRY:
      return FailEntryExit{
          .hardware_entry_failure_reason = run.fail_entry.hardware_entry_failure_reason,
          .cpu = run.fail_entry.cpu,
      };
    case KVM_EXIT_INTERNAL_ERROR: {
      InternalErrorExit exit{.suberror = run.internal.suberror};
      // ndata comes from the kernel, but clamp it: a corrupt page must not make us read past the array.
      exit.ndata = std::min<std::uint32_t>(run.internal.ndata, exit.data.size());
      std::copy_n(run.internal.data, exit.ndata, exit.data.begin());
      return exit;
    }
    case KVM_EXIT_SYSTEM_EVENT: {
      SystemEventExit exit{.type = run.system_event.type};
      exit.ndata = std::min<std::uint32_t>(run.system_event.ndata, exit.data.size());
      std::copy_n(run.system_event.data, exit.ndata, exit.data.begin());
      return exit;
    }
    case KVM_EXIT_DEBUG:
      return DebugExit{
          .exception = run.debug.arch.exception,
          .pc = run.debug.arch.pc,
          .dr6 = run.debug.arch.dr6,
          .dr7 = run.debug.arch.dr7,
      };
    case KVM_EXIT_INTR:
      return InterruptedExit{};
    default:
      return UnknownExit{.reason = run.exit_reason};
  }
}

std::string exit_reason_name(std::uint32_t reason) {
  switch (reason) {
#define VMM_EXIT_NAME(name) \
  case name:                \
    return #name;
    VMM_EXIT_NAME(KVM_EXIT_UNKNOWN)
    VMM_EXIT_NAME(KVM_EXIT_EXCEPTION)
    VMM_EXIT_NAME(KVM_EXIT_IO)
    VMM_EXIT_NAME(KVM_EXIT_HYPERCALL)
    VMM_EXIT_NAME(KVM_EXIT_DEBUG)
    VMM_EXIT_NAME(KVM_EXIT_HLT)
    VMM_EXIT_NAME(KVM_EXIT_MMIO)
    VMM_EXIT_NAME(KVM_EXIT_IRQ_WINDOW_OPEN)
    VMM_EXIT_NAME(KVM_EXIT_SHUTDOWN)
    VMM_EXIT_NAME(KVM_EXIT_FAIL_ENTRY)
    VMM_EXIT_NAME(KVM_EXIT_INTR)
    VMM_EXIT_NAME(KVM_EXIT_SET_TPR)
    VMM_EXIT_NAME(KVM_EXIT_TPR_ACCESS)
    VMM_EXIT_NAME(KVM_EXIT_NMI)
    VMM_EXIT_NAME(KVM_EXIT_INTERNAL_ERROR)
    VMM_EXIT_NAME(KVM_EXIT_OSI)
    VMM_EXIT_NAME(KVM_EXIT_PAPR_HCALL)
    VMM_EXIT_NAME(KVM_EXIT_WATCHDOG)
    VMM_EXIT_NAME(KVM_EXIT_EPR)
    VMM_EXIT_NAME(KVM_EXIT_SYSTEM_EVENT)
    VMM_EXIT_NAME(KVM_EXIT_IOAPIC_EOI)
    VMM_EXIT_NAME(KVM_EXIT_HYPERV)
    VMM_EXIT_NAME(KVM_EXIT_X86_RDMSR)
    VMM_EXIT_NAME(KVM_EXIT_X86_WRMSR)
    VMM_EXIT_NAME(KVM_EXIT_DIRTY_RING_FULL)
    VMM_EXIT_NAME(KVM_EXIT_AP_RESET_HOLD)
    VMM_EXIT_NAME(KVM_EXIT_X86_BUS_LOCK)
    VMM_EXIT_NAME(KVM_EXIT_XEN)
#ifdef KVM_EXIT_NOTIFY
    VMM_EXIT_NAME(KVM_EXIT_NOTIFY)
#endif
#undef VMM_EXIT_NAME
    default:
      return fmt::format("KVM_EXIT_{}", reason);
  }
}

std::string internal_error_name(std::uint32_t suberror) {
  switch (suberror) {
    case KVM_INTERNAL_ERROR_EMULATION:
      return "KVM_INTERNAL_ERROR_EMULATION";
    case KVM_INTERNAL_ERROR_SIMUL_EX:
      return "KVM_INTERNAL_ERROR_SIMUL_EX";
    case KVM_INTERNAL_ERROR_DELIVERY_EV:
      return "KVM_INTERNAL_ERROR_DELIVERY_EV";
    case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON:
      return "KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON";
    default:
      return fmt::format("suberror {}", suberror);
  }
}

std::uint32_t exit_reason(const VcpuExit& exit) {
  return std::visit(Overloaded{
                        [](const IoExit&) -> std::uint32_t { return KVM_EXIT_IO; },
                        [](const MmioExit&) -> std::uint32_t { return KVM_EXIT_MMIO; },
                        [](const HltExit&) -> std::uint32_t { return KVM_EXIT_HLT; },
                        [](const ShutdownExit&) -> std::uint32_t { return KVM_EXIT_SHUTDOWN; },
                        [](const FailEntryExit&) -> std::uint32_t { return KVM_EXIT_FAIL_ENTRY; },
                        [](const InternalErrorExit&) -> std::uint32_t { return KVM_EXIT_INTERNAL_ERROR; },
                        [](const SystemEventExit&) -> std::uint32_t { return KVM_EXIT_SYSTEM_EVENT; },
                        [](const DebugExit&) -> std::uint32_t { return KVM_EXIT_DEBUG; },
                        [](const InterruptedExit&) -> std::uint32_t { return KVM_EXIT_INTR; },
                        [](const UnknownExit& e) { return e.reason; },
                    },
                    exit);
}

std::string describe(const VcpuExit& exit) {
  return std::visit(
      Overloaded{
          [](const IoExit& e) {
            return fmt::format("KVM_EXIT_IO {} port {:#x} size {} count {} data {}",
                               e.direction == IoDirection::In ? "in" : "out", e.port, e.size, e.count,
                               e.direction == IoDirection::In ? std::string("(to be filled)") : hex_bytes(e.data));
          },
          [](const MmioExit& e) {
            return fmt::format("KVM_EXIT_MMIO {} address {:#x} length {} data {}", e.is_write ? "write" : "read",
                               e.address, e.length, e.is_write ? hex_bytes(e.data) : std::string("(to be filled)"));
          },
          [](const HltExit&) { return std::string("KVM_EXIT_HLT"); },
          [](const ShutdownExit&) { return std::string("KVM_EXIT_SHUTDOWN (triple fault)"); },
          [](const FailEntryExit& e) {
            return fmt::format("KVM_EXIT_FAIL_ENTRY reason {:#x} on cpu {}", e.hardware_entry_failure_reason, e.cpu);
          },
          [](const InternalErrorExit& e) {
            return fmt::format("KVM_EXIT_INTERNAL_ERROR {} data [{:#x}]", internal_error_name(e.suberror),
                               fmt::join(e.words(), ", "));
          },
          [](const SystemEventExit& e) {
            return fmt::format("KVM_EXIT_SYSTEM_EVENT type {} data [{:#x}]", e.type,
                               fmt::join(std::span(e.data.data(), e.ndata), ", "));
          },
          [](const DebugExit& e) {
            return fmt::format("KVM_EXIT_DEBUG exception {} pc {:#x} dr6 {:#x} dr7 {:#x}", e.exception, e.pc, e.dr6,
                               e.dr7);
          },
          [](const InterruptedExit&) { return std::string("KVM_EXIT_INTR"); },
          [](const UnknownExit& e) { return exit_reason_name(e.reason); },
      },
      exit);
}

}  // namespace vmm::kvm
