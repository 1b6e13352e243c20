#include "vmm/gdb/guest_debug_probe.hpp"

#include <linux/kvm.h>

#include <array>
#include <cstring>
#include <vector>

#include "vmm/kvm/kvm.hpp"
#include "vmm/mmap.hpp"

namespace vmm::gdb {

namespace {

// The programs run in real mode at guest-physical 0x1000, with no irqchip (so HLT exits to us). Each ends in HLT
// (0xf4): reaching it means the event never stopped the guest.
constexpr std::uint64_t kCode = 0x1000;
constexpr std::uint64_t kData = 0x1800;

struct Probe {
  std::vector<std::uint8_t> code;
  std::uint32_t control;
  std::uint64_t dr0;
  std::uint64_t dr7;
  std::uint32_t exception;  // what KVM_EXIT_DEBUG must report
};

Result<bool> run_probe(const kvm::Kvm& kvm, const Probe& probe) {
  auto vm = kvm.create_vm();
  if (!vm) {
    return std::unexpected(vm.error());
  }
  auto memory = Mmap::anonymous(0x2000);
  if (!memory) {
    return std::unexpected(memory.error());
  }
  std::memcpy(memory->data() + kCode, probe.code.data(), probe.code.size());
  if (auto rc = vm->set_memory_slot({.slot = 0, .guest_address = 0, .size = 0x2000, .host_address = memory->data()});
      !rc) {
    return std::unexpected(rc.error());
  }
  auto vcpu = vm->create_vcpu(0);
  if (!vcpu) {
    return std::unexpected(vcpu.error());
  }
  auto sregs = vcpu->get_sregs();
  if (!sregs) {
    return std::unexpected(sregs.error());
  }
  sregs->cs.base = 0;
  sregs->cs.selector = 0;
  sregs->ds.base = 0;
  sregs->ds.selector = 0;
  if (auto rc = vcpu->set_sregs(*sregs); !rc) {
    return std::unexpected(rc.error());
  }
  kvm_regs regs{};
  regs.rip = kCode;
  regs.rflags = 0x2;
  if (auto rc = vcpu->set_regs(regs); !rc) {
    return std::unexpected(rc.error());
  }
  kvm_guest_debug debug{};
  debug.control = probe.control;
  debug.arch.debugreg[0] = probe.dr0;
  debug.arch.debugreg[7] = probe.dr7;
  if (auto rc = VMM_IOCTL(vcpu->fd(), KVM_SET_GUEST_DEBUG, &debug); !rc) {
    return false;  // refused: not supported here
  }
  // Anything but the expected debug exit (a HLT, an emulation failure, a triple fault) means "not delivered".
  for (int i = 0; i < 8; ++i) {
    auto exit = vcpu->run();
    if (!exit) {
      return false;
    }
    if (std::holds_alternative<kvm::InterruptedExit>(*exit)) {
      continue;
    }
    const auto* event = std::get_if<kvm::DebugExit>(&*exit);
    return event != nullptr && event->exception == probe.exception;
  }
  return false;
}

}  // namespace

Result<GuestDebugSupport> probe_guest_debug() {
  auto kvm = kvm::Kvm::open();
  if (!kvm) {
    return std::unexpected(kvm.error());
  }
  constexpr std::uint32_t kEnable = KVM_GUESTDBG_ENABLE;
  // nop; hlt
  const std::vector<std::uint8_t> nops = {0x90, 0x90, 0xf4};
  // nop; int3; hlt
  const std::vector<std::uint8_t> int3 = {0x90, 0xcc, 0xf4};
  // mov byte [kData], al; hlt   (A2 moffs16 in real mode)
  const std::vector<std::uint8_t> store = {0xa2, kData & 0xff, kData >> 8, 0xf4};
  const std::array<Probe, 4> probes = {{
      {nops, kEnable | KVM_GUESTDBG_SINGLESTEP, 0, 0, 1},
      {int3, kEnable | KVM_GUESTDBG_USE_SW_BP, 0, 0, 3},
      // DR0 = the second nop, execute (R/W0 = 00), one byte, L0 enabled.
      {nops, kEnable | KVM_GUESTDBG_USE_HW_BP, kCode + 1, 0x1 | 0x300, 1},
      // DR0 = kData, write (R/W0 = 01), one byte.
      {store, kEnable | KVM_GUESTDBG_USE_HW_BP, kData, 0x1 | 0x300 | (0b01ull << 16), 1},
  }};
  std::array<bool, 4> delivered{};
  for (std::size_t i = 0; i < probes.size(); ++i) {
    auto ok = run_probe(*kvm, probes[i]);
    if (!ok) {
      return std::unexpected(ok.error().with_context("probing guest debug support"));
    }
    delivered[i] = *ok;
  }
  return GuestDebugSupport{.single_step = delivered[0],
                           .software_breakpoint = delivered[1],
                           .hardware_breakpoint = delivered[2],
                           .hardware_watchpoint = delivered[3]};
}

}  // namespace vmm::gdb
