#include "vmm/machine/vmm.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/pci_regs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "vmm/boot/boot_params.hpp"
#include "vmm/boot/layout.hpp"
#include "vmm/boot/mptable.hpp"
#include "vmm/fd.hpp"
#include "vmm/memory/kvm_memory.hpp"
#include "vmm/vhost/msix_calls.hpp"
#include "vmm/virtio/blk/blk_device.hpp"
#include "vmm/virtio/net/net_device.hpp"
#include "vmm/virtio/net/tap.hpp"
#include "vmm/virtio/retry_timer.hpp"
#include "vmm/virtio/rng/rng_device.hpp"
#include "vmm/x86/cpuid.hpp"
#include "vmm/x86/long_mode.hpp"
#include "vmm/x86/vcpu_init.hpp"

namespace vmm::machine {
namespace {

constexpr std::uint64_t kMaxKernelBytes = 512ull << 20;
constexpr std::uint64_t kMaxInitramfsBytes = 1ull << 30;
// 32-bit BARs go in the PCI hole below the IOAPIC; I/O BARs above the legacy ports.
constexpr std::uint64_t kMmioWindowBase = memory::x86::kPciHoleStart;
constexpr std::uint64_t kMmioWindowEnd = boot::layout::kIoapic;
constexpr std::uint64_t kIoWindowBase = 0xc000;
constexpr std::uint64_t kIoWindowEnd = 0x10000;
// KVM memory slots: RAM regions from 0, VFIO BAR mappings from here.
constexpr std::uint32_t kFirstDeviceSlot = 16;

}  // namespace

const char* to_string(VmExitReason reason) {
  switch (reason) {
    case VmExitReason::Reset:
      return "reset";
    case VmExitReason::TripleFault:
      return "triple fault";
    case VmExitReason::Stopped:
      return "stopped";
    case VmExitReason::Error:
      return "error";
  }
  return "?";
}

Result<std::unique_ptr<Vmm>> Vmm::create(const VmConfig& config, devices::Uart16550::OutputSink console) {
  std::unique_ptr<Vmm> vmm(new Vmm());
  vmm->config_ = config;
  if (config.cpus == 0 || config.cpus > boot::kMaxCpus) {
    return logic_error("final-vmm", fmt::format("{} vCPUs: between 1 and {}", config.cpus, boot::kMaxCpus));
  }
  auto kvm = kvm::Kvm::open();
  if (!kvm) {
    return std::unexpected(kvm.error());
  }
  vmm->kvm_.emplace(std::move(*kvm));
  auto vm = vmm->kvm_->create_vm();
  if (!vm) {
    return std::unexpected(vm.error());
  }
  vmm->vm_.emplace(std::move(*vm));
  if (auto rc = vmm->vm_->set_tss_address(boot::layout::kTss); !rc) {
    return std::unexpected(rc.error());
  }
  // The in-kernel PIC, IOAPIC and LAPICs, and the PIT (Linux checks its timer interrupt through the IOAPIC while
  // setting it up). Both must exist before the first vCPU.
  if (auto rc = devices::create_irqchip(*vmm->vm_); !rc) {
    return std::unexpected(rc.error());
  }
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;  // port 0x61 answers without a speaker behind it
  if (auto rc = VMM_IOCTL(vmm->vm_->fd(), KVM_CREATE_PIT2, &pit); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = vmm->build_memory(config); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = vmm->load_guest(config); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = vmm->create_vcpus(config); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = vmm->create_legacy_devices(std::move(console)); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = vmm->create_pci_devices(config); !rc) {
    return std::unexpected(rc.error());
  }
  return vmm;
}

Result<void> Vmm::build_memory(const VmConfig& config) {
  auto layout = memory::x86::layout_for(config.memory.size);
  if (!layout) {
    return std::unexpected(layout.error());
  }
  layout_ = std::move(*layout);
  memory::RegionOptions options;
  options.backing = config.memory.shared ? memory::Backing::memfd : memory::Backing::anonymous;
  options.hugepages = config.memory.hugepages;
  auto memory = memory::x86::allocate(layout_, options);
  if (!memory) {
    return std::unexpected(memory.error());
  }
  memory_ = std::move(*memory);
  return memory::register_with(memory_, *vm_, 0);
}

Result<void> Vmm::load_guest(const VmConfig& config) {
  using namespace boot;
  auto file = read_file(config.kernel, kMaxKernelBytes);
  if (!file) {
    return std::unexpected(file.error().with_context("--kernel"));
  }
  auto kernel = load_kernel(memory_, *file);
  if (!kernel) {
    return std::unexpected(kernel.error().with_context(config.kernel));
  }
  boot_.kernel = std::move(*kernel);
  const std::uint64_t low_ram_end = layout_.ram.front().end().raw();

  BootParamsInput input;
  if (config.initramfs) {
    auto initramfs = read_file(*config.initramfs, kMaxInitramfsBytes);
    if (!initramfs) {
      return std::unexpected(initramfs.error().with_context("--initramfs"));
    }
    auto at = place_initramfs(boot_.kernel, initramfs->size(), low_ram_end);
    if (!at) {
      return std::unexpected(at.error());
    }
    if (auto rc = memory_.write(memory::GuestAddress{*at}, *initramfs); !rc) {
      return std::unexpected(rc.error());
    }
    boot_.initramfs = *at;
    boot_.initramfs_size = initramfs->size();
    input.initramfs_address = *at;
    input.initramfs_size = initramfs->size();
  }

  boot_.cmdline = config.cmdline;
  if (boot_.cmdline.size() + 1 > layout::kCmdlineMax) {
    return logic_error("--cmdline", fmt::format("{} bytes: too long", boot_.cmdline.size()));
  }
  std::vector<std::byte> cmdline(boot_.cmdline.size() + 1);
  std::memcpy(cmdline.data(), boot_.cmdline.data(), boot_.cmdline.size());
  if (auto rc = memory_.write(memory::GuestAddress{layout::kCmdline}, cmdline); !rc) {
    return std::unexpected(rc.error());
  }
  input.cmdline_address = layout::kCmdline;
  input.cmdline_size = static_cast<std::uint32_t>(boot_.cmdline.size());
  input.e820 = e820_map(layout_);
  auto params = make_boot_params(boot_.kernel, input);
  if (!params) {
    return std::unexpected(params.error());
  }
  if (auto rc = memory_.write_obj(memory::GuestAddress{layout::kZeroPage}, *params); !rc) {
    return std::unexpected(rc.error());
  }
  boot_.zero_page = layout::kZeroPage;
  if (auto rc = write_boot_gdt(memory_, memory::GuestAddress{layout::kGdt}); !rc) {
    return std::unexpected(rc.error());
  }
  // The 64-bit entry wants paging on with the kernel, the zero page and the command line identity-mapped: map all
  // of the first 4 GiB (stage02's tables, 2 MiB pages). The kernel replaces them with its own at once.
  if (auto tables = x86::write_identity_page_tables(memory_, memory::GuestAddress{layout::kPageTables}, 4ull << 30);
      !tables) {
    return std::unexpected(tables.error());
  }
  return {};
}

Result<void> Vmm::create_vcpus(const VmConfig& config) {
  auto supported = kvm_->supported_cpuid();
  if (!supported) {
    return std::unexpected(supported.error());
  }
  // The MP table's processor entries carry the CPU's signature and features, as firmware would write them.
  boot::MpTableConfig mp{.cpus = config.cpus};
  for (const auto& entry : *supported) {
    if (entry.function == 1) {
      mp.cpu_signature = entry.eax;
      mp.cpu_features = entry.edx;
    }
  }
  auto written = boot::write_mptable(memory_, memory::GuestAddress{boot::layout::kEbda}, mp);
  if (!written) {
    return std::unexpected(written.error());
  }
  boot_.mptable_bytes = *written;

  for (std::uint32_t i = 0; i < config.cpus; ++i) {
    auto vcpu = vm_->create_vcpu(i);
    if (!vcpu) {
      return std::unexpected(vcpu.error());
    }
    auto& v = *vcpus_.emplace_back(std::make_unique<kvm::Vcpu>(std::move(*vcpu)));
    const auto context = fmt::format("vCPU {}", i);
    if (auto rc = x86::set_cpuid(v, x86::cpuid_for_vcpu(*supported, i, config.cpus)); !rc) {
      return std::unexpected(rc.error().with_context(context));
    }
    if (auto rc = x86::set_msrs(v, x86::boot_msrs()); !rc) {
      return std::unexpected(rc.error().with_context(context));
    }
    if (auto rc = x86::set_boot_fpu(v); !rc) {
      return std::unexpected(rc.error().with_context(context));
    }
    if (auto rc = x86::set_lapic_lints(v); !rc) {
      return std::unexpected(rc.error().with_context(context));
    }
  }
  // Only the bootstrap processor gets registers: the others wait, in KVM, for the INIT and SIPI Linux sends them.
  return x86::set_boot_registers(*vcpus_.front(), {.rip = boot_.kernel.entry,
                                                   .boot_params = boot_.zero_page,
                                                   .stack_top = boot::layout::kStackTop,
                                                   .gdt = memory::GuestAddress{boot::layout::kGdt},
                                                   .page_tables = memory::GuestAddress{boot::layout::kPageTables}});
}

Result<void> Vmm::create_legacy_devices(devices::Uart16550::OutputSink console) {
  irq4_ = std::make_unique<devices::KvmIrqLine>(*vm_, 4);
  irq1_ = std::make_unique<devices::KvmIrqLine>(*vm_, devices::i8042::kKeyboardIrq);
  uart_ = std::make_shared<devices::Uart16550>(*irq4_, std::move(console));
  if (auto rc = buses_.io.insert(uart_, 0x3f8, devices::uart::kPortCount, "serial0 (COM1)"); !rc) {
    return std::unexpected(rc.error());
  }
  i8042_ = std::make_unique<devices::I8042>(*irq1_, [this] {
    report({VmExitReason::Reset, "the guest pulled the i8042 reset line"});
  });
  if (auto rc = buses_.io.insert(i8042_->data_port(), devices::i8042::kDataPort, 1, "i8042 data"); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = buses_.io.insert(i8042_->command_port(), devices::i8042::kCommandPort, 1, "i8042 command"); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc =
          buses_.io.insert(std::make_shared<devices::Cmos>(), devices::cmos::kBase, devices::cmos::kSize, "cmos rtc");
      !rc) {
    return std::unexpected(rc.error());
  }
  root_ = std::make_unique<pci::PciRoot>(buses_.io, buses_.mmio);
  if (auto rc = buses_.io.insert(std::make_shared<pci::ConfigMechanism1>(*root_), pci::ConfigMechanism1::kBase,
                                 pci::ConfigMechanism1::kSize, "pci-conf1");
      !rc) {
    return std::unexpected(rc.error());
  }
  return {};
}

Result<void> Vmm::create_pci_devices(const VmConfig& config) {
  auto mmio = pci::AddressAllocator::create(kMmioWindowBase, kMmioWindowEnd - kMmioWindowBase);
  auto io = pci::AddressAllocator::create(kIoWindowBase, kIoWindowEnd - kIoWindowBase);
  if (!mmio || !io) {
    return std::unexpected(!mmio ? mmio.error() : io.error());
  }
  mmio_window_.emplace(std::move(*mmio));
  io_window_.emplace(std::move(*io));
  // One GSI routing table for the whole VM (KVM_SET_GSI_ROUTING replaces all of it), shared by every device's
  // MSI-X routes.
  routing_ = std::make_unique<irq::KvmGsiRouting>(*vm_);
  binder_ = std::make_unique<irq::KvmIrqfdBinder>(*vm_);
  root_->set_bar_observer([this](const pci::BarMapping& mapping, bool placed) { on_bar(mapping, placed); });

  if (config.rng) {
    virtio::rng::RngConfig rng;
    if (config.rng->source != "/dev/urandom") {
      auto source = virtio::rng::file_source(config.rng->source);
      if (!source) {
        return std::unexpected(source.error().with_context("--rng src"));
      }
      rng.source = std::move(*source);
    }
    auto device = virtio::rng::RngDevice::create(std::move(rng), std::make_shared<virtio::ThreadRetryTimer>());
    if (!device) {
      return std::unexpected(device.error());
    }
    if (auto rc = add_virtio(std::move(*device), config.rng->source, true); !rc) {
      return rc;
    }
  }
  for (std::size_t i = 0; i < config.disks.size(); ++i) {
    const auto& disk = config.disks[i];
    virtio::blk::BlkConfig blk;
    blk.path = disk.path;
    blk.read_only = disk.readonly;
    blk.serial = disk.serial.empty() ? fmt::format("vmmlab-disk{}", i) : disk.serial;
    auto device = virtio::blk::BlkDevice::open(std::move(blk));
    if (!device) {
      return std::unexpected(device.error().with_context("--disk"));
    }
    if (auto rc = add_virtio(std::move(*device), disk.path, true); !rc) {
      return rc;
    }
  }
  for (std::size_t i = 0; i < config.nets.size(); ++i) {
    const auto& net = config.nets[i];
    virtio::net::TapConfig tap_config{.name = net.tap, .ip = net.ip, .mask = net.mask};
    auto tap = virtio::net::Tap::open(tap_config);
    if (!tap) {
      return std::unexpected(tap.error().with_context("--net"));
    }
    virtio::net::NetConfig net_config;
    // 52:54:00 is the locally administered prefix QEMU made customary; the last byte numbers the interfaces.
    net_config.mac = {0x52, 0x54, 0x00, 0x12, 0x34, static_cast<std::uint8_t>(0x56 + i)};
    if (net.mac) {
      net_config.mac = *net.mac;
    }
    auto device = virtio::net::NetDevice::create(std::move(*tap), net_config);
    if (!device) {
      return std::unexpected(device.error());
    }
    if (auto rc = add_virtio(std::move(*device), "tap " + net.tap, true); !rc) {
      return rc;
    }
  }
  for (const auto& blk : config.vhost_user_blk) {
    if (auto rc = add_vhost_user(blk, VIRTIO_ID_BLOCK); !rc) {
      return rc;
    }
  }
  for (const auto& rng : config.vhost_user_rng) {
    if (auto rc = add_vhost_user(rng, VIRTIO_ID_RNG); !rc) {
      return rc;
    }
  }
  for (const auto& device : config.vfio) {
    if (auto rc = add_vfio(device); !rc) {
      return rc;
    }
  }
  return {};
}

Result<void> Vmm::add_virtio(std::shared_ptr<virtio::VirtioDevice> model, std::string backend, bool threaded) {
  VirtioSlot entry;
  entry.slot = next_slot();
  entry.backend = std::move(backend);
  entry.model = model;
  std::shared_ptr<virtio::VirtioDevice> driven = model;
  if (threaded) {
    // The device works on its own thread (stage06): a kick is an ioeventfd the worker waits on, never an exit.
    auto worker = virtio::ThreadedDevice::create(model);
    if (!worker) {
      return std::unexpected(worker.error());
    }
    entry.threaded = *worker;
    driven = *worker;
  } else {
    entry.frontend = std::dynamic_pointer_cast<vhost::VhostUserFrontend>(model);
  }
  // One MSI-X vector per queue plus one for configuration changes, each with a GSI route and an irqfd.
  const auto queues = static_cast<std::uint16_t>(driven->queue_max_sizes().size());
  auto routes = irq::MsixRoutes::create(static_cast<std::uint16_t>(queues + 1), *routing_, *binder_);
  if (!routes) {
    return std::unexpected(routes.error());
  }
  entry.routes = std::move(*routes);
  auto transport = virtio::VirtioPciDevice::create(driven, memory_, *entry.routes);
  if (!transport) {
    return std::unexpected(transport.error());
  }
  entry.transport = std::move(*transport);
  if (auto rc = entry.routes->attach(entry.transport->msix()); !rc) {
    return std::unexpected(rc.error());
  }
  std::vector<const event::EventFd*> events;
  for (std::uint16_t q = 0; q < queues; ++q) {
    events.push_back(entry.threaded ? &entry.threaded->queue_event(q) : &entry.frontend->kick_event(q));
  }
  entry.ioeventfds = std::make_unique<virtio::NotifyIoeventfds>(*vm_, std::move(events));
  if (entry.threaded) {
    auto* ioeventfds = entry.ioeventfds.get();
    entry.threaded->set_activation_observer([ioeventfds](bool active) { ioeventfds->set_active(active); });
  } else {
    // A vhost-user backend looks at every ring when it starts, so a kick before activation costs nothing.
    entry.ioeventfds->set_active(true);
  }
  const auto slot = entry.slot;
  auto transport_device = entry.transport;
  virtio_.push_back(std::move(entry));
  if (auto rc = root_->add_device(transport_device, slot); !rc) {
    return rc;
  }
  return assign_bars(slot);
}

Result<void> Vmm::add_vhost_user(const VhostUserConfig& config, std::uint16_t device_type) {
  vhost::FrontendConfig frontend_config;
  frontend_config.socket_path = config.socket;
  frontend_config.device_type = device_type;
  frontend_config.queues = 1;
  frontend_config.config_size = device_type == VIRTIO_ID_BLOCK ? sizeof(virtio_blk_config) : 0;
  auto frontend = vhost::VhostUserFrontend::connect(frontend_config);
  if (!frontend) {
    return std::unexpected(
        frontend.error().with_context(fmt::format("--vhost-user-{}", device_type == VIRTIO_ID_BLOCK ? "blk" : "rng")));
  }
  if (auto rc = add_virtio(*frontend, "vhost-user " + config.socket, false); !rc) {
    return rc;
  }
  // The backend writes the irqfds of the guest's vectors directly (stage07's wiring); a failed re-point is the
  // frontend's last_error, which --stats shows.
  auto& entry = virtio_.back();
  vhost::follow_msix_routes(*entry.frontend, *entry.transport, *entry.routes, nullptr);
  return {};
}

Result<void> Vmm::add_vfio(const VfioConfig& config) {
  // The BDF is the last path component of /sys/bus/pci/devices/BDF.
  const auto slash = config.path.find_last_of('/');
  const std::string bdf = slash == std::string::npos ? config.path : config.path.substr(slash + 1);
  if (!container_) {
    auto container = vfio::Container::open();
    if (!container) {
      return std::unexpected(container.error().with_context("--device"));
    }
    container_ = std::make_unique<vfio::Container>(std::move(*container));
  }
  VfioSlot entry;
  entry.bdf = bdf;
  auto group = vfio::Group::open_for_device(bdf);
  if (!group) {
    return std::unexpected(group.error());
  }
  entry.group = std::make_unique<vfio::Group>(std::move(*group));
  if (auto rc = entry.group->set_container(*container_); !rc) {
    return rc;
  }
  if (!dma_) {
    // The IOMMU type is set once, after the first group joins the container; then all of RAM is mapped at
    // IOVA = guest-physical address, before the guest can point the device at any of it.
    if (auto rc = container_->set_iommu(VFIO_TYPE1v2_IOMMU); !rc) {
      return rc;
    }
    auto kvm_vfio = vfio::KvmVfioDevice::create(*vm_);
    if (!kvm_vfio) {
      return std::unexpected(kvm_vfio.error());
    }
    kvm_vfio_.emplace(std::move(*kvm_vfio));
    dma_ = std::make_unique<vfio::GuestRamDma>(*container_);
    if (auto rc = dma_->sync(memory_); !rc) {
      return rc;
    }
    device_slots_ = std::make_unique<vfio::KvmDeviceMemorySlots>(*vm_, kFirstDeviceSlot);
  }
  if (auto rc = kvm_vfio_->add_group(entry.group->fd(), entry.group->number()); !rc) {
    return rc;
  }
  auto device = entry.group->device(bdf);
  if (!device) {
    return std::unexpected(device.error());
  }
  entry.device = std::make_shared<vfio::Device>(std::move(*device));
  auto passthrough = vfio::VfioPciDevice::create(
      entry.device, vfio::PassthroughWiring{routing_.get(), binder_.get(), device_slots_.get()});
  if (!passthrough) {
    return std::unexpected(passthrough.error());
  }
  entry.passthrough = std::move(*passthrough);
  entry.slot = next_slot();
  const auto slot = entry.slot;
  auto device_ptr = entry.passthrough;
  vfio_.push_back(std::move(entry));
  if (auto rc = root_->add_device(device_ptr, slot); !rc) {
    return rc;
  }
  return assign_bars(slot);
}

void Vmm::write_config(std::uint8_t slot, std::uint16_t reg, std::uint32_t value, std::size_t size) {
  std::array<std::uint8_t, 4> bytes{};
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<std::uint8_t>(value >> (8 * i));
  }
  root_->config_write(0, slot, 0, reg, std::span(bytes).first(size));
}

Result<void> Vmm::assign_bars(std::uint8_t slot) {
  // There is no firmware: the VMM does its job and gives every BAR an address and turns decoding on, so Linux
  // finds the devices configured, as on a PC after the BIOS ran (and as Cloud Hypervisor and Firecracker do).
  auto device = root_->device(slot);
  std::uint16_t command = 0;
  for (const auto& bar : device->bars()) {
    auto& window = bar.is_io() ? *io_window_ : *mmio_window_;
    auto address = window.allocate(bar.size, bar.size);
    if (!address) {
      return std::unexpected(address.error().with_context(fmt::format("BAR{} of 00:{:02x}.0", bar.index, slot)));
    }
    write_config(slot, bar.register_offset(), static_cast<std::uint32_t>(*address), 4);
    if (bar.is_64bit()) {
      write_config(slot, static_cast<std::uint16_t>(bar.register_offset() + 4),
                   static_cast<std::uint32_t>(*address >> 32), 4);
    }
    command |= bar.is_io() ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
  }
  if (command != 0) {
    write_config(slot, PCI_COMMAND, command, 2);
  }
  return {};
}

void Vmm::on_bar(const pci::BarMapping& mapping, bool placed) {
  for (auto& entry : virtio_) {
    if (entry.slot == mapping.device_number && mapping.bar_index == virtio::VirtioPciDevice::kRegionsBar &&
        entry.ioeventfds) {
      entry.ioeventfds->bar0_placed(placed ? std::optional(mapping.base) : std::nullopt);
    }
  }
  for (auto& entry : vfio_) {
    if (entry.slot == mapping.device_number) {
      entry.passthrough->bar_placed(mapping.bar_index, placed ? std::optional(mapping.base) : std::nullopt);
    }
  }
}

Result<void> Vmm::start(OnExit on_exit) {
  {
    std::lock_guard lock(exit_mutex_);
    on_exit_ = std::move(on_exit);
  }
  for (std::size_t i = 0; i < vcpus_.size(); ++i) {
    auto thread = VcpuThread::start(
        *vcpus_[i], buses_, {.trace = config_.trace, .counters = exits_.get(), .debug_hook = debug_hook_},
        [this, i](const Result<VcpuOutcome>& outcome) {
          if (!outcome) {
            report({VmExitReason::Error, fmt::format("vCPU {}: {}", i, outcome.error().message())});
          } else if (outcome->reason == VcpuStop::Shutdown) {
            report({VmExitReason::TripleFault, fmt::format("vCPU {}: triple fault (KVM_EXIT_SHUTDOWN)", i)});
          } else if (outcome->reason != VcpuStop::Requested) {
            report({VmExitReason::Error,
                    fmt::format("vCPU {} stopped ({}): {}", i, to_string(outcome->reason), outcome->detail)});
          }
        });
    if (!thread) {
      return std::unexpected(thread.error());
    }
    // Under the lock `report` takes: a vCPU already running may end the VM (a triple fault at once) while later
    // threads are still being started, and must neither race with this push nor miss the new thread.
    std::lock_guard lock(exit_mutex_);
    if (exited_) {
      (*thread)->request_stop();
    }
    threads_.push_back(std::move(*thread));
  }
  return {};
}

void Vmm::report(VmExit exit) {
  OnExit callback;
  {
    std::lock_guard lock(exit_mutex_);
    if (exited_) {
      return;
    }
    exited_ = true;
    callback = on_exit_;
    // Every vCPU stops now: a reset or a triple fault ends the whole machine, not just the CPU that caused it.
    // (request_stop only sets a flag and signals the thread; threads started later see `exited_` in `start`.)
    for (auto& thread : threads_) {
      thread->request_stop();
    }
  }
  if (callback) {
    callback(exit);
  }
}

void Vmm::stop() {
  report({VmExitReason::Stopped, "stopped by the host"});  // asks every vCPU to stop, unless an end came first
  for (auto& thread : threads_) {
    thread->join();
  }
}

Vmm::~Vmm() {
  stop();
  threads_.clear();
  if (root_) {
    root_->set_bar_observer(nullptr);
  }
  // Devices refer to the VM (ioeventfds, irqfds, memory slots) and to the routing table: take them apart first,
  // each as its stage did. Workers and backends stop before their eventfds and routes go.
  for (auto& entry : virtio_) {
    if (entry.frontend) {
      entry.frontend->set_call_source(nullptr);
      entry.frontend->reset();
    }
    if (entry.threaded) {
      entry.threaded->set_activation_observer(nullptr);
      entry.threaded->reset();
    }
    if (entry.routes) {
      entry.routes->set_listener(nullptr);
    }
    if (entry.transport) {
      entry.transport->msix().set_observer(nullptr);
    }
    entry.ioeventfds.reset();
  }
  root_.reset();  // drops the transports and passthrough devices (removing their BARs and memory slots)
  for (auto& entry : virtio_) {
    entry.transport.reset();
    entry.routes.reset();
  }
  virtio_.clear();
  vfio_.clear();
  device_slots_.reset();
  binder_.reset();
  routing_.reset();
  dma_.reset();
  kvm_vfio_.reset();
}

}  // namespace vmm::machine

namespace vmm::machine {

Topology Vmm::topology() const {
  Topology t;
  t.vcpus = static_cast<std::uint32_t>(vcpus_.size());
  t.ram_bytes = memory_.total_size();
  const auto mappings = root_->mappings();
  for (const devices::Bus* bus :
       {static_cast<const devices::Bus*>(&buses_.io), static_cast<const devices::Bus*>(&buses_.mmio)}) {
    for (const auto& entry : bus->entries()) {
      // PCI BARs appear under their function instead.
      const bool is_bar = std::any_of(mappings.begin(), mappings.end(), [&](const pci::BarMapping& m) {
        return m.base == entry.range.base && (m.space == pci::BarSpace::Io) == (bus->name() == "io");
      });
      if (!is_bar) {
        t.bus_devices.push_back(TopologyBusDevice{
            .bus = bus->name(), .name = entry.name, .base = entry.range.base, .size = entry.range.size});
      }
    }
  }
  for (std::uint8_t slot = 0; slot < pci::PciRoot::kDevicesPerBus; ++slot) {
    auto device = root_->device(slot);
    if (!device) {
      continue;
    }
    TopologyPciFunction f;
    f.slot = slot;
    f.name = device->name();
    std::array<std::uint8_t, 4> id{};
    root_->config_read(0, slot, 0, PCI_VENDOR_ID, id);
    f.vendor = static_cast<std::uint16_t>(id[0] | id[1] << 8);
    f.device = static_cast<std::uint16_t>(id[2] | id[3] << 8);
    root_->config_read(0, slot, 0, PCI_CLASS_REVISION, id);
    f.class_code = static_cast<std::uint32_t>(id[1] | id[2] << 8 | id[3] << 16);
    for (const auto& m : mappings) {
      if (m.device_number == slot) {
        f.bars.push_back({m.bar_index, m.space == pci::BarSpace::Io, m.base, m.size});
      }
    }
    for (const auto& entry : virtio_) {
      if (entry.slot != slot) {
        continue;
      }
      f.backend = entry.backend;
      for (std::uint16_t v = 0; v < entry.routes->vectors(); ++v) {
        TopologyVector vector{.vector = v, .gsi = entry.routes->gsi(v), .address = {}, .data = {}};
        if (auto route = entry.routes->route(v); route && route->message) {
          vector.address = route->message->address;
          vector.data = route->message->data;
        }
        f.vectors.push_back(vector);
      }
    }
    for (const auto& entry : vfio_) {
      if (entry.slot == slot) {
        f.backend = "vfio " + entry.bdf;
      }
    }
    t.pci.push_back(std::move(f));
  }
  return t;
}

std::vector<std::string> Vmm::device_stats() const {
  std::vector<std::string> lines;
  for (const auto& entry : virtio_) {
    std::string line = fmt::format("00:{:02x}.0 {} ({}):", entry.slot, entry.model->name(), entry.backend);
    // Every activation counts: a guest that rebooted reset its devices, which archived their counters.
    auto queues = entry.transport->counters();
    for (const auto& record : entry.transport->history()) {
      for (std::size_t q = 0; q < std::min(queues.size(), record.queues.size()); ++q) {
        queues[q].chains += record.queues[q].chains;
        queues[q].notifications += record.queues[q].notifications;
        queues[q].interrupts += record.queues[q].interrupts;
      }
    }
    for (std::size_t q = 0; q < queues.size(); ++q) {
      line += fmt::format(" queue {}: chains {} kicks {} interrupts {};", q, queues[q].chains, queues[q].notifications,
                          queues[q].interrupts);
    }
    if (auto net = std::dynamic_pointer_cast<virtio::net::NetDevice>(entry.model)) {
      const auto st = net->stats();
      line += fmt::format(" tx {} frames {} bytes ({} dropped), rx {} frames {} bytes ({} dropped);", st.tx_frames,
                          st.tx_bytes, st.tx_dropped, st.rx_frames, st.rx_bytes, st.rx_dropped);
      if (auto error = net->last_error()) {
        line += fmt::format(" net error: {};", error->message());
      }
    }
    if (auto error = entry.frontend ? entry.frontend->last_error() : std::nullopt) {
      line += fmt::format(" vhost-user error: {};", error->message());
    }
    if (auto error = entry.transport->last_error()) {
      line += fmt::format(" last error: {}", error->message());
    }
    lines.push_back(std::move(line));
  }
  for (const auto& entry : vfio_) {
    lines.push_back(fmt::format("00:{:02x}.0 vfio {}", entry.slot, entry.bdf));
  }
  return lines;
}

}  // namespace vmm::machine
