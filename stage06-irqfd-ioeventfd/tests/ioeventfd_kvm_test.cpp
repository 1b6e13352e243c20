// Ioeventfd and NotifyIoeventfds on the real /dev/kvm: a guest write to a registered address signals the eventfd and
// never reaches userspace (counted with the vCPU loop's ExitCounters); registrations follow BAR0 and activation.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "vmm/event/event_fd.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/machine/exit_counters.hpp"
#include "vmm/machine/vcpu_loop.hpp"
#include "vmm/mmap.hpp"
#include "vmm/testing/kvm.hpp"
#include "vmm/virtio/notify_ioeventfds.hpp"

namespace vmm::virtio {
namespace {

// A real-mode guest assembled by hand: a few stores and OUTs, then HLT (no irqchip, so HLT exits to the VMM and ends
// run_vcpu_loop). 64 KiB of RAM at 0; DS = 0x1000, so a store to DS:off reaches guest-physical 0x10000 + off, which
// no memory slot backs: an MMIO access.
constexpr std::uint64_t kRamSize = 0x10000;
constexpr std::uint64_t kCodeAddress = 0x1000;
constexpr std::uint64_t kDataSegmentBase = 0x10000;

class Guest {
 public:
  Guest() { emit({0xb8, 0x00, 0x10, 0x8e, 0xd8}); }  // mov ax, 0x1000; mov ds, ax
  // mov word [offset], value: a 2-byte MMIO write at kDataSegmentBase + offset.
  Guest& store16(std::uint16_t offset, std::uint16_t value) {
    emit({0xc7, 0x06, lo(offset), hi(offset), lo(value), hi(value)});
    return *this;
  }
  // mov byte [offset], value: a 1-byte MMIO write.
  Guest& store8(std::uint16_t offset, std::uint8_t value) {
    emit({0xc6, 0x06, lo(offset), hi(offset), value});
    return *this;
  }
  // mov dx, port; mov ax, value; out dx, ax: a 2-byte port write.
  Guest& out16(std::uint16_t port, std::uint16_t value) {
    emit({0xba, lo(port), hi(port), 0xb8, lo(value), hi(value), 0xef});
    return *this;
  }
  [[nodiscard]] std::vector<std::uint8_t> hlt() const {
    auto code = code_;
    code.push_back(0xf4);
    return code;
  }

 private:
  static std::uint8_t lo(std::uint16_t v) { return static_cast<std::uint8_t>(v); }
  static std::uint8_t hi(std::uint16_t v) { return static_cast<std::uint8_t>(v >> 8); }
  void emit(std::initializer_list<std::uint8_t> bytes) { code_.insert(code_.end(), bytes); }
  std::vector<std::uint8_t> code_;
};

// One VM with RAM at 0 and one vCPU; `run` loads a program and runs it to HLT with the stage03 loop, counting exits.
struct Machine {
  kvm::Kvm kvm;
  kvm::Vm vm;
  Mmap ram;
  kvm::Vcpu vcpu;

  static Machine create() {
    auto kvm = kvm::Kvm::open();
    EXPECT_TRUE(kvm) << kvm.error().message();
    auto vm = kvm->create_vm();
    EXPECT_TRUE(vm) << vm.error().message();
    auto ram = Mmap::anonymous(kRamSize);
    EXPECT_TRUE(ram);
    EXPECT_TRUE(vm->set_memory_slot(
        {.slot = 0, .guest_address = 0, .size = kRamSize, .host_address = ram->data(), .flags = 0}));
    EXPECT_TRUE(vm->set_tss_address(0xfffb'd000));
    auto vcpu = vm->create_vcpu(0);
    EXPECT_TRUE(vcpu) << vcpu.error().message();
    return Machine{std::move(*kvm), std::move(*vm), std::move(*ram), std::move(*vcpu)};
  }

  // Runs `code` from kCodeAddress in real mode until HLT; the exits it caused.
  machine::ExitCountersSnapshot run(const std::vector<std::uint8_t>& code) {
    std::memcpy(ram.data() + kCodeAddress, code.data(), code.size());
    auto sregs = vcpu.get_sregs();
    EXPECT_TRUE(sregs);
    sregs->cs.base = 0;
    sregs->cs.selector = 0;
    EXPECT_TRUE(vcpu.set_sregs(*sregs));
    kvm_regs regs{};
    regs.rip = kCodeAddress;
    regs.rflags = 0x2;
    EXPECT_TRUE(vcpu.set_regs(regs));
    machine::Buses buses;  // empty: unclaimed accesses read all-ones and are dropped
    machine::ExitCounters counters;
    const std::atomic<bool> stop{false};
    auto outcome = machine::run_vcpu_loop(vcpu, buses, stop, {.trace = false, .counters = &counters});
    EXPECT_TRUE(outcome) << outcome.error().message();
    if (outcome) {
      EXPECT_EQ(outcome->reason, machine::VcpuStop::Halted) << outcome->detail;
    }
    return counters.snapshot();
  }
};

std::uint64_t take(const event::EventFd& event) {
  auto value = event.read();
  EXPECT_TRUE(value) << value.error().message();
  return value && *value ? **value : 0;
}

using machine::ExitReason;

TEST(Ioeventfd, AGuestWriteSignalsTheEventfdWithoutAUserspaceExit) {
  VMMLAB_REQUIRE_KVM();
  auto m = Machine::create();
  auto event = event::EventFd::create();
  ASSERT_TRUE(event);
  const auto code = Guest().store16(0x3000, 0).store16(0x3000, 0).store16(0x3000, 0).out16(0x80, 1).hlt();

  // Without a registration: three MMIO write exits, one I/O exit, the HLT.
  auto before = m.run(code);
  EXPECT_EQ(before.count(ExitReason::MmioWrite), 3u);
  EXPECT_EQ(before.count(ExitReason::IoOut), 1u);
  EXPECT_EQ(before.count(ExitReason::Hlt), 1u);
  EXPECT_EQ(before.mmio.at(kDataSegmentBase + 0x3000), (machine::AccessCount{.reads = 0, .writes = 3}));
  EXPECT_EQ(take(*event), 0u);

  {
    auto registration =
        Ioeventfd::create(m.vm, *event, {.address = kDataSegmentBase + 0x3000, .length = 2, .datamatch = {}});
    ASSERT_TRUE(registration) << registration.error().message();
    EXPECT_TRUE(registration->assigned());
    auto during = m.run(code);
    EXPECT_EQ(during.count(ExitReason::MmioWrite), 0u) << "KVM completed the writes itself";
    EXPECT_TRUE(during.mmio.empty());
    EXPECT_EQ(during.count(ExitReason::IoOut), 1u);
    EXPECT_EQ(during.total(), 2u) << "only the OUT and the HLT came back";
    EXPECT_EQ(take(*event), 3u) << "one signal per write, coalesced in the counter";
  }

  // Deassigned by the destructor: the writes exit again.
  auto after = m.run(code);
  EXPECT_EQ(after.count(ExitReason::MmioWrite), 3u);
  EXPECT_EQ(take(*event), 0u);
}

TEST(Ioeventfd, LengthAndDatamatchMustMatchExactly) {
  VMMLAB_REQUIRE_KVM();
  auto m = Machine::create();
  auto event = event::EventFd::create();
  ASSERT_TRUE(event);
  auto registration =
      Ioeventfd::create(m.vm, *event, {.address = kDataSegmentBase + 0x3004, .length = 2, .datamatch = 1});
  ASSERT_TRUE(registration) << registration.error().message();
  const auto code = Guest()
                        .store16(0x3004, 1)  // matches
                        .store16(0x3004, 2)  // wrong value: exits
                        .store8(0x3004, 1)   // wrong width: exits
                        .hlt();
  auto exits = m.run(code);
  EXPECT_EQ(take(*event), 1u);
  EXPECT_EQ(exits.count(ExitReason::MmioWrite), 2u);
  EXPECT_EQ(exits.mmio.at(kDataSegmentBase + 0x3004).writes, 2u);
}

TEST(Ioeventfd, PortIoToo) {
  VMMLAB_REQUIRE_KVM();
  auto m = Machine::create();
  auto event = event::EventFd::create();
  ASSERT_TRUE(event);
  auto registration =
      Ioeventfd::create(m.vm, *event, {.address = 0x6000, .length = 2, .datamatch = {}, .space = IoeventfdSpace::Pio});
  ASSERT_TRUE(registration) << registration.error().message();
  auto exits = m.run(Guest().out16(0x6000, 7).out16(0x6000, 8).out16(0x6002, 9).hlt());
  EXPECT_EQ(take(*event), 2u);
  EXPECT_EQ(exits.count(ExitReason::IoOut), 1u);
  EXPECT_EQ(exits.pio.size(), 1u);
  EXPECT_EQ(exits.pio.at(0x6002).writes, 1u);
}

TEST(Ioeventfd, ASecondIdenticalRegistrationIsEexistAndDeassignFreesTheAddress) {
  VMMLAB_REQUIRE_KVM();
  auto m = Machine::create();
  auto event = event::EventFd::create();
  ASSERT_TRUE(event);
  const IoeventfdSpec spec{.address = 0xd000'3000, .length = 2, .datamatch = {}};
  auto first = Ioeventfd::create(m.vm, *event, spec);
  ASSERT_TRUE(first) << first.error().message();
  auto second = Ioeventfd::create(m.vm, *event, spec);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().errno_value, EEXIST);
  EXPECT_NE(second.error().message().find("KVM_IOEVENTFD"), std::string::npos) << second.error().message();
  EXPECT_NE(second.error().message().find("0xd0003000"), std::string::npos) << second.error().message();

  ASSERT_TRUE(first->deassign());
  EXPECT_FALSE(first->assigned());
  EXPECT_TRUE(first->deassign()) << "a second deassign does nothing";
  auto again = Ioeventfd::create(m.vm, *event, spec);
  EXPECT_TRUE(again) << "the address is free once deassigned: " << again.error().message();

  // Moving keeps exactly one registration alive.
  Ioeventfd moved = std::move(*again);
  EXPECT_TRUE(moved.assigned());
  EXPECT_FALSE(Ioeventfd::create(m.vm, *event, spec));
}

TEST(Ioeventfd, SpecsKvmWouldRefuseAreRefusedFirst) {
  VMMLAB_REQUIRE_KVM();
  auto m = Machine::create();
  auto event = event::EventFd::create();
  ASSERT_TRUE(event);
  EXPECT_FALSE(Ioeventfd::create(m.vm, *event, {.address = 0xd000'0000, .length = 3, .datamatch = {}}));
  EXPECT_FALSE(Ioeventfd::create(m.vm, *event, {.address = 0xd000'0000, .length = 0, .datamatch = 5}));
  auto port =
      Ioeventfd::create(m.vm, *event, {.address = 0xffff, .length = 2, .datamatch = {}, .space = IoeventfdSpace::Pio});
  ASSERT_FALSE(port);
  EXPECT_NE(port.error().message().find("pio 0xffff len 2"), std::string::npos) << port.error().message();
  // Length 0 (any width) is accepted on a kernel with KVM_CAP_IOEVENTFD_ANY_LENGTH.
  EXPECT_TRUE(Ioeventfd::create(m.vm, *event, {.address = 0xd000'0000, .length = 0, .datamatch = {}}));
}

// Two queues' eventfds, as a ThreadedDevice would own them.
struct Queues {
  event::EventFd q0 = *event::EventFd::create();
  event::EventFd q1 = *event::EventFd::create();
  std::vector<const event::EventFd*> pointers() const { return {&q0, &q1}; }
};

TEST(NotifyIoeventfds, RegisteredExactlyWhileBar0IsPlacedAndTheDeviceIsActive) {
  VMMLAB_REQUIRE_KVM();
  auto m = Machine::create();
  Queues queues;
  NotifyIoeventfds notify(m.vm, queues.pointers());
  using Addresses = std::vector<std::uint64_t>;

  EXPECT_EQ(notify.notify_address(0xc000'0000, 1), 0xc000'3004u);
  EXPECT_TRUE(notify.registered().empty());
  notify.bar0_placed(0xc000'0000);
  EXPECT_TRUE(notify.registered().empty()) << "placed, but not active";
  notify.set_active(true);
  EXPECT_EQ(notify.registered(), (Addresses{0xc000'3000, 0xc000'3004}));
  notify.set_active(true);  // repeated: no second registration (KVM would say EEXIST)
  notify.bar0_placed(0xc000'0000);
  EXPECT_EQ(notify.registered(), (Addresses{0xc000'3000, 0xc000'3004}));

  // The guest moves BAR0: a removal, then a placement elsewhere.
  notify.bar0_placed(std::nullopt);
  EXPECT_TRUE(notify.registered().empty());
  notify.bar0_placed(0xc010'0000);
  EXPECT_EQ(notify.registered(), (Addresses{0xc010'3000, 0xc010'3004}));
  notify.set_active(false);  // reset
  EXPECT_TRUE(notify.registered().empty());
  EXPECT_EQ(notify.bar0(), std::optional<std::uint64_t>(0xc010'0000));
  EXPECT_FALSE(notify.active());
  EXPECT_FALSE(notify.last_error()) << notify.last_error()->message();
  EXPECT_EQ(notify.error_count(), 0u);

  // Everything registered was really deassigned: the old addresses can be registered by someone else.
  for (const std::uint64_t address : {0xc000'3000ull, 0xc010'3000ull, 0xc010'3004ull}) {
    EXPECT_TRUE(Ioeventfd::create(m.vm, queues.q0, {.address = address, .length = 2, .datamatch = {}}))
        << std::hex << address;
  }
}

TEST(NotifyIoeventfds, GuestKicksReachTheQueueEventfdsOnlyWhileRegistered) {
  VMMLAB_REQUIRE_KVM();
  auto m = Machine::create();
  Queues queues;
  NotifyIoeventfds notify(m.vm, queues.pointers());
  // BAR0 at 0x10000: the guest's DS. Queue 0 at DS:0x3000, queue 1 at DS:0x3004.
  const auto kicks = Guest().store16(0x3000, 0).store16(0x3004, 1).store16(0x3004, 1).hlt();

  notify.set_active(true);
  notify.bar0_placed(kDataSegmentBase);
  auto registered = m.run(kicks);
  EXPECT_EQ(registered.count(ExitReason::MmioWrite), 0u);
  EXPECT_EQ(take(queues.q0), 1u);
  EXPECT_EQ(take(queues.q1), 2u);

  notify.set_active(false);
  auto unregistered = m.run(kicks);
  EXPECT_EQ(unregistered.count(ExitReason::MmioWrite), 3u) << "without registrations, kicks exit to the VMM";
  EXPECT_EQ(take(queues.q0), 0u);
  EXPECT_EQ(take(queues.q1), 0u);

  // Active again, but BAR0 elsewhere: the old addresses exit, nothing is signalled.
  notify.bar0_placed(0x20000);
  notify.set_active(true);
  auto moved = m.run(kicks);
  EXPECT_EQ(moved.count(ExitReason::MmioWrite), 3u);
  EXPECT_EQ(take(queues.q0) + take(queues.q1), 0u);
}

TEST(NotifyIoeventfds, ARefusedRegistrationIsKeptAsAnErrorAndTheOtherQueuesRegister) {
  VMMLAB_REQUIRE_KVM();
  auto m = Machine::create();
  Queues queues;
  auto event = event::EventFd::create();
  ASSERT_TRUE(event);
  // Someone else holds queue 1's address.
  auto squatter = Ioeventfd::create(m.vm, *event, {.address = 0xc000'3004, .length = 2, .datamatch = {}});
  ASSERT_TRUE(squatter);
  NotifyIoeventfds notify(m.vm, queues.pointers());
  notify.bar0_placed(0xc000'0000);
  notify.set_active(true);
  EXPECT_EQ(notify.registered(), (std::vector<std::uint64_t>{0xc000'3000}));
  ASSERT_TRUE(notify.last_error());
  EXPECT_EQ(notify.last_error()->errno_value, EEXIST);
  EXPECT_NE(notify.last_error()->message().find("queue 1"), std::string::npos) << notify.last_error()->message();
  EXPECT_EQ(notify.error_count(), 1u);
  notify.set_active(true);
  EXPECT_EQ(notify.error_count(), 1u) << "the same state is not retried";
}

TEST(NotifyIoeventfds, AZeroMultiplierWithSeveralQueuesRegistersNothing) {
  VMMLAB_REQUIRE_KVM();
  auto m = Machine::create();
  Queues queues;
  NotifyIoeventfds notify(m.vm, queues.pointers(), {.notify_offset = 0x3000, .multiplier = 0});
  notify.bar0_placed(0xc000'0000);
  notify.set_active(true);
  EXPECT_TRUE(notify.registered().empty());
  ASSERT_TRUE(notify.last_error());
  EXPECT_NE(notify.last_error()->message().find("multiplier"), std::string::npos);
}

}  // namespace
}  // namespace vmm::virtio
