// Lab 02's checks. Built twice: against your code in exercises/ (lab02_tests_exercises) and against the reference
// in solutions/ (lab02_tests_solutions). See labs/02-memory/README.md.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <guest/checksum.hpp>
#include <guest/lab02_high_ram.hpp>
#include <guest/lab02_rom.hpp>

#include "lab02.hpp"
#include "long_mode_vm.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/testing/kvm.hpp"
#include "vmmlab/boot_info.h"

namespace lab02 {
// How gtest shows a RomWrite in a failure message.
void PrintTo(const RomWrite& w, std::ostream* os) {
  *os << fmt::format("{{{:#x}, {} bytes, {:#x}}}", w.address, w.length, w.value);
}
}  // namespace lab02

namespace {

using vmm::memory::GuestAddress;
using vmm::stage02::LongModeVm;
namespace layout = vmm::stage02::layout;

const vmm::kvm::MemorySlot* find_slot(const LongModeVm& vm, std::uint32_t slot) {
  const auto slots = const_cast<LongModeVm&>(vm).vm().memory_slots();
  const auto it = std::ranges::find(slots, slot, &vmm::kvm::MemorySlot::slot);
  return it == slots.end() ? nullptr : &*it;
}

// stage01's run_vcpu stops at the first exit that is not port I/O, HLT or a signal: an MMIO exit is "unhandled".
// Exercise 2 needs a loop that gives MMIO exits to a handler and carries on, so here is a small one. It speaks the
// guest runtime's report channel like LongModeVm::run, and stops at HLT or at anything else.
struct MmioRun {
  bool halted = false;
  std::string stopped_on;  // what stopped it, when not HLT
  std::string serial;
  std::vector<std::uint32_t> reports;
  std::optional<std::uint32_t> exit_status;
  std::size_t mmio_exits = 0;
};

MmioRun run_with_mmio(vmm::kvm::Vcpu& vcpu, const std::function<bool(const vmm::kvm::MmioExit&)>& on_mmio) {
  MmioRun out;
  for (int n = 0; n < 10000; ++n) {
    auto exit = vcpu.run();
    if (!exit) {
      out.stopped_on = exit.error().message();
      return out;
    }
    if (auto* io = std::get_if<vmm::kvm::IoExit>(&*exit); io && io->direction == vmm::kvm::IoDirection::Out) {
      for (std::uint32_t i = 0; i < io->count; ++i) {
        std::uint32_t value = 0;
        std::memcpy(&value, io->item(i).data(), std::min<std::size_t>(io->size, sizeof(value)));
        if (io->port == VMMLAB_PORT_CONSOLE) {
          out.serial.push_back(static_cast<char>(value & 0xff));
        } else if (io->port == VMMLAB_PORT_REPORT) {
          out.reports.push_back(value);
        } else if (io->port == VMMLAB_PORT_EXIT) {
          out.exit_status = value;
        }
      }
      continue;
    }
    if (auto* mmio = std::get_if<vmm::kvm::MmioExit>(&*exit)) {
      ++out.mmio_exits;
      if (on_mmio(*mmio)) {
        continue;  // the next KVM_RUN completes the instruction and the guest goes on
      }
    } else if (std::holds_alternative<vmm::kvm::HltExit>(*exit)) {
      out.halted = true;
      return out;
    } else if (std::holds_alternative<vmm::kvm::InterruptedExit>(*exit)) {
      continue;
    }
    out.stopped_on = vmm::kvm::describe(*exit);
    return out;
  }
  out.stopped_on = "too many exits";
  return out;
}

// Points the boot info's input buffer at `address` (anywhere in guest-physical memory).
void set_input_at(const LongModeVm& vm, std::uint64_t address, std::uint64_t size) {
  const auto base = layout::kBootInfo;
  ASSERT_TRUE(vm.memory().write_obj(GuestAddress(base + offsetof(vmmlab_boot_info, input)), address));
  ASSERT_TRUE(vm.memory().write_obj(GuestAddress(base + offsetof(vmmlab_boot_info, input_size)), size));
}

// ---- Exercise 1: high RAM --------------------------------------------------------------------------------------

TEST(Exercise1, HighRamIsANewSlot) {
  VMMLAB_REQUIRE_KVM();
  auto vm = LongModeVm::create(vmm::guest::lab02_high_ram());
  ASSERT_TRUE(vm) << vm.error().message();
  const auto slots_before = vm->vm().memory_slots().size();
  auto high = lab02::add_high_ram(*vm, GuestAddress(lab02::kHighRam), lab02::kHighRamSize);
  ASSERT_TRUE(high) << high.error().message();
  EXPECT_EQ(high->region.start(), GuestAddress(lab02::kHighRam));
  EXPECT_EQ(high->region.size(), lab02::kHighRamSize);
  EXPECT_EQ(vm->vm().memory_slots().size(), slots_before + 1) << "one new slot, the old ones untouched";
  const auto* slot = find_slot(*vm, high->slot);
  ASSERT_NE(slot, nullptr) << "slot " << high->slot << " is not registered with the VM";
  EXPECT_EQ(slot->guest_address, lab02::kHighRam);
  EXPECT_EQ(slot->size, lab02::kHighRamSize);
  EXPECT_EQ(slot->host_address, high->region.host_address()) << "KVM must be given the region's own host memory";
  EXPECT_EQ(slot->flags, 0u) << "plain RAM: neither dirty-logged nor read-only";
}

TEST(Exercise1, TheGuestChecksumsABufferInHighRam) {
  VMMLAB_REQUIRE_KVM();
  auto vm = LongModeVm::create(vmm::guest::lab02_high_ram());
  ASSERT_TRUE(vm) << vm.error().message();
  auto high = lab02::add_high_ram(*vm, GuestAddress(lab02::kHighRam), lab02::kHighRamSize);
  ASSERT_TRUE(high) << high.error().message();

  // The VMM writes the buffer through its own mapping of the region: host-virtual, not guest-physical.
  const auto input = vmm::stage02::input_pattern(4096, 11);
  std::ranges::copy(input, high->region.bytes().begin());
  set_input_at(*vm, lab02::kHighRam, input.size());

  auto outcome = vm->run();
  ASSERT_TRUE(outcome) << outcome.error().message();
  ASSERT_EQ(outcome->reason, vmm::stage01::StopReason::Halted)
      << "the guest did not finish (a KVM_EXIT_MMIO at 0x100000000 means no slot there):\n"
      << outcome->detail;
  EXPECT_EQ(vm->report().exit_status, 0u);
  const auto expected = vmm::stage02::fnv1a64(input);
  auto result = vm->memory().read_obj<std::uint64_t>(GuestAddress(layout::kResult));
  ASSERT_TRUE(result);
  EXPECT_EQ(*result, expected) << "the guest's checksum of the high-RAM buffer";
  // ... and the guest's write to the top of high RAM is in the host mapping the VMM owns.
  std::uint64_t in_high_ram = 0;
  std::memcpy(&in_high_ram, high->region.bytes().data() + (LAB02_HIGH_RAM_RESULT - lab02::kHighRam),
              sizeof(in_high_ram));
  EXPECT_EQ(in_high_ram, expected);
}

// ---- Exercise 2: a ROM, and the MMIO exit a write to it makes ------------------------------------------------

TEST(Exercise2, TheRomIsAReadOnlySlot) {
  VMMLAB_REQUIRE_KVM();
  auto vm = LongModeVm::create(vmm::guest::lab02_rom());
  ASSERT_TRUE(vm) << vm.error().message();
  const auto contents = vmm::stage02::input_pattern(256, 3);
  auto rom = lab02::add_rom(*vm, GuestAddress(lab02::kRom), lab02::kRomSize, contents);
  ASSERT_TRUE(rom) << rom.error().message();
  EXPECT_EQ(rom->region.range(), (vmm::memory::GuestRange{GuestAddress(lab02::kRom), lab02::kRomSize}));
  EXPECT_TRUE(std::equal(contents.begin(), contents.end(), rom->region.bytes().begin())) << "the ROM's contents";
  const auto* slot = find_slot(*vm, rom->slot);
  ASSERT_NE(slot, nullptr) << "slot " << rom->slot << " is not registered with the VM";
  EXPECT_EQ(slot->guest_address, lab02::kRom);
  EXPECT_EQ(slot->host_address, rom->region.host_address());
  EXPECT_EQ(slot->flags, std::uint32_t{KVM_MEM_READONLY});
}

TEST(Exercise2, RecordsOnlyWritesInsideTheRom) {
  const vmm::memory::GuestRange rom{GuestAddress(0xffff0000), 0x10000};
  std::uint8_t bytes[8] = {0xef, 0xbe, 0xad, 0xde, 0x11, 0x22, 0x33, 0x44};
  std::vector<lab02::RomWrite> writes;
  const vmm::kvm::MmioExit write{.address = 0xffff0010, .length = 4, .is_write = true, .data = {bytes, 4}};
  EXPECT_TRUE(lab02::record_rom_write(write, rom, writes)) << "a write inside the ROM is handled";
  const vmm::kvm::MmioExit write8{.address = 0xfffffff8, .length = 8, .is_write = true, .data = {bytes, 8}};
  EXPECT_TRUE(lab02::record_rom_write(write8, rom, writes)) << "the last 8 bytes of the ROM";
  const vmm::kvm::MmioExit outside{.address = 0xfee00000, .length = 4, .is_write = true, .data = {bytes, 4}};
  EXPECT_FALSE(lab02::record_rom_write(outside, rom, writes)) << "not the ROM: someone else's MMIO";
  const vmm::kvm::MmioExit read{.address = 0xffff0010, .length = 4, .is_write = false, .data = {bytes, 4}};
  EXPECT_FALSE(lab02::record_rom_write(read, rom, writes)) << "reads of a ROM never exit; this is not one";
  const std::vector<lab02::RomWrite> expected{{.address = 0xffff0010, .length = 4, .value = 0xdeadbeef},
                                              {.address = 0xfffffff8, .length = 8, .value = 0x44332211deadbeef}};
  EXPECT_EQ(writes, expected);
}

TEST(Exercise2, TheGuestReadsTheRomAndItsWriteExits) {
  VMMLAB_REQUIRE_KVM();
  auto vm = LongModeVm::create(vmm::guest::lab02_rom());
  ASSERT_TRUE(vm) << vm.error().message();
  const auto contents = vmm::stage02::input_pattern(256, 3);
  auto rom = lab02::add_rom(*vm, GuestAddress(lab02::kRom), lab02::kRomSize, contents);
  ASSERT_TRUE(rom) << rom.error().message();

  std::vector<lab02::RomWrite> writes;
  auto run = run_with_mmio(vm->vcpu(), [&](const vmm::kvm::MmioExit& mmio) {
    return lab02::record_rom_write(mmio, rom->region.range(), writes);
  });
  EXPECT_TRUE(run.halted) << "the run loop stopped on: " << run.stopped_on;
  std::uint64_t id = 0;
  std::uint32_t poked = 0;
  std::memcpy(&id, contents.data(), sizeof(id));
  std::memcpy(&poked, contents.data() + (LAB02_ROM_POKE - lab02::kRom), sizeof(poked));
  const std::vector<std::uint32_t> reports{static_cast<std::uint32_t>(id), static_cast<std::uint32_t>(id >> 32), poked,
                                           poked};
  EXPECT_EQ(run.reports, reports) << "the ROM's first word, then the poked word before and after the write";
  EXPECT_EQ(run.exit_status, 0u) << run.serial;
  EXPECT_EQ(run.mmio_exits, 1u) << "reads come from memory: only the write exits";
  const std::vector<lab02::RomWrite> expected{{.address = LAB02_ROM_POKE, .length = 4, .value = LAB02_ROM_POKE_VALUE}};
  EXPECT_EQ(writes, expected);
  EXPECT_TRUE(std::equal(contents.begin(), contents.end(), rom->region.bytes().begin())) << "the ROM is unchanged";
}

// ---- Exercise 3: 1 GiB pages ----------------------------------------------------------------------------------

TEST(Exercise3, TablesAreAPml4AndAPdptOfOneGigabytePages) {
  auto region = vmm::memory::GuestMemoryRegion::create(GuestAddress(0), 0x10000);
  ASSERT_TRUE(region);
  std::ranges::fill(region->bytes(), std::byte{0xcc});  // stale garbage the tables must overwrite
  std::vector<vmm::memory::GuestMemoryRegion> regions;
  regions.push_back(std::move(*region));
  auto memory = vmm::memory::GuestMemory::from_regions(std::move(regions));
  ASSERT_TRUE(memory);

  constexpr std::uint64_t k1GiB = 1ull << 30;
  auto tables = lab02::write_identity_page_tables_1g(*memory, GuestAddress(0x4000), 8 * k1GiB);
  ASSERT_TRUE(tables) << tables.error().message();
  EXPECT_EQ(tables->pml4, GuestAddress(0x4000));
  EXPECT_EQ(tables->pages, (std::vector<GuestAddress>{GuestAddress(0x4000), GuestAddress(0x5000)}))
      << "two table pages: no page directories";
  EXPECT_EQ(tables->mapped_bytes, 8 * k1GiB);

  auto entry = [&](std::uint64_t table, std::uint64_t i) {
    return memory->read_obj<std::uint64_t>(GuestAddress(table + 8 * i)).value_or(0xbad);
  };
  EXPECT_EQ(entry(0x4000, 0), 0x5000u | 0x23) << "PML4[0] -> PDPT, present | writable | accessed";
  EXPECT_EQ(entry(0x4000, 1), 0u) << "the rest of the PML4 is empty";
  for (std::uint64_t i = 0; i < 8; ++i) {
    // 0xe3 = present | writable | accessed | dirty | PS (bit 7: this PDPTE maps a 1 GiB page).
    EXPECT_EQ(entry(0x5000, i), i * k1GiB | 0xe3) << "PDPT[" << i << "]";
  }
  EXPECT_EQ(entry(0x5000, 8), 0u) << "nothing mapped past 8 GiB";
  EXPECT_EQ(entry(0x5000, 511), 0u);

  EXPECT_FALSE(lab02::write_identity_page_tables_1g(*memory, GuestAddress(0x4000), 0)) << "0 bytes";
  EXPECT_FALSE(lab02::write_identity_page_tables_1g(*memory, GuestAddress(0x4000), k1GiB + (2 << 20)))
      << "not a multiple of 1 GiB";
  EXPECT_FALSE(lab02::write_identity_page_tables_1g(*memory, GuestAddress(0x4000), 513 * k1GiB)) << "over 512 GiB";
  EXPECT_FALSE(lab02::write_identity_page_tables_1g(*memory, GuestAddress(0x4800), k1GiB)) << "unaligned base";
}

}  // namespace
