// GSI routing and irqfds on a real VM with the in-kernel irqchip. No guest OS: interrupts are observed in the state
// KVM reports (KVM_GET_IRQCHIP for the PIC/IOAPIC input lines, KVM_GET_LAPIC for the LAPIC's IRR), and the guest's
// EOI that drives resampling is a four-instruction real-mode loop.
//
// KVM injects some irqfd signals from a workqueue (always for irqchip routes), so after a write the tests wait for
// the state to appear. The wait is bounded only so that a broken build fails instead of hanging; nothing is asserted
// about how long it takes.
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <linux/pci_regs.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>
#include <variant>
#include <vector>

#include "vmm/devices/kvm_irq_line.hpp"
#include "vmm/devices/serial/uart16550.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/mmap.hpp"
#include "vmm/pci/msix.hpp"
#include "vmm/testing/kvm.hpp"

namespace vmm::irq {
namespace {

constexpr std::uint32_t kUartGsi = 4;  // COM1: PIC master pin 4, IOAPIC pin 4

bool eventually(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

struct Machine {
  kvm::Kvm kvm;
  kvm::Vm vm;
};

// A VM with the in-kernel PIC, IOAPIC and LAPICs (no vCPU yet).
std::optional<Machine> machine_with_irqchip() {
  auto kvm = kvm::Kvm::open();
  EXPECT_TRUE(kvm) << kvm.error().message();
  if (!kvm) {
    return std::nullopt;
  }
  auto vm = kvm->create_vm();
  EXPECT_TRUE(vm) << vm.error().message();
  if (!vm) {
    return std::nullopt;
  }
  auto rc = devices::create_irqchip(*vm);
  EXPECT_TRUE(rc) << rc.error().message();
  if (!rc) {
    return std::nullopt;
  }
  return Machine{std::move(*kvm), std::move(*vm)};
}

kvm_irqchip irqchip_state(const kvm::Vm& vm, std::uint32_t chip) {
  kvm_irqchip state{};
  state.chip_id = chip;
  auto rc = VMM_IOCTL(vm.fd(), KVM_GET_IRQCHIP, &state);
  EXPECT_TRUE(rc) << rc.error().message();
  return state;
}
// The input line as the master PIC sees it now (last_irr is its edge detector: the current level of each pin).
bool pic_line(const kvm::Vm& vm, std::uint32_t pin) {
  return (irqchip_state(vm, KVM_IRQCHIP_PIC_MASTER).chip.pic.last_irr >> pin & 1) != 0;
}
// The IOAPIC's IRR: set while the pin's input is asserted (the redirection entries are masked at reset, so nothing
// is delivered and clears it).
bool ioapic_line(const kvm::Vm& vm, std::uint32_t pin) {
  return (irqchip_state(vm, KVM_IRQCHIP_IOAPIC).chip.ioapic.irr >> pin & 1) != 0;
}

// The vCPU's LAPIC: software-enable it (SVR bit 8; after reset the LAPIC drops fixed interrupts) and read its IRR.
constexpr std::size_t kApicSvr = 0xf0;
constexpr std::size_t kApicIrr = 0x200;
std::uint32_t lapic_reg(const kvm_lapic_state& s, std::size_t offset) {
  std::uint32_t value = 0;
  std::memcpy(&value, &s.regs[offset], sizeof value);
  return value;
}
void enable_lapic(kvm::Vcpu& vcpu) {
  kvm_lapic_state state{};
  ASSERT_TRUE(VMM_IOCTL(vcpu.fd(), KVM_GET_LAPIC, &state));
  const std::uint32_t svr = lapic_reg(state, kApicSvr) | 0x100;
  std::memcpy(&state.regs[kApicSvr], &svr, sizeof svr);
  auto rc = VMM_IOCTL(vcpu.fd(), KVM_SET_LAPIC, &state);
  ASSERT_TRUE(rc) << rc.error().message();
}
bool lapic_irr(const kvm::Vcpu& vcpu, std::uint8_t vector) {
  kvm_lapic_state state{};
  auto rc = VMM_IOCTL(vcpu.fd(), KVM_GET_LAPIC, &state);
  EXPECT_TRUE(rc) << rc.error().message();
  return (lapic_reg(state, kApicIrr + vector / 32 * 0x10) >> (vector % 32) & 1) != 0;
}

TEST(KvmGsiRouting, KvmAcceptsTheTableAndTheDefaultsKeepLegacyGsisWorking) {
  VMMLAB_REQUIRE_KVM();
  auto m = machine_with_irqchip();
  ASSERT_TRUE(m);
  KvmGsiRouting routing(m->vm);
  auto gsi = routing.allocate_msi_gsi();
  ASSERT_TRUE(gsi);
  auto rc = routing.set_msi(*gsi, {.address = 0xfee0'0000, .data = 0x45});
  ASSERT_TRUE(rc) << rc.error().message();
  EXPECT_EQ(routing.applied(), 1u);
  EXPECT_EQ(routing.entries().size(), 41u);

  // KVM_SET_GSI_ROUTING replaced the whole table; GSI 4 still reaches both controllers because ours has the defaults.
  devices::KvmIrqLine uart(m->vm, kUartGsi);
  ASSERT_TRUE(uart.raise());
  EXPECT_TRUE(pic_line(m->vm, kUartGsi));
  EXPECT_TRUE(ioapic_line(m->vm, kUartGsi));
  ASSERT_TRUE(uart.lower());
  EXPECT_FALSE(pic_line(m->vm, kUartGsi));

  // The pitfall the defaults avoid: a table of MSI routes alone disconnects the legacy GSIs.
  const std::array only_msi{msi_route(*gsi, {.address = 0xfee0'0000, .data = 0x45})};
  ASSERT_TRUE(set_gsi_routing(m->vm, only_msi));
  ASSERT_TRUE(uart.raise());
  EXPECT_FALSE(pic_line(m->vm, kUartGsi)) << "GSI 4 has no route any more";
  EXPECT_FALSE(ioapic_line(m->vm, kUartGsi));
  ASSERT_TRUE(uart.lower());
}

TEST(KvmGsiRouting, KvmRejectsABadTableAndATableWithoutIrqchip) {
  VMMLAB_REQUIRE_KVM();
  auto m = machine_with_irqchip();
  ASSERT_TRUE(m);
  const std::array bad{irqchip_route(30, KVM_IRQCHIP_IOAPIC, 24)};  // the IOAPIC has pins 0..23
  auto rc = set_gsi_routing(m->vm, bad);
  ASSERT_FALSE(rc);
  EXPECT_EQ(rc.error().operation, "KVM_SET_GSI_ROUTING");
  EXPECT_EQ(rc.error().errno_value, EINVAL);
  EXPECT_NE(rc.error().message().find("1 entries"), std::string::npos) << rc.error().message();

  auto kvm = kvm::Kvm::open();
  ASSERT_TRUE(kvm);
  auto plain = kvm->create_vm();
  ASSERT_TRUE(plain);
  KvmGsiRouting routing(*plain);
  auto applied = routing.apply();
  ASSERT_FALSE(applied) << "routing needs the in-kernel irqchip";
  EXPECT_EQ(applied.error().errno_value, EINVAL);
  EXPECT_EQ(routing.applied(), 0u);
}

TEST(Irqfd, AssignsSignalsAndDeassigns) {
  VMMLAB_REQUIRE_KVM();
  auto m = machine_with_irqchip();
  ASSERT_TRUE(m);
  auto irqfd = Irqfd::assign(m->vm, kUartGsi);
  ASSERT_TRUE(irqfd) << irqfd.error().message();
  EXPECT_TRUE(irqfd->assigned());
  EXPECT_EQ(irqfd->gsi(), kUartGsi);
  EXPECT_EQ(irqfd->resample_event(), nullptr);

  auto again = assign_irqfd(m->vm, irqfd->event(), kUartGsi);
  ASSERT_FALSE(again) << "KVM refuses an eventfd it already has";
  EXPECT_EQ(again.error().errno_value, EBUSY);
  EXPECT_NE(again.error().message().find("GSI 4"), std::string::npos) << again.error().message();

  // An edge irqfd asserts and de-asserts: the PIC (edge-triggered at reset) latches it in IRR.
  EXPECT_EQ(irqchip_state(m->vm, KVM_IRQCHIP_PIC_MASTER).chip.pic.irr & (1 << kUartGsi), 0);
  ASSERT_TRUE(irqfd->trigger());
  EXPECT_TRUE(eventually([&] { return (irqchip_state(m->vm, KVM_IRQCHIP_PIC_MASTER).chip.pic.irr >> kUartGsi & 1); }))
      << "the PIC never saw the irqfd's edge";

  ASSERT_TRUE(irqfd->deassign());
  EXPECT_FALSE(irqfd->assigned());
  EXPECT_TRUE(irqfd->deassign()) << "idempotent";
  // Deassigned for real: KVM takes the same eventfd again.
  auto reassigned = assign_irqfd(m->vm, irqfd->event(), kUartGsi);
  ASSERT_TRUE(reassigned) << reassigned.error().message();
  ASSERT_TRUE(deassign_irqfd(m->vm, irqfd->event(), kUartGsi));
}

TEST(MsixRoutes, AnMsiThroughTheIrqfdReachesTheLapicWithTheGuestsVector) {
  VMMLAB_REQUIRE_KVM();
  auto m = machine_with_irqchip();
  ASSERT_TRUE(m);
  auto vcpu = m->vm.create_vcpu(0);  // the destination: APIC ID 0
  ASSERT_TRUE(vcpu) << vcpu.error().message();
  enable_lapic(*vcpu);

  KvmGsiRouting routing(m->vm);
  KvmIrqfdBinder binder(m->vm);
  auto routes = MsixRoutes::create(2, routing, binder);
  ASSERT_TRUE(routes) << routes.error().message();
  auto table = pci::MsixTable::create(2, **routes);
  ASSERT_TRUE(table);
  ASSERT_TRUE((*routes)->attach(**table));

  // The guest's driver: vector 1 to APIC ID 0, fixed delivery, vector 0x45; unmask; enable MSI-X.
  auto& t = **table;
  const auto write32 = [&](std::uint64_t offset, std::uint32_t value) {
    const std::array<std::uint8_t, 4> b{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8),
                                        static_cast<std::uint8_t>(value >> 16), static_cast<std::uint8_t>(value >> 24)};
    t.write_table(PCI_MSIX_ENTRY_SIZE + offset, b);  // vector 1
  };
  write32(PCI_MSIX_ENTRY_LOWER_ADDR, 0xfee0'0000);
  write32(PCI_MSIX_ENTRY_DATA, 0x45);
  write32(PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
  t.set_control(PCI_MSIX_FLAGS_ENABLE);
  ASSERT_FALSE((*routes)->last_error()) << (*routes)->last_error()->message();
  EXPECT_EQ(routing.msi(*(*routes)->gsi(1)), (pci::MsiMessage{.address = 0xfee0'0000, .data = 0x45}));

  EXPECT_FALSE(lapic_irr(*vcpu, 0x45));
  ASSERT_EQ(t.trigger(1), pci::MsixTrigger::Delivered);
  EXPECT_EQ((*routes)->route(1)->signals, 1u);
  EXPECT_TRUE(eventually([&] { return lapic_irr(*vcpu, 0x45); })) << "vector 0x45 never became pending in the LAPIC";

  // Vector reuse: the guest retargets vector 1 to 0x46; the route follows, the next signal carries it.
  write32(PCI_MSIX_ENTRY_DATA, 0x46);
  ASSERT_FALSE((*routes)->last_error()) << (*routes)->last_error()->message();
  EXPECT_FALSE(lapic_irr(*vcpu, 0x46));
  ASSERT_EQ(t.trigger(1), pci::MsixTrigger::Delivered);
  EXPECT_TRUE(eventually([&] { return lapic_irr(*vcpu, 0x46); })) << "vector 0x46 never became pending";
  (*table).reset();  // before the routes it signals into
}

// A real-mode loop: specific EOI for IRQ 4 on the master PIC (OCW2 0x64 to port 0x20, handled inside KVM, which runs
// the ack notifiers: the resampler), then an OUT to port 0xf4, which nothing in KVM handles: an exit to us.
constexpr std::array<std::uint8_t, 8> kEoiLoop{
    0xb0, 0x64,  // mov al, 0x64
    0xe6, 0x20,  // out 0x20, al
    0xe6, 0xf4,  // out 0xf4, al
    0xeb, 0xf8,  // jmp -8 (back to mov)
};
constexpr std::uint64_t kCodeAddress = 0x1000;

struct EoiGuest {
  Mmap memory;
  kvm::Vcpu vcpu;
};

std::optional<EoiGuest> eoi_guest(kvm::Vm& vm) {
  auto memory = Mmap::anonymous(0x10000);
  EXPECT_TRUE(memory);
  if (!memory) {
    return std::nullopt;
  }
  std::memcpy(memory->data() + kCodeAddress, kEoiLoop.data(), kEoiLoop.size());
  auto slot =
      vm.set_memory_slot({.slot = 0, .guest_address = 0, .size = memory->size(), .host_address = memory->data()});
  EXPECT_TRUE(slot) << slot.error().message();
  auto vcpu = vm.create_vcpu(0);
  EXPECT_TRUE(vcpu) << vcpu.error().message();
  if (!slot || !vcpu) {
    return std::nullopt;
  }
  auto sregs = vcpu->get_sregs();
  auto regs = vcpu->get_regs();
  EXPECT_TRUE(sregs && regs);
  if (!sregs || !regs) {
    return std::nullopt;
  }
  sregs->cs.base = 0;
  sregs->cs.selector = 0;
  regs->rip = kCodeAddress;
  regs->rflags = 0x2;  // IF clear: the asserted line is never delivered, only EOI'd
  EXPECT_TRUE(vcpu->set_sregs(*sregs));
  EXPECT_TRUE(vcpu->set_regs(*regs));
  return EoiGuest{std::move(*memory), std::move(*vcpu)};
}

// Runs the guest once round its loop: the EOI has happened when it exits on port 0xf4.
void guest_eoi(kvm::Vcpu& vcpu) {
  auto exit = vcpu.run();
  ASSERT_TRUE(exit) << exit.error().message();
  auto* io = std::get_if<kvm::IoExit>(&*exit);
  ASSERT_NE(io, nullptr) << "expected the OUT to port 0xf4";
  EXPECT_EQ(io->port, 0xf4);
}

TEST(IrqfdLine, StaysAssertedUntilTheGuestsEoiAndReassertsWhileTheLevelIsHigh) {
  VMMLAB_REQUIRE_KVM();
  auto m = machine_with_irqchip();
  ASSERT_TRUE(m);
  auto guest = eoi_guest(m->vm);
  ASSERT_TRUE(guest);
  auto line = IrqfdLine::create(m->vm, kUartGsi, IrqfdLine::Resampler::Manual);
  ASSERT_TRUE(line) << line.error().message();
  auto& l = **line;
  EXPECT_EQ(l.gsi(), kUartGsi);
  EXPECT_FALSE(pic_line(m->vm, kUartGsi));

  ASSERT_TRUE(l.raise());
  ASSERT_TRUE(eventually([&] { return pic_line(m->vm, kUartGsi); })) << "the irqfd never asserted GSI 4";
  EXPECT_TRUE(ioapic_line(m->vm, kUartGsi)) << "the default routes reach the IOAPIC too";
  ASSERT_TRUE(l.raise());
  EXPECT_EQ(l.asserts(), 1u) << "already high: no second write";

  // The device is serviced and lowers: only recorded. KVM holds the line until the EOI.
  ASSERT_TRUE(l.lower());
  EXPECT_FALSE(l.level());
  EXPECT_TRUE(pic_line(m->vm, kUartGsi));
  EXPECT_EQ(l.handle_resample(), false) << "no EOI yet";

  guest_eoi(guest->vcpu);
  EXPECT_FALSE(pic_line(m->vm, kUartGsi)) << "KVM de-asserted at the EOI";
  EXPECT_FALSE(ioapic_line(m->vm, kUartGsi));
  EXPECT_EQ(l.handle_resample(), true) << "and signalled the resample eventfd";
  EXPECT_EQ(l.asserts(), 1u) << "level low: not re-asserted";
  EXPECT_EQ(l.resamples(), 1u);

  // Raised again and still high at the EOI (the guest EOI'd without servicing the device): re-asserted.
  ASSERT_TRUE(l.raise());
  ASSERT_TRUE(eventually([&] { return pic_line(m->vm, kUartGsi); }));
  guest_eoi(guest->vcpu);
  EXPECT_FALSE(pic_line(m->vm, kUartGsi));
  EXPECT_EQ(l.handle_resample(), true);
  EXPECT_EQ(l.asserts(), 3u) << "raise, then the re-assert";
  EXPECT_TRUE(eventually([&] { return pic_line(m->vm, kUartGsi); })) << "still high: asserted again";
  EXPECT_EQ(l.resamples(), 2u);
}

TEST(IrqfdLine, ItsResampleThreadReassertsAHighLineAfterTheEoi) {
  VMMLAB_REQUIRE_KVM();
  auto m = machine_with_irqchip();
  ASSERT_TRUE(m);
  auto guest = eoi_guest(m->vm);
  ASSERT_TRUE(guest);
  auto line = IrqfdLine::create(m->vm, kUartGsi);  // Resampler::Thread
  ASSERT_TRUE(line) << line.error().message();
  auto& l = **line;

  ASSERT_TRUE(l.raise());
  ASSERT_TRUE(eventually([&] { return pic_line(m->vm, kUartGsi); }));
  guest_eoi(guest->vcpu);
  EXPECT_TRUE(eventually([&] { return l.resamples() == 1; })) << "the thread never saw the EOI";
  EXPECT_TRUE(eventually([&] { return l.asserts() == 2 && pic_line(m->vm, kUartGsi); }))
      << "the thread did not re-assert the high line";

  ASSERT_TRUE(l.lower());
  guest_eoi(guest->vcpu);
  EXPECT_TRUE(eventually([&] { return l.resamples() == 2; }));
  EXPECT_FALSE(pic_line(m->vm, kUartGsi)) << "low at the EOI: stays de-asserted";
  EXPECT_EQ(l.asserts(), 2u);
  EXPECT_FALSE(l.last_error());
  line->reset();  // stops and joins the thread, then deassigns
}

TEST(IrqfdLine, DrivesTheUnchangedUartAsALevelTriggeredLine) {
  VMMLAB_REQUIRE_KVM();
  auto m = machine_with_irqchip();
  ASSERT_TRUE(m);
  auto guest = eoi_guest(m->vm);
  ASSERT_TRUE(guest);
  auto line = IrqfdLine::create(m->vm, kUartGsi, IrqfdLine::Resampler::Manual);
  ASSERT_TRUE(line) << line.error().message();
  auto& l = **line;
  devices::Uart16550 uart(l);
  const auto write_reg = [&](std::uint64_t offset, std::uint8_t value) {
    const std::array<std::uint8_t, 1> b{value};
    uart.write(offset, b);
  };
  write_reg(4, 0x08);  // MCR: OUT2, the PC's interrupt gate
  write_reg(1, 0x01);  // IER: received data available

  const std::array<std::uint8_t, 1> byte{'a'};
  ASSERT_EQ(uart.enqueue_input(byte), 1u);
  ASSERT_TRUE(eventually([&] { return pic_line(m->vm, kUartGsi); })) << "the UART's interrupt never reached the PIC";
  EXPECT_TRUE(l.level());

  // The guest EOIs without reading the byte: the UART still asserts, so the line comes back.
  guest_eoi(guest->vcpu);
  ASSERT_EQ(l.handle_resample(), true);
  EXPECT_TRUE(eventually([&] { return pic_line(m->vm, kUartGsi); })) << "re-asserted while data is waiting";

  // The guest reads the byte (the UART lowers), then EOIs: the line stays low.
  std::array<std::uint8_t, 1> rbr{};
  uart.read(0, rbr);
  EXPECT_EQ(rbr[0], 'a');
  EXPECT_FALSE(l.level());
  guest_eoi(guest->vcpu);
  ASSERT_EQ(l.handle_resample(), true);
  EXPECT_FALSE(pic_line(m->vm, kUartGsi));
  EXPECT_EQ(l.asserts(), 2u);
  EXPECT_FALSE(uart.last_irq_error());
}

}  // namespace
}  // namespace vmm::irq
