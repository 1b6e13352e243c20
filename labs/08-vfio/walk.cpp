// lab08-walk: stage08's passthrough path built on a real KVM VM, for lab 08's gdb walkthroughs (dma.gdb,
// interrupt.gdb). It needs no VFIO (the rig has VFIO, but no gdb): two pieces are stand-ins, and everything else is
// what stage08's VfioVm builds:
//
// - the VFIO container is a `DmaMapper` that records the mappings instead of VFIO_IOMMU_MAP_DMA;
// - the device is stage08's FakeVfioDevice (tests/fake_vfio_device.hpp) shaped like QEMU's edu: BAR0 1 MiB, one
//   64-bit MSI vector. What it records stands for what vfio-pci would have been told.
//
// The VM is stage04's PciVm with stage08's edu guest loaded; the guest never runs. Its driver's config-space
// accesses are made here, as the port I/O exits a vCPU would hand the I/O bus (0xCF8/0xCFC). Then "the device
// fires": this program does what vfio-pci does when the device's MSI arrives on the host, a write to the eventfd it
// was given, and looks at vCPU 0's local APIC, where KVM delivered the guest's vector.
//
//   build/dev/labs/08-vfio/lab08-walk
//   labs/gdb/vmm-gdb -x labs/08-vfio/dma.gdb --args build/dev/labs/08-vfio/lab08-walk
#include <linux/kvm.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <guest/edu.hpp>

#include "fake_vfio_device.hpp"  // stage08-vfio/tests
#include "pci_vm.hpp"            // stage04-pci/demo
#include "vmm/irq/gsi_routing.hpp"
#include "vmm/irq/irqfd.hpp"
#include "vmm/pci/pci_root.hpp"
#include "vmm/vfio/device_memory.hpp"
#include "vmm/vfio/guest_ram_dma.hpp"
#include "vmm/vfio/vfio_pci_device.hpp"

namespace lab08::walk {

using vmm::Result;

constexpr std::uint8_t kSlot = 5;                   // 00:05.0, where stage08's VfioVm puts the device
constexpr std::uint32_t kFirstBarSlot = 16;         // KVM memory slots for BARs, as VfioVm
constexpr std::uint8_t kMsiCap = 0x40;              // edu's MSI capability
constexpr std::uint64_t kBar0 = 0xc000'0000;        // where the edu guest puts BAR0
constexpr std::uint64_t kMsiAddress = 0xfee0'0000;  // LAPIC of APIC ID 0, physical destination mode
constexpr std::uint16_t kMsiData = 0x41;            // fixed delivery, vector 0x41: the edu guest's

// Plays the VFIO container: keeps what VFIO_IOMMU_MAP_DMA would have been asked. (Container::map_dma checks the
// same rules with DmaMappings, then makes the ioctl; the kernel pins the pages and fills the IOMMU's tables.)
class RecordingDmaMapper final : public vmm::vfio::DmaMapper {
 public:
  Result<void> map_dma(std::uint64_t iova, std::uint64_t size, const void* host_va, bool readable,
                       bool writable) override {
    const vmm::vfio::DmaMapping mapping{iova, size, reinterpret_cast<std::uint64_t>(host_va), readable, writable};
    return mappings_.add(mapping);
  }
  Result<void> unmap_dma(std::uint64_t iova, std::uint64_t size) override {
    auto removed = mappings_.remove(iova, size);
    return removed ? Result<void>{} : std::unexpected(removed.error());
  }
  [[nodiscard]] std::vector<vmm::vfio::DmaMapping> mappings() const { return mappings_.list(); }

 private:
  vmm::vfio::DmaMappings mappings_;
};

// A config-space write as the guest makes it with configuration mechanism #1: the address to 0xCF8, the value to
// 0xCFC + (reg & 3). The I/O bus is what the vCPU loop hands a KVM_EXIT_IO.
void guest_config_write(vmm::devices::IoBus& io, std::uint16_t reg, std::uint32_t value, std::size_t width) {
  const std::uint32_t address = 0x8000'0000U | (std::uint32_t{kSlot} << 11) | (reg & 0xfcU);
  std::array<std::uint8_t, 4> bytes{};
  std::memcpy(bytes.data(), &address, 4);
  (void)io.write(0xcf8, bytes);
  std::memcpy(bytes.data(), &value, 4);
  (void)io.write(0xcfc + (reg & 3U), std::span(bytes).first(width));
}

// vCPU 0's local APIC as KVM holds it.
constexpr std::size_t kApicSvr = 0xf0;
constexpr std::size_t kApicIrr = 0x200;

Result<void> enable_lapic(vmm::kvm::Vcpu& vcpu) {
  // After reset the LAPIC is software-disabled (SVR bit 8 clear) and drops fixed interrupts; a guest's kernel sets
  // the bit early. The guest does not run here, so the VMM sets it.
  kvm_lapic_state lapic{};
  if (auto rc = VMM_IOCTL(vcpu.fd(), KVM_GET_LAPIC, &lapic); !rc) {
    return std::unexpected(rc.error());
  }
  std::uint32_t svr = 0;
  std::memcpy(&svr, &lapic.regs[kApicSvr], 4);
  svr |= 0x100;
  std::memcpy(&lapic.regs[kApicSvr], &svr, 4);
  auto rc = VMM_IOCTL(vcpu.fd(), KVM_SET_LAPIC, &lapic);
  return rc ? Result<void>{} : std::unexpected(rc.error());
}

bool lapic_pending(const vmm::kvm::Vcpu& vcpu, std::uint8_t vector) {
  kvm_lapic_state lapic{};
  if (!VMM_IOCTL(vcpu.fd(), KVM_GET_LAPIC, &lapic)) {
    return false;
  }
  std::uint32_t irr = 0;
  std::memcpy(&irr, &lapic.regs[kApicIrr + vector / 32 * 0x10], 4);
  return (irr >> (vector % 32) & 1) != 0;
}

// What vfio-pci's interrupt handler does (vfio_msihandler -> eventfd_signal) when the device's MSI arrives on the
// host: one write to the eventfd the VMM handed it. Nothing else of the VMM runs after this.
void fire(int eventfd) {
  const std::uint64_t one = 1;
  if (::write(eventfd, &one, sizeof one) != static_cast<ssize_t>(sizeof one)) {
    std::perror("lab08-walk: write to the device's eventfd");
  }
}

int run() {
  // 1. The VM: stage04's machine (RAM, the in-kernel irqchip, vCPU 0, PCI bus 0), with stage08's guest loaded.
  auto pci = vmm::stage04::PciVm::create(
      vmm::guest::edu(), [](std::span<const std::uint8_t>) {}, [](std::uint32_t) {});
  if (!pci) {
    fmt::print(stderr, "lab08-walk: {}\n", pci.error().message());
    return 1;
  }
  auto& machine = (*pci)->serial().vm();
  const vmm::memory::GuestMemory& memory = machine.memory();
  vmm::kvm::Vm& vm = machine.vm();
  fmt::print("lab08-walk: stage08's passthrough path on a KVM VM, with a fake VFIO device (no VFIO needed)\n");

  // 2. DMA: all of guest RAM, IOVA = guest-physical address, before the guest could tell the device to use any.
  RecordingDmaMapper container;
  auto dma = std::make_unique<vmm::vfio::GuestRamDma>(container);
  if (auto rc = dma->sync(memory); !rc) {
    fmt::print(stderr, "lab08-walk: {}\n", rc.error().message());
    return 1;
  }
  // What a VMM does after any change to its memory map: nothing changed, so no call.
  const auto calls_before = dma->map_calls() + dma->unmap_calls();
  if (auto rc = dma->sync(memory); !rc) {
    fmt::print(stderr, "lab08-walk: {}\n", rc.error().message());
    return 1;
  }
  fmt::print("DMA: {} mapping(s), IOVA = guest-physical address; a second sync made {} call(s)\n",
             container.mappings().size(), dma->map_calls() + dma->unmap_calls() - calls_before);
  for (const auto& m : container.mappings()) {
    std::string same;
    for (const auto& slot : vm.memory_slots()) {
      if (slot.guest_address == m.iova && reinterpret_cast<std::uint64_t>(slot.host_address) == m.host_va) {
        same = fmt::format(" (KVM slot {}: the same memory)", slot.slot);
      }
    }
    fmt::print("  IOVA [0x{:x}, 0x{:x}) -> host 0x{:x}{}\n", m.iova, m.iova + m.size, m.host_va, same);
  }

  // 3. The device, passed through: routes and irqfds from KVM, BARs as KVM memory slots.
  auto fake = std::make_shared<vmm::vfio::testing::FakeVfioDevice>("0000:00:03.0");
  fake->add_bar(0, 1 << 20, PCI_BASE_ADDRESS_SPACE_MEMORY);
  fake->add_msi(kMsiCap, /*log2_vectors=*/0, /*is_64bit=*/true, /*maskable=*/false);
  auto routing = std::make_unique<vmm::irq::KvmGsiRouting>(vm);
  auto binder = std::make_unique<vmm::irq::KvmIrqfdBinder>(vm);
  auto slots = std::make_unique<vmm::vfio::KvmDeviceMemorySlots>(vm, kFirstBarSlot);
  auto created = vmm::vfio::VfioPciDevice::create(fake, {routing.get(), binder.get(), slots.get()});
  if (!created) {
    fmt::print(stderr, "lab08-walk: {}\n", created.error().message());
    return 1;
  }
  std::shared_ptr<vmm::vfio::VfioPciDevice> passthrough = std::move(*created);
  auto& root = (*pci)->root();
  if (auto rc = root.add_device(passthrough, kSlot); !rc) {
    fmt::print(stderr, "lab08-walk: {}\n", rc.error().message());
    return 1;
  }
  root.set_bar_observer([device = passthrough.get()](const vmm::pci::BarMapping& mapping, bool placed) {
    if (mapping.device_number == kSlot) {
      device->bar_placed(mapping.bar_index, placed ? std::optional(mapping.base) : std::nullopt);
    }
  });
  const auto route = *passthrough->msi_routes()->route(0);
  fmt::print("host {} (fake) as guest 00:{:02x}.0: MSI capability at 0x{:x}, vector 0 -> GSI {}, irqfd fd {}\n",
             fake->name(), kSlot, kMsiCap, route.gsi, passthrough->msi_routes()->irqfd(0)->fd());

  // 4. The guest's driver, as stage08's edu guest does it: BAR0, decoding and bus mastering, then MSI.
  auto& io = (*pci)->serial().buses().io;
  guest_config_write(io, PCI_BASE_ADDRESS_0, static_cast<std::uint32_t>(kBar0), 4);
  guest_config_write(io, PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
  guest_config_write(io, kMsiCap + PCI_MSI_ADDRESS_LO, static_cast<std::uint32_t>(kMsiAddress), 4);
  guest_config_write(io, kMsiCap + PCI_MSI_ADDRESS_HI, 0, 4);
  guest_config_write(io, kMsiCap + PCI_MSI_DATA_64, kMsiData, 2);
  guest_config_write(io, kMsiCap + PCI_MSI_FLAGS, PCI_MSI_FLAGS_ENABLE, 2);
  for (const auto& slot : slots->slots()) {
    fmt::print("BAR0 at 0x{:x}: KVM slot {} over the device's mmap\n", slot.guest_address, slot.slot);
  }
  const auto sets = fake->irq_sets();
  if (sets.empty() || sets.back().fds.empty()) {
    fmt::print(stderr, "lab08-walk: the guest enabled MSI but VFIO got no eventfd\n");
    return 1;
  }
  const int eventfd = sets.back().fds[0];
  const auto message = routing->msi(route.gsi);
  fmt::print("guest enabled MSI: GSI {} -> address 0x{:x} data 0x{:x}; VFIO_DEVICE_SET_IRQS(MSI) got eventfd {}\n",
             route.gsi, message ? message->address : 0, message ? message->data : 0, eventfd);

  // 5. The device fires. KVM's irqfd wakes up on the write and sends the route's message to the LAPIC.
  auto& vcpu = machine.vcpu();
  if (auto rc = enable_lapic(vcpu); !rc) {
    fmt::print(stderr, "lab08-walk: {}\n", rc.error().message());
    return 1;
  }
  const bool before = lapic_pending(vcpu, kMsiData);
  fire(eventfd);
  bool after = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!(after = lapic_pending(vcpu, kMsiData)) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  fmt::print("the device fired (a write to eventfd {}): vCPU 0's LAPIC has vector 0x{:x} pending: {} (before: {})\n",
             eventfd, kMsiData, after ? "yes" : "no", before ? "yes" : "no");

  const auto stats = passthrough->stats();
  fmt::print("\n{:<40}{:>6}\n", "guest config writes (each an exit)", stats.config_writes);
  fmt::print("{:<40}{:>6}\n", "VFIO_DEVICE_SET_IRQS calls", stats.set_irqs);
  fmt::print("{:<40}{:>6}\n", "interrupts the VMM relayed", stats.relayed);
  fmt::print("{}\n", after ? "PASS" : "FAIL");

  // Teardown, in VfioVm's order: the device (held by the root too) goes with the machine, while the routes, the
  // binder and the slots it uses still exist; then those; then the DMA mappings.
  root.set_bar_observer(nullptr);
  passthrough.reset();
  pci->reset();
  slots.reset();
  binder.reset();
  routing.reset();
  dma.reset();
  return after ? 0 : 1;
}

}  // namespace lab08::walk

int main() {
  // Line-buffered even into a file or a pipe, so that under gdb (and in the gdb tests' captured output) each line
  // appears where it happened, between gdb's own.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return lab08::walk::run();
}
