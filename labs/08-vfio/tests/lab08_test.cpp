// Lab 08's checks. Built twice: against your code in exercises/ (lab08_tests_exercises) and against the reference in
// solutions/ (lab08_tests_solutions). See labs/08-vfio/README.md.
//
// The tests need no VFIO: the device is stage08's FakeVfioDevice (a PCI function made of memory that records what
// reaches it) behind the real VfioPciDevice, on a real PciRoot. The last tests use a real KVM VM (the host's
// /dev/kvm; no guest runs): the routes and irqfds are KVM's, and an interrupt is seen in the vCPU's LAPIC.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "fake_vfio_device.hpp"  // stage08-vfio/tests
#include "lab08.hpp"
#include "rng_on_msix_routes.hpp"  // stage06-irqfd-ioeventfd/tests: RoutingRecorder, AcceptingBinder
#include "vmm/devices/bus.hpp"
#include "vmm/devices/kvm_irq_line.hpp"
#include "vmm/event/event_fd.hpp"
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/irq/msix_routes.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/memory/region.hpp"
#include "vmm/pci/msix.hpp"
#include "vmm/pci/pci_root.hpp"
#include "vmm/testing/kvm.hpp"
#include "vmm/vfio/guest_ram_dma.hpp"
#include "vmm/vfio/msi.hpp"
#include "vmm/vfio/vfio_pci_device.hpp"

// How gtest shows the lab's types in a failure message.
namespace lab08 {
void PrintTo(const DmaOp& op, std::ostream* os) {
  *os << fmt::format("{} IOVA [0x{:x}, 0x{:x}) -> host 0x{:x}{}", op.kind == DmaOpKind::Map ? "map" : "unmap",
                     op.mapping.iova, op.mapping.iova + op.mapping.size, op.mapping.host_va,
                     op.mapping.readable && op.mapping.writable ? "" : " (not read-write)");
}
}  // namespace lab08
namespace vmm::vfio {
void PrintTo(const BarArea& area, std::ostream* os) {
  *os << fmt::format("[0x{:x}, 0x{:x})", area.offset, area.end());
}
void PrintTo(const DmaMapping& m, std::ostream* os) {
  *os << fmt::format("IOVA [0x{:x}, 0x{:x}) -> host 0x{:x}", m.iova, m.iova + m.size, m.host_va);
}
}  // namespace vmm::vfio
namespace vmm::pci {
void PrintTo(const MsiMessage& m, std::ostream* os) {
  *os << fmt::format("{{address 0x{:x}, data 0x{:x}}}", m.address, m.data);
}
}  // namespace vmm::pci

namespace {

using lab08::DmaOp;
using lab08::DmaOpKind;
using lab08::RamRegion;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using vmm::Result;
using vmm::pci::MsiMessage;
using vmm::pci::MsixCapability;
using vmm::stage06::testing::AcceptingBinder;
using vmm::stage06::testing::RoutingRecorder;
using vmm::vfio::BarArea;
using vmm::vfio::DmaMapping;
using vmm::vfio::MsiState;
using vmm::vfio::RegionInfo;
using vmm::vfio::SparseMmapArea;
using vmm::vfio::testing::FakeVfioDevice;
using vmm::vfio::testing::RecordingSlots;

constexpr std::uint64_t kKiB = 1ull << 10;
constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;
constexpr std::uint64_t kPage = 4 * kKiB;

// ---- Exercise 1: the DMA plan ----------------------------------------------------------------------------------

DmaMapping rw(std::uint64_t iova, std::uint64_t size, std::uint64_t host_va) {
  return {.iova = iova, .size = size, .host_va = host_va, .readable = true, .writable = true};
}
DmaOp map_op(std::uint64_t iova, std::uint64_t size, std::uint64_t host_va) {
  return {DmaOpKind::Map, rw(iova, size, host_va)};
}
DmaOp unmap_op(std::uint64_t iova, std::uint64_t size, std::uint64_t host_va) {
  return {DmaOpKind::Unmap, rw(iova, size, host_va)};
}

// Plays the VFIO container: records each call, and applies the container's own rules (stage08's DmaMappings: no
// overlaps, only whole mappings unmapped), so a plan in the wrong order fails here as it would in the kernel.
class RecordingMapper final : public vmm::vfio::DmaMapper {
 public:
  Result<void> map_dma(std::uint64_t iova, std::uint64_t size, const void* host_va, bool readable,
                       bool writable) override {
    const DmaMapping m{iova, size, reinterpret_cast<std::uint64_t>(host_va), readable, writable};
    calls.push_back({DmaOpKind::Map, m});
    return iommu.add(m);
  }
  Result<void> unmap_dma(std::uint64_t iova, std::uint64_t size) override {
    auto removed = iommu.remove(iova, size);
    calls.push_back({DmaOpKind::Unmap, removed ? *removed : DmaMapping{iova, size, 0, true, true}});
    return removed ? Result<void>{} : std::unexpected(removed.error());
  }
  std::vector<DmaOp> calls;
  vmm::vfio::DmaMappings iommu;  // what the IOMMU holds
};

// Makes the calls of `plan` on `mapper`, in order; the first failure stops it.
Result<void> apply_plan(const std::vector<DmaOp>& plan, vmm::vfio::DmaMapper& mapper) {
  for (const DmaOp& op : plan) {
    auto rc = op.kind == DmaOpKind::Map
                  ? mapper.map_dma(op.mapping.iova, op.mapping.size, reinterpret_cast<const void*>(op.mapping.host_va),
                                   op.mapping.readable, op.mapping.writable)
                  : mapper.unmap_dma(op.mapping.iova, op.mapping.size);
    if (!rc) {
      return rc;
    }
  }
  return {};
}

std::vector<DmaMapping> as_mappings(std::vector<RamRegion> regions) {
  std::sort(regions.begin(), regions.end(), [](const auto& a, const auto& b) { return a.gpa < b.gpa; });
  std::vector<DmaMapping> out;
  for (const auto& r : regions) {
    out.push_back(rw(r.gpa, r.size, r.host_va));
  }
  return out;
}

// Host addresses are only numbers to the plan: these need not be mapped.
constexpr std::uint64_t kHostA = 0x7f00'0000'0000;
constexpr std::uint64_t kHostB = 0x7f10'0000'0000;
constexpr std::uint64_t kHostC = 0x7f20'0000'0000;
constexpr std::uint64_t kHostD = 0x7f30'0000'0000;

TEST(Exercise1, TheFirstPlanMapsEveryRegionAtItsGuestPhysicalAddress) {
  // RAM below the PCI hole, stage02's output buffer at 2 GiB, RAM above 4 GiB; listed out of order.
  const std::vector<RamRegion> memory_map{
      {0x8000'0000, 128 * kKiB, kHostB}, {0, 16 * kMiB, kHostA}, {4 * kGiB, 2 * kMiB, kHostC}};
  auto plan = lab08::dma_plan(memory_map, {});
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(*plan, (std::vector<DmaOp>{map_op(0, 16 * kMiB, kHostA), map_op(0x8000'0000, 128 * kKiB, kHostB),
                                       map_op(4 * kGiB, 2 * kMiB, kHostC)}))
      << "one read-write mapping per region, IOVA = guest-physical address, by increasing IOVA";
}

TEST(Exercise1, WhatIsAlreadyMappedStaysMapped) {
  const std::vector<RamRegion> memory_map{{0, 16 * kMiB, kHostA}, {4 * kGiB, 2 * kMiB, kHostC}};
  const auto mapped = as_mappings(memory_map);
  auto plan = lab08::dma_plan(memory_map, mapped);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_TRUE(plan->empty()) << "nothing changed, yet the plan has " << plan->size() << " calls, the first "
                             << ::testing::PrintToString(plan->front());
}

TEST(Exercise1, RegionsThatWentMovedOrChangedAreUnmappedBeforeAnythingIsMapped) {
  const std::vector<DmaMapping> mapped{rw(0, 1 * kMiB, kHostA), rw(0x8000'0000, 128 * kKiB, kHostB),
                                       rw(4 * kGiB, 2 * kMiB, kHostC), rw(8 * kGiB, 1 * kMiB, kHostD)};
  const std::vector<RamRegion> memory_map{
      {8 * kGiB, 1 * kMiB, kHostD},       // unchanged: stays
      {4 * kGiB, 4 * kMiB, kHostC},       // grew: same IOVA and host address, new size
      {0, 1 * kMiB, kHostA + 64 * kMiB},  // replaced by other host memory at the same guest address
      {12 * kGiB, 1 * kMiB, kHostB},      // new (0x80000000 is gone)
  };
  auto plan = lab08::dma_plan(memory_map, mapped);
  ASSERT_TRUE(plan) << plan.error().message();
  EXPECT_EQ(*plan, (std::vector<DmaOp>{unmap_op(0, 1 * kMiB, kHostA), unmap_op(0x8000'0000, 128 * kKiB, kHostB),
                                       unmap_op(4 * kGiB, 2 * kMiB, kHostC), map_op(0, 1 * kMiB, kHostA + 64 * kMiB),
                                       map_op(4 * kGiB, 4 * kMiB, kHostC), map_op(12 * kGiB, 1 * kMiB, kHostB)}));
}

TEST(Exercise1, UnmapsGoFirstBecauseTheIommuRefusesAMappingOverAnother) {
  // The region moved by 1 MiB in guest-physical space: old and new overlap. Mapping the new one first fails.
  RecordingMapper mapper;
  ASSERT_TRUE(mapper.iommu.add(rw(0, 2 * kMiB, kHostA)));
  const std::vector<RamRegion> memory_map{{1 * kMiB, 2 * kMiB, kHostB}};
  auto plan = lab08::dma_plan(memory_map, mapper.iommu.list());
  ASSERT_TRUE(plan) << plan.error().message();
  auto applied = apply_plan(*plan, mapper);
  EXPECT_TRUE(applied) << "the container refused your plan: " << applied.error().message();
  EXPECT_EQ(mapper.iommu.list(), (std::vector<DmaMapping>{rw(1 * kMiB, 2 * kMiB, kHostB)}));
}

TEST(Exercise1, RegionsTheIommuCannotMapAreRefusedNamingTheirAddress) {
  const struct {
    const char* why;
    std::vector<RamRegion> memory_map;
    std::string named;
    std::string or_named = {};  // an overlap may be told from either side
  } cases[] = {
      {"empty", {{0, 16 * kMiB, kHostA}, {0x5000'0000, 0, kHostB}}, "0x50000000"},
      {"guest address not page-aligned", {{0x1800, 0x1000, kHostA}}, "0x1800"},
      {"size not whole pages", {{0x4000'0000, 0x1800, kHostA}}, "0x40000000"},
      {"host address not page-aligned", {{0x4000'0000, 0x1000, kHostA + 0x800}}, "0x40000000"},
      {"runs past 2^64", {{0xffff'ffff'ffff'f000, 0x2000, kHostA}}, "0xfffffffffffff000"},
      {"overlaps its neighbour", {{0x10'0000, 0x2000, kHostA}, {0x10'1000, 0x1000, kHostB}}, "0x100000", "0x101000"},
      {"listed twice", {{0x20'0000, 0x1000, kHostA}, {0x20'0000, 0x1000, kHostB}}, "0x200000"},
  };
  for (const auto& c : cases) {
    auto plan = lab08::dma_plan(c.memory_map, {});
    ASSERT_FALSE(plan) << c.why << ": planned " << ::testing::PrintToString(*plan);
    if (c.or_named.empty()) {
      EXPECT_THAT(plan.error().message(), HasSubstr(c.named)) << c.why;
    } else {
      EXPECT_THAT(plan.error().message(), AnyOf(HasSubstr(c.named), HasSubstr(c.or_named))) << c.why;
    }
  }
  // The very last page of the address space is a page like any other: its last byte is 2^64 - 1.
  auto last = lab08::dma_plan(std::vector<RamRegion>{{0xffff'ffff'ffff'f000, 0x1000, kHostA}}, {});
  ASSERT_TRUE(last) << "the last page of the IOVA space was refused: " << last.error().message();
  EXPECT_EQ(last->size(), 1U);
}

TEST(Exercise1, EveryPlanLeavesTheIommuEqualToTheMemoryMap) {
  // A VMM's life: boot, a DIMM hot-plugged, a region replaced (e.g. after migration), the DIMM unplugged.
  const std::vector<std::vector<RamRegion>> maps{
      {{0, 16 * kMiB, kHostA}, {0x8000'0000, 128 * kKiB, kHostB}},
      {{0, 16 * kMiB, kHostA}, {0x8000'0000, 128 * kKiB, kHostB}, {4 * kGiB, 1 * kGiB, kHostC}},
      {{0, 16 * kMiB, kHostD}, {0x8000'0000, 128 * kKiB, kHostB}, {4 * kGiB, 1 * kGiB, kHostC}},
      {{0x8000'0000, 128 * kKiB, kHostB}, {0, 16 * kMiB, kHostD}},
      {},
  };
  RecordingMapper mapper;
  for (std::size_t i = 0; i < maps.size(); ++i) {
    auto plan = lab08::dma_plan(maps[i], mapper.iommu.list());
    ASSERT_TRUE(plan) << "memory map " << i << ": " << plan.error().message();
    auto applied = apply_plan(*plan, mapper);
    ASSERT_TRUE(applied) << "memory map " << i << ": the container refused your plan: " << applied.error().message();
    EXPECT_EQ(mapper.iommu.list(), as_mappings(maps[i])) << "after the plan for memory map " << i;
    auto again = lab08::dma_plan(maps[i], mapper.iommu.list());
    ASSERT_TRUE(again);
    EXPECT_TRUE(again->empty()) << "memory map " << i << " planned twice: the second plan should do nothing";
  }
}

vmm::memory::GuestMemoryRegion ram(std::uint64_t gpa, std::uint64_t size) {
  auto made = vmm::memory::GuestMemoryRegion::create(vmm::memory::GuestAddress(gpa), size);
  EXPECT_TRUE(made) << made.error().message();
  return std::move(*made);
}
std::vector<RamRegion> regions_of(const vmm::memory::GuestMemory& memory) {
  std::vector<RamRegion> out;
  for (const auto& region : memory.regions()) {
    out.push_back({region.start().raw(), region.size(), reinterpret_cast<std::uint64_t>(region.host_address())});
  }
  return out;
}

TEST(Exercise1, YourPlansMakeTheCallsStage08sGuestRamDmaMakes) {
  // Real guest memory, followed by stage08's GuestRamDma on one mapper and by your plans on another.
  RecordingMapper stage08_mapper;
  RecordingMapper your_mapper;
  vmm::vfio::GuestRamDma dma(stage08_mapper);
  auto boot = vmm::memory::GuestMemory::from_regions({}).value();
  ASSERT_TRUE(boot.add_region(ram(0, 2 * kMiB)));
  ASSERT_TRUE(boot.add_region(ram(0x8000'0000, 128 * kKiB)));
  // The second map replaces the first region with new memory (the old map stays alive, so that the new memory cannot
  // land at the same host address) and adds one above 4 GiB.
  auto later = vmm::memory::GuestMemory::from_regions({}).value();
  ASSERT_TRUE(later.add_region(ram(0, 2 * kMiB)));
  ASSERT_TRUE(later.add_region(ram(0x8000'0000, 128 * kKiB)));
  ASSERT_TRUE(later.add_region(ram(4 * kGiB, 1 * kMiB)));

  for (const vmm::memory::GuestMemory* memory : {&boot, &later, &later}) {
    stage08_mapper.calls.clear();
    your_mapper.calls.clear();
    ASSERT_TRUE(dma.sync(*memory));
    auto plan = lab08::dma_plan(regions_of(*memory), your_mapper.iommu.list());
    ASSERT_TRUE(plan) << plan.error().message();
    ASSERT_TRUE(apply_plan(*plan, your_mapper));
    EXPECT_EQ(your_mapper.calls, stage08_mapper.calls);
    EXPECT_EQ(your_mapper.iommu.list(), stage08_mapper.iommu.list());
  }
}

// ---- A passthrough device on a PCI bus, as the guest sees it ---------------------------------------------------

constexpr std::uint8_t kSlot = 5;
constexpr std::uint8_t kMsiCap = 0x40;
constexpr std::uint8_t kMsixCap = 0x70;
constexpr std::uint64_t kBar0 = 0xc000'0000;

// Records which eventfd is bound to which GSI (by descriptor number), as KVM_IRQFD would hold them.
class RecordingBinder final : public vmm::irq::IrqfdBinder {
 public:
  Result<void> bind(const vmm::event::EventFd& event, std::uint32_t gsi) override {
    bound[event.fd()] = gsi;
    return {};
  }
  Result<void> unbind(const vmm::event::EventFd& event, std::uint32_t) override {
    bound.erase(event.fd());
    return {};
  }
  std::map<int, std::uint32_t> bound;
};

// A PciRoot with one VfioPciDevice in slot 5, and the guest's accesses to it: config space through the root, BARs
// through the MMIO bus (what the vCPU loop hands the buses on an exit).
class Bus {
 public:
  Bus(vmm::irq::GsiRouting& routing, vmm::irq::IrqfdBinder& binder, vmm::vfio::DeviceMemorySlots* slots = nullptr)
      : routing_(routing), binder_(binder), slots_(slots) {}
  Bus(const Bus&) = delete;
  Bus& operator=(const Bus&) = delete;
  ~Bus() { root_.set_bar_observer(nullptr); }

  void plug(std::shared_ptr<vmm::vfio::DeviceInterface> device) {
    auto created = vmm::vfio::VfioPciDevice::create(std::move(device), {&routing_, &binder_, slots_});
    ASSERT_TRUE(created) << created.error().message();
    device_ = *created;
    ASSERT_TRUE(root_.add_device(device_, kSlot));
    root_.set_bar_observer([this](const vmm::pci::BarMapping& mapping, bool placed) {
      if (mapping.device_number == kSlot) {
        device_->bar_placed(mapping.bar_index, placed ? std::optional(mapping.base) : std::nullopt);
      }
    });
  }
  void config_write(std::uint16_t reg, std::uint32_t value, std::size_t width) {
    std::array<std::uint8_t, 4> data{};
    std::memcpy(data.data(), &value, width);
    root_.config_write(0, kSlot, 0, reg, std::span(data).first(width));
  }
  void mmio_write32(std::uint64_t address, std::uint32_t value) {
    std::array<std::uint8_t, 4> data{};
    std::memcpy(data.data(), &value, 4);
    ASSERT_TRUE(mmio_.write(address, data)) << fmt::format("nothing on the MMIO bus at 0x{:x}", address);
  }
  // What a guest driver does first: BAR0 at kBar0, memory decoding and bus mastering on.
  void place_bar0() {
    config_write(PCI_BASE_ADDRESS_0, static_cast<std::uint32_t>(kBar0), 4);
    config_write(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
  }
  // What Linux's MSI code does: address, data, then Enable with Multiple Message Enable = log2(vectors).
  void enable_msi(std::uint64_t address, std::uint16_t data, unsigned log2_vectors) {
    config_write(kMsiCap + PCI_MSI_ADDRESS_LO, static_cast<std::uint32_t>(address), 4);
    config_write(kMsiCap + PCI_MSI_ADDRESS_HI, static_cast<std::uint32_t>(address >> 32), 4);
    config_write(kMsiCap + PCI_MSI_DATA_64, data, 2);
    config_write(kMsiCap + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE | (log2_vectors << 4), 2);
  }
  // One MSI-X table entry, through BAR0 (the table is at kTableOffset).
  void program_msix_entry(std::uint16_t vector, std::uint64_t address, std::uint32_t data, bool masked);
  void set_msix_control(std::uint16_t bits) { config_write(kMsixCap + PCI_MSIX_FLAGS, bits, 2); }

  [[nodiscard]] vmm::vfio::VfioPciDevice& device() { return *device_; }
  [[nodiscard]] MsiState msi_state() { return vmm::vfio::read_msi_state(device_->config(), kMsiCap); }

  static constexpr std::uint32_t kTableOffset = 0x2000;
  static constexpr std::uint32_t kPbaOffset = 0x3000;

 private:
  vmm::irq::GsiRouting& routing_;
  vmm::irq::IrqfdBinder& binder_;
  vmm::vfio::DeviceMemorySlots* slots_;
  vmm::devices::IoBus io_;
  vmm::devices::MmioBus mmio_;
  vmm::pci::PciRoot root_{io_, mmio_};
  std::shared_ptr<vmm::vfio::VfioPciDevice> device_;
};

void Bus::program_msix_entry(std::uint16_t vector, std::uint64_t address, std::uint32_t data, bool masked) {
  const std::uint64_t entry = kBar0 + kTableOffset + std::uint64_t{vector} * PCI_MSIX_ENTRY_SIZE;
  mmio_write32(entry + PCI_MSIX_ENTRY_LOWER_ADDR, static_cast<std::uint32_t>(address));
  mmio_write32(entry + PCI_MSIX_ENTRY_UPPER_ADDR, static_cast<std::uint32_t>(address >> 32));
  mmio_write32(entry + PCI_MSIX_ENTRY_DATA, data);
  mmio_write32(entry + PCI_MSIX_ENTRY_VECTOR_CTRL, masked ? PCI_MSIX_ENTRY_CTRL_MASKBIT : 0);
}

// edu as QEMU builds it: BAR0 1 MiB, one 64-bit MSI vector, no per-vector masking.
std::shared_ptr<FakeVfioDevice> edu_like(unsigned log2_msi_vectors = 0) {
  auto device = std::make_shared<FakeVfioDevice>();
  device->add_bar(0, 1 * kMiB, PCI_BASE_ADDRESS_SPACE_MEMORY);
  device->add_msi(kMsiCap, log2_msi_vectors, /*is_64bit=*/true, /*maskable=*/false);
  return device;
}
// A device with MSI-X: `vectors` vectors, table at BAR0 + 0x2000, PBA at BAR0 + 0x3000, BAR0 `bar_size` bytes.
std::shared_ptr<FakeVfioDevice> msix_device(std::uint16_t vectors = 4, std::uint64_t bar_size = 16 * kKiB) {
  auto device = std::make_shared<FakeVfioDevice>();
  device->add_bar(0, bar_size, PCI_BASE_ADDRESS_SPACE_MEMORY);
  device->add_msix(kMsixCap, vectors, 0, Bus::kTableOffset, Bus::kPbaOffset);
  return device;
}

// A VFIO device whose BAR lists sparse mmap areas (VFIO_REGION_INFO_CAP_SPARSE_MMAP), as vfio-pci reports a BAR
// holding an MSI-X table when the kernel does not let user space map it: a FakeVfioDevice with that one change.
class WithSparseAreas final : public vmm::vfio::DeviceInterface {
 public:
  using DeviceInterface::read;
  using DeviceInterface::write;
  WithSparseAreas(std::shared_ptr<FakeVfioDevice> inner, std::uint32_t bar, std::vector<SparseMmapArea> areas)
      : inner_(std::move(inner)), bar_(bar), areas_(std::move(areas)) {}

  Result<vmm::vfio::DeviceInfo> info() const override { return inner_->info(); }
  Result<RegionInfo> region_info(std::uint32_t index) const override {
    auto info = inner_->region_info(index);
    if (info && index == bar_) {
      info->flags |= VFIO_REGION_INFO_FLAG_CAPS;
      info->caps.sparse_mmap = areas_;
    }
    return info;
  }
  Result<vmm::vfio::IrqInfo> irq_info(std::uint32_t index) const override { return inner_->irq_info(index); }
  Result<void> read(const RegionInfo& region, std::uint64_t offset, std::span<std::byte> out) const override {
    return inner_->read(region, offset, out);
  }
  Result<void> write(const RegionInfo& region, std::uint64_t offset, std::span<const std::byte> data) const override {
    return inner_->write(region, offset, data);
  }
  Result<vmm::Mmap> mmap(const RegionInfo& region, std::uint64_t offset, std::uint64_t size) const override {
    return inner_->mmap(region, offset, size);
  }
  Result<void> set_irqs_eventfds(std::uint32_t index, std::uint32_t start,
                                 std::span<const int> eventfds) const override {
    return inner_->set_irqs_eventfds(index, start, eventfds);
  }
  Result<void> disable_irqs(std::uint32_t index) const override { return inner_->disable_irqs(index); }
  Result<void> reset() const override { return inner_->reset(); }
  const std::string& name() const noexcept override { return inner_->name(); }

 private:
  std::shared_ptr<FakeVfioDevice> inner_;
  std::uint32_t bar_;
  std::vector<SparseMmapArea> areas_;
};

// ---- Exercise 2: which pages of a BAR the guest may reach directly ---------------------------------------------

RegionInfo bar_region(std::uint32_t index, std::uint64_t size, bool mappable = true,
                      std::optional<std::vector<SparseMmapArea>> sparse = std::nullopt) {
  RegionInfo info;
  info.index = index;
  info.size = size;
  info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | (mappable ? VFIO_REGION_INFO_FLAG_MMAP : 0);
  if (sparse) {
    info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
    info.caps.sparse_mmap = std::move(sparse);
  }
  return info;
}
MsixCapability msix_layout(std::uint16_t vectors, std::uint8_t table_bar, std::uint32_t table_offset,
                           std::uint8_t pba_bar, std::uint32_t pba_offset) {
  return {.vectors = vectors,
          .table_bar = table_bar,
          .table_offset = table_offset,
          .pba_bar = pba_bar,
          .pba_offset = pba_offset};
}
// mappable_areas, failing the test on an error.
std::vector<BarArea> areas(const RegionInfo& bar, const std::optional<MsixCapability>& msix,
                           std::uint64_t page_size = kPage) {
  auto got = lab08::mappable_areas(bar, msix, page_size);
  EXPECT_TRUE(got) << got.error().message();
  return got ? *got : std::vector<BarArea>{};
}
using Areas = std::vector<BarArea>;

TEST(Exercise2, WithoutMsixTheWholeBarIsMappableIfVfioAllowsIt) {
  EXPECT_EQ(areas(bar_region(0, 1 * kMiB), std::nullopt), (Areas{{0, 1 * kMiB}})) << "edu's BAR0";
  EXPECT_EQ(areas(bar_region(0, 1 * kMiB, /*mappable=*/false), std::nullopt), Areas{})
      << "no VFIO_REGION_INFO_FLAG_MMAP: every access traps";
  EXPECT_EQ(areas(bar_region(1, 0), std::nullopt), Areas{}) << "BAR1 does not exist";
}

TEST(Exercise2, TheTableAndPbaPagesTrapAndTheRestIsMapped) {
  // 4 vectors: a 64-byte table at 0x2000, an 8-byte PBA at 0x3000, in a 16 KiB BAR0.
  EXPECT_EQ(areas(bar_region(0, 16 * kKiB), msix_layout(4, 0, 0x2000, 0, 0x3000)), (Areas{{0, 0x2000}}));
  // Both in one page in the middle: the pages around it are mapped, as two areas.
  EXPECT_EQ(areas(bar_region(0, 16 * kKiB), msix_layout(4, 0, 0x1000, 0, 0x1800)),
            (Areas{{0, 0x1000}, {0x2000, 0x2000}}));
}

TEST(Exercise2, OnlyTheBarThatHoldsTheTableOrThePbaLosesPages) {
  const auto layout = msix_layout(4, /*table_bar=*/0, 0x2000, /*pba_bar=*/2, 0x0);
  EXPECT_EQ(areas(bar_region(0, 16 * kKiB), layout), (Areas{{0, 0x2000}, {0x3000, 0x1000}})) << "BAR0: the table";
  EXPECT_EQ(areas(bar_region(2, 16 * kKiB), layout), (Areas{{0x1000, 0x3000}})) << "BAR2: the PBA";
  EXPECT_EQ(areas(bar_region(4, 16 * kKiB), layout), (Areas{{0, 16 * kKiB}})) << "BAR4: neither";
}

TEST(Exercise2, ATableThatStartsOrEndsMidPageTakesTheWholePage) {
  // 8 vectors, 128 bytes at 0x800: a memory slot cannot map half a page, so page 0 traps entirely.
  EXPECT_EQ(areas(bar_region(0, 16 * kKiB), msix_layout(8, 0, 0x800, 0, 0x3ff8)), (Areas{{0x1000, 0x2000}}));
  // 2048 vectors: a 32 KiB table from 0xf000 to 0x17000 and a 256-byte PBA at 0x17000, in a 128 KiB BAR.
  EXPECT_EQ(areas(bar_region(0, 128 * kKiB), msix_layout(2048, 0, 0xf000, 0, 0x17000)),
            (Areas{{0, 0xf000}, {0x18000, 0x8000}}));
}

TEST(Exercise2, SparseAreasAreWhereYouStart) {
  // What vfio-pci reports when it will not let user space map the MSI-X table: the BAR minus the table's page.
  const auto layout = msix_layout(64, 0, 0x8000, 0, 0x8400);
  const std::vector<SparseMmapArea> without_table{{0, 0x8000}, {0x9000, 0x7000}};
  EXPECT_EQ(areas(bar_region(0, 64 * kKiB, true, without_table), layout), (Areas{{0, 0x8000}, {0x9000, 0x7000}}));
  // Areas that are not whole pages keep only their whole pages; an area past the BAR is clipped; touching areas
  // merge; listed out of order.
  const std::vector<SparseMmapArea> ragged{{0x3000, 0x1000}, {0x800, 0x2000}, {0xc000, 0x10000}, {0x4000, 0x1000}};
  EXPECT_EQ(areas(bar_region(0, 64 * kKiB, true, ragged), std::nullopt),
            (Areas{{0x1000, 0x1000}, {0x3000, 0x2000}, {0xc000, 0x4000}}));
  // A sparse capability with no areas at all: nothing may be mapped.
  EXPECT_EQ(areas(bar_region(0, 64 * kKiB, true, std::vector<SparseMmapArea>{}), std::nullopt), Areas{});
}

TEST(Exercise2, EvenWhenTheKernelWouldMapTheTableTheGuestMustNotReachIt) {
  // VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: the host (with interrupt remapping) lets this process mmap the table. The
  // guest still may not write it directly: its addresses and vectors are the guest's.
  auto bar = bar_region(0, 16 * kKiB);
  bar.caps.msix_mappable = true;
  EXPECT_EQ(areas(bar, msix_layout(4, 0, 0x2000, 0, 0x3000)), (Areas{{0, 0x2000}}));
}

TEST(Exercise2, LargerPagesTrapMore) {
  // A host with 64 KiB pages (arm64, ppc64): the table's whole 64 KiB page traps.
  EXPECT_EQ(areas(bar_region(0, 256 * kKiB), msix_layout(4, 0, 0x2000, 0, 0x3000), 64 * kKiB),
            (Areas{{0x10000, 0x30000}}));
  EXPECT_EQ(areas(bar_region(0, 16 * kKiB), std::nullopt, 64 * kKiB), Areas{}) << "a BAR smaller than a page";
  auto refused = lab08::mappable_areas(bar_region(0, 16 * kKiB), std::nullopt, 3000);
  EXPECT_FALSE(refused) << "a page size of 3000 bytes";
}

class Exercise2Passthrough : public ::testing::Test {
 protected:
  RoutingRecorder recorder_;
  vmm::irq::GsiRouting routing_{recorder_.apply()};
  AcceptingBinder binder_;
  RecordingSlots slots_;
  Bus bus_{routing_, binder_, &slots_};
};

TEST_F(Exercise2Passthrough, VfioPciDeviceMapsYourAreasAndTheTablePageTraps) {
  auto fake = msix_device(4, 16 * kKiB);
  ASSERT_NO_FATAL_FAILURE(bus_.plug(fake));
  const auto layout = msix_layout(4, 0, Bus::kTableOffset, 0, Bus::kPbaOffset);
  const auto yours = areas(*fake->region_info(0), layout, vmm::memory::host_page_size());
  ASSERT_EQ(bus_.device().bars_info().size(), 1U);
  EXPECT_EQ(yours, bus_.device().bars_info()[0].mapped_areas) << "yours, then what stage08's VfioPciDevice mapped";

  // The guest places BAR0: each of your areas becomes a memory slot over the device's mmap, at the guest's address.
  bus_.place_bar0();
  const auto slots = slots_.slots();
  ASSERT_EQ(slots.size(), yours.size());
  auto slot = slots.begin();
  for (const BarArea& area : yours) {
    EXPECT_EQ(slot->second.guest_address, kBar0 + area.offset);
    EXPECT_EQ(slot->second.size, area.size);
    ++slot;
  }
  // No slot covers a byte of the table or the PBA: those accesses exit, and reach the VMM's emulated table.
  for (const auto& [handle, s] : slots) {
    EXPECT_FALSE(s.guest_address < kBar0 + Bus::kPbaOffset + 8 && kBar0 + Bus::kTableOffset < s.guest_address + s.size)
        << fmt::format("slot [0x{:x}, +0x{:x}) covers the table or PBA", s.guest_address, s.size);
  }
  bus_.program_msix_entry(0, 0xfee0'0000, 0x31, /*masked=*/false);
  ASSERT_TRUE(bus_.device().msix_table()->entry(0));
  EXPECT_EQ(bus_.device().msix_table()->entry(0)->data, 0x31U) << "the VMM's table has the guest's vector";
  EXPECT_EQ(fake->bar(0)[Bus::kTableOffset + PCI_MSIX_ENTRY_DATA], 0) << "the device's table never saw it";
}

TEST_F(Exercise2Passthrough, WithSparseAreasToo) {
  auto fake = msix_device(64, 64 * kKiB);
  const std::vector<SparseMmapArea> sparse{{0, 0x2000}, {0x4000, 0xc000}};  // vfio-pci left out 0x2000-0x4000
  auto device = std::make_shared<WithSparseAreas>(fake, 0, sparse);
  ASSERT_NO_FATAL_FAILURE(bus_.plug(device));
  const auto yours = areas(*device->region_info(0), msix_layout(64, 0, Bus::kTableOffset, 0, Bus::kPbaOffset),
                           vmm::memory::host_page_size());
  EXPECT_EQ(yours, (Areas{{0, 0x2000}, {0x4000, 0xc000}}));
  ASSERT_EQ(bus_.device().bars_info().size(), 1U);
  EXPECT_EQ(yours, bus_.device().bars_info()[0].mapped_areas) << "yours, then what stage08's VfioPciDevice mapped";
}

// ---- Exercise 3: the interrupt path ----------------------------------------------------------------------------

MsiState msi(bool enabled, std::uint8_t vectors, std::uint64_t address, std::uint16_t data) {
  return {.enabled = enabled, .capable = 32, .vectors = vectors, .is_64bit = true, .address = address, .data = data};
}

TEST(Exercise3, OneVectorSendsWhatTheGuestWrote) {
  EXPECT_EQ(lab08::msi_message(msi(true, 1, 0xfee0'0000, 0x41), 0), (MsiMessage{0xfee0'0000, 0x41}));
  EXPECT_EQ(lab08::msi_message(msi(true, 1, 0x1'fee0'1000, 0x4041), 0), (MsiMessage{0x1'fee0'1000, 0x4041}))
      << "a 64-bit address and the data's upper bits are the guest's";
  EXPECT_EQ(lab08::msi_message(msi(true, 1, 0xfee0'0000, 0x41), 1), std::nullopt) << "vector 1 is not enabled";
  EXPECT_EQ(lab08::msi_message(msi(false, 1, 0xfee0'0000, 0x41), 0), std::nullopt) << "MSI is disabled";
}

TEST(Exercise3, WithSeveralVectorsTheVectorNumberIsInTheLowBitsOfTheData) {
  const auto four = msi(true, 4, 0xfee0'0000, 0x40);
  for (std::uint16_t v = 0; v < 4; ++v) {
    EXPECT_EQ(lab08::msi_message(four, v), (MsiMessage{0xfee0'0000, 0x40U + v})) << "vector " << v;
  }
  EXPECT_EQ(lab08::msi_message(four, 4), std::nullopt) << "4 vectors enabled: 0..3";
  // The device replaces the low bits, whatever the guest left in them; the others stay.
  const auto untidy = msi(true, 4, 0xfee0'0000, 0x4b);
  EXPECT_EQ(lab08::msi_message(untidy, 0), (MsiMessage{0xfee0'0000, 0x48}));
  EXPECT_EQ(lab08::msi_message(untidy, 2), (MsiMessage{0xfee0'0000, 0x4a}));
  EXPECT_EQ(lab08::msi_message(msi(true, 32, 0xfee0'0000, 0x60), 31), (MsiMessage{0xfee0'0000, 0x7f}));
}

TEST(Exercise3, VfioGetsOneIrqfdPerEnabledVectorButNoMoreThanTheDeviceHas) {
  RoutingRecorder recorder;
  vmm::irq::GsiRouting routing{recorder.apply()};
  AcceptingBinder binder;
  auto routes = vmm::vfio::MsiRoutes::create(2, routing, binder);  // the host gave the device 2 vectors
  ASSERT_TRUE(routes) << routes.error().message();
  const auto& r = **routes;
  EXPECT_EQ(lab08::msi_eventfds(msi(false, 2, 0xfee0'0000, 0x40), r), std::vector<int>{}) << "MSI is disabled";
  EXPECT_EQ(lab08::msi_eventfds(msi(true, 1, 0xfee0'0000, 0x40), r), (std::vector<int>{r.irqfd(0)->fd()}));
  EXPECT_EQ(lab08::msi_eventfds(msi(true, 2, 0xfee0'0000, 0x40), r),
            (std::vector<int>{r.irqfd(0)->fd(), r.irqfd(1)->fd()}));
  EXPECT_EQ(lab08::msi_eventfds(msi(true, 8, 0xfee0'0000, 0x40), r),
            (std::vector<int>{r.irqfd(0)->fd(), r.irqfd(1)->fd()}))
      << "the guest enabled 8, the device has 2";
}

class Exercise3Passthrough : public ::testing::Test {
 protected:
  // Which of the routes' vectors an fd is, for failure messages.
  static std::string which(int fd, const vmm::irq::MsixRoutes& routes, std::span<const vmm::event::EventFd> relays) {
    for (std::uint16_t v = 0; v < routes.vectors(); ++v) {
      if (fd == routes.irqfd(v)->fd()) {
        return fmt::format("fd {} (vector {}'s irqfd)", fd, v);
      }
      if (v < relays.size() && fd == relays[v].fd()) {
        return fmt::format("fd {} (vector {}'s relay)", fd, v);
      }
    }
    return fmt::format("fd {}", fd);
  }

  RoutingRecorder recorder_;
  vmm::irq::GsiRouting routing_{recorder_.apply()};
  RecordingBinder binder_;
  Bus bus_{routing_, binder_};
};

TEST_F(Exercise3Passthrough, TheEventfdsVfioGetsAreTheIrqfdsOfTheRoutedGsis) {
  auto fake = edu_like(/*log2_msi_vectors=*/2);  // 4 vectors capable
  ASSERT_NO_FATAL_FAILURE(bus_.plug(fake));
  bus_.enable_msi(0xfee0'1000, 0x40, /*log2_vectors=*/1);  // the guest enables 2
  const MsiState state = bus_.msi_state();
  const auto yours = lab08::msi_eventfds(state, *bus_.device().msi_routes());

  const auto sets = fake->irq_sets();
  ASSERT_EQ(sets.size(), 1U) << "stage08 should have made one VFIO_DEVICE_SET_IRQS";
  EXPECT_EQ(sets[0].index, static_cast<std::uint32_t>(VFIO_PCI_MSI_IRQ_INDEX));
  EXPECT_EQ(yours, sets[0].fds) << "yours, then the eventfds stage08 handed VFIO";
  ASSERT_EQ(yours.size(), 2U);

  // Follow each one: VFIO signals it; KVM has it as an irqfd on a GSI; that GSI's route carries the guest's message.
  const auto installed = recorder_.installed();
  for (std::uint16_t v = 0; v < yours.size(); ++v) {
    ASSERT_TRUE(binder_.bound.contains(yours[v])) << "vector " << v << ": fd " << yours[v] << " is no irqfd";
    const std::uint32_t gsi = binder_.bound.at(yours[v]);
    const auto message = lab08::msi_message(state, v);
    ASSERT_TRUE(message) << "msi_message(vector " << v << ") is nothing, but the guest enabled it";
    EXPECT_EQ(*message, (MsiMessage{0xfee0'1000, 0x40U + v}));
    const auto route = std::find_if(installed.begin(), installed.end(), [&](const kvm_irq_routing_entry& e) {
      return e.gsi == gsi && e.type == KVM_IRQ_ROUTING_MSI;
    });
    ASSERT_NE(route, installed.end()) << "vector " << v << ": GSI " << gsi << " has no MSI route in KVM's table";
    EXPECT_EQ(route->u.msi.address_lo, static_cast<std::uint32_t>(message->address));
    EXPECT_EQ(route->u.msi.data, message->data) << "vector " << v << ", GSI " << gsi;
  }

  bus_.config_write(kMsiCap + PCI_MSI_FLAGS, 0, 2);  // the guest disables MSI
  EXPECT_EQ(lab08::msi_eventfds(bus_.msi_state(), *bus_.device().msi_routes()), std::vector<int>{});
}

TEST_F(Exercise3Passthrough, MsixIrqfdWhileDeliverableRelayWhileMasked) {
  ASSERT_NO_FATAL_FAILURE(bus_.plug(msix_device(4)));
  auto& routes = *bus_.device().msix_routes();
  std::vector<vmm::event::EventFd> relays;
  for (int i = 0; i < 4; ++i) {
    relays.push_back(vmm::event::EventFd::create().value());
  }
  // Yours, next to what stage08's VfioPciDevice handed VFIO for the same vector (its relays are its own).
  const auto check = [&](std::uint16_t v, bool deliverable, const char* when) {
    const int yours = lab08::msix_eventfd_for(routes, relays, v);
    const int expected = deliverable ? routes.irqfd(v)->fd() : relays[v].fd();
    EXPECT_EQ(yours, expected) << when << ", vector " << v << ": yours is " << which(yours, routes, relays)
                               << ", expected " << which(expected, routes, relays);
    if (deliverable) {
      EXPECT_EQ(bus_.device().msix_vfio_eventfds()[v], routes.irqfd(v)->fd()) << "stage08, " << when;
    }
  };

  bus_.place_bar0();
  bus_.program_msix_entry(0, 0xfee0'0000, 0x30, /*masked=*/false);
  bus_.program_msix_entry(1, 0xfee0'0000, 0x31, /*masked=*/true);
  check(0, false, "MSI-X still disabled");
  bus_.set_msix_control(PCI_MSIX_FLAGS_ENABLE);
  check(0, true, "MSI-X enabled");
  check(1, false, "MSI-X enabled");
  check(2, false, "MSI-X enabled, vector 2 never programmed (masked since reset)");
  bus_.set_msix_control(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
  check(0, false, "the whole function masked");
  bus_.set_msix_control(PCI_MSIX_FLAGS_ENABLE);
  bus_.program_msix_entry(0, 0xfee0'0000, 0x30, /*masked=*/true);
  bus_.program_msix_entry(1, 0xfee0'0000, 0x31, /*masked=*/false);
  check(0, false, "vector 0 masked");
  check(1, true, "vector 1 unmasked");
  EXPECT_EQ(lab08::msix_eventfd_for(routes, relays, 4), -1) << "the device has 4 vectors";
  EXPECT_EQ(lab08::msix_eventfd_for(routes, std::span(relays).first(1), 1), -1) << "no relay for vector 1";
}

// ---- Exercise 3 on a real VM: the interrupt reaches the guest's LAPIC without the VMM --------------------------

// The vCPU's local APIC as KVM holds it (KVM_GET_LAPIC): the Spurious Interrupt Vector register (software enable
// is bit 8) and the Interrupt Request Register, 8 dwords 16 bytes apart.
constexpr std::size_t kApicSvr = 0xf0;
constexpr std::size_t kApicIrr = 0x200;

bool eventually(const std::function<bool()>& condition) {
  // Bounded only so that a broken build fails rather than hangs; KVM injects MSIs from irqfds synchronously or from
  // a workqueue, so the test waits rather than looks once.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

class Exercise3Kvm : public ::testing::Test {
 protected:
  void SetUp() override {
    VMMLAB_REQUIRE_KVM();
    auto kvm = vmm::kvm::Kvm::open();
    ASSERT_TRUE(kvm) << kvm.error().message();
    auto vm = kvm->create_vm();
    ASSERT_TRUE(vm) << vm.error().message();
    kvm_.emplace(std::move(*kvm));
    vm_.emplace(std::move(*vm));
    auto irqchip = vmm::devices::create_irqchip(*vm_);
    ASSERT_TRUE(irqchip) << irqchip.error().message();
    auto vcpu = vm_->create_vcpu(0);  // APIC ID 0: where address 0xfee00000 sends the message
    ASSERT_TRUE(vcpu) << vcpu.error().message();
    vcpu_.emplace(std::move(*vcpu));
    // After reset the LAPIC is software-disabled and drops fixed interrupts; a guest's kernel enables it first thing.
    kvm_lapic_state lapic{};
    ASSERT_TRUE(VMM_IOCTL(vcpu_->fd(), KVM_GET_LAPIC, &lapic));
    std::uint32_t svr = 0;
    std::memcpy(&svr, &lapic.regs[kApicSvr], 4);
    svr |= 0x100;
    std::memcpy(&lapic.regs[kApicSvr], &svr, 4);
    ASSERT_TRUE(VMM_IOCTL(vcpu_->fd(), KVM_SET_LAPIC, &lapic));
    routing_.emplace(*vm_);
    binder_.emplace(*vm_);
    bus_.emplace(*routing_, *binder_);
  }
  void TearDown() override {
    bus_.reset();  // the device unbinds its irqfds while the VM exists
  }

  // Whether the LAPIC has `vector` pending: the guest would take it as soon as it runs with interrupts enabled.
  bool lapic_pending(std::uint8_t vector) {
    kvm_lapic_state lapic{};
    auto rc = VMM_IOCTL(vcpu_->fd(), KVM_GET_LAPIC, &lapic);
    EXPECT_TRUE(rc) << rc.error().message();
    std::uint32_t irr = 0;
    std::memcpy(&irr, &lapic.regs[kApicIrr + vector / 32 * 0x10], 4);
    return (irr >> (vector % 32) & 1) != 0;
  }
  // What vfio-pci does when the device's MSI arrives on the host: eventfd_signal on the eventfd it was given.
  static void device_fires(int eventfd) {
    const std::uint64_t one = 1;
    ASSERT_EQ(::write(eventfd, &one, sizeof one), static_cast<ssize_t>(sizeof one));
  }

  std::optional<vmm::kvm::Kvm> kvm_;
  std::optional<vmm::kvm::Vm> vm_;
  std::optional<vmm::kvm::Vcpu> vcpu_;
  std::optional<vmm::irq::KvmGsiRouting> routing_;
  std::optional<vmm::irq::KvmIrqfdBinder> binder_;
  std::optional<Bus> bus_;
};

TEST_F(Exercise3Kvm, TheEventfdVfioGetsIsAKvmIrqfdThatInjectsTheGuestsVector) {
  auto fake = edu_like();
  ASSERT_NO_FATAL_FAILURE(bus_->plug(fake));
  bus_->enable_msi(0xfee0'0000, 0x41, 0);  // what stage08's edu guest programs
  const MsiState state = bus_->msi_state();
  EXPECT_EQ(lab08::msi_message(state, 0), (MsiMessage{0xfee0'0000, 0x41}));
  const auto fds = lab08::msi_eventfds(state, *bus_->device().msi_routes());
  ASSERT_EQ(fds.size(), 1U) << "msi_eventfds gave VFIO no eventfd for the guest's one vector";
  ASSERT_FALSE(fake->irq_sets().empty());
  EXPECT_EQ(fds, fake->irq_sets().back().fds) << "yours, then the eventfds stage08 handed VFIO";

  // KVM holds it as an irqfd already: assigning it again is refused.
  const std::uint32_t gsi = bus_->device().msi_routes()->route(0)->gsi;
  kvm_irqfd again{};
  again.fd = static_cast<std::uint32_t>(fds[0]);
  again.gsi = gsi;
  errno = 0;
  EXPECT_EQ(::ioctl(vm_->fd().get(), KVM_IRQFD, &again), -1);
  EXPECT_EQ(errno, EBUSY) << "fd " << fds[0] << " is not an irqfd on GSI " << gsi;
  EXPECT_EQ(routing_->msi(gsi), (MsiMessage{0xfee0'0000, 0x41})) << "GSI " << gsi << "'s route";

  // The device fires: vfio-pci writes the eventfd, KVM sends the message to the LAPIC. Nothing in this process ran.
  ASSERT_FALSE(lapic_pending(0x41));
  device_fires(fds[0]);
  EXPECT_TRUE(eventually([&] { return lapic_pending(0x41); })) << "vector 0x41 never reached the LAPIC";
}

TEST_F(Exercise3Kvm, AMaskedVectorsIrqfdWouldLoseTheInterrupt) {
  ASSERT_NO_FATAL_FAILURE(bus_->plug(msix_device(2)));
  auto& device = bus_->device();
  auto& routes = *device.msix_routes();
  bus_->place_bar0();
  bus_->program_msix_entry(0, 0xfee0'0000, 0x42, /*masked=*/true);
  bus_->program_msix_entry(1, 0xfee0'0000, 0x43, /*masked=*/false);
  bus_->set_msix_control(PCI_MSIX_FLAGS_ENABLE);
  std::vector<vmm::event::EventFd> relays;
  relays.push_back(vmm::event::EventFd::create().value());
  relays.push_back(vmm::event::EventFd::create().value());
  EXPECT_EQ(lab08::msix_eventfd_for(routes, relays, 0), relays[0].fd()) << "vector 0 is masked";
  EXPECT_EQ(lab08::msix_eventfd_for(routes, relays, 1), routes.irqfd(1)->fd()) << "vector 1 is deliverable";

  // Why: a write to the masked vector's irqfd finds no route in KVM and is gone. Vector 1's, written after it,
  // arrives; vector 0's never will, and the VMM's PBA never heard of it.
  device_fires(routes.irqfd(0)->fd());
  device_fires(routes.irqfd(1)->fd());
  ASSERT_TRUE(eventually([&] { return lapic_pending(0x43); })) << "vector 1 never reached the LAPIC";
  EXPECT_FALSE(lapic_pending(0x42)) << "a masked vector reached the guest";
  EXPECT_FALSE(device.msix_table()->pending(0));

  // What VFIO really signals for vector 0 (stage08's relay): the VMM sets the pending bit, and delivers at unmask.
  device_fires(device.msix_vfio_eventfds()[0]);
  ASSERT_TRUE(eventually([&] { return device.msix_table()->pending(0); })) << "the relay never set the pending bit";
  EXPECT_FALSE(lapic_pending(0x42));
  bus_->program_msix_entry(0, 0xfee0'0000, 0x42, /*masked=*/false);
  EXPECT_TRUE(eventually([&] { return lapic_pending(0x42); })) << "unmasking did not deliver the pending vector";
}

}  // namespace
