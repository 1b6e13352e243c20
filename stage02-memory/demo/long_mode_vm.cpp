#include "long_mode_vm.hpp"

#include <fmt/format.h>

#include <cstring>

#include "vmm/memory/x86_layout.hpp"
#include "vmmlab/boot_info.h"

namespace vmm::stage02 {

using memory::GuestAddress;

std::vector<std::byte> input_pattern(std::size_t size, unsigned seed) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
  }
  return bytes;
}

std::uint64_t fnv1a64(std::span<const std::byte> data) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (std::byte b : data) {
    hash ^= std::to_integer<std::uint64_t>(b);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

Result<LongModeVm> LongModeVm::create(const GuestImage& image, const LongModeVmConfig& config) {
  auto kvm = kvm::Kvm::open();
  if (!kvm) {
    return std::unexpected(kvm.error());
  }
  auto cpuid = kvm->supported_cpuid();
  if (!cpuid) {
    return std::unexpected(cpuid.error());
  }
  auto vm = kvm->create_vm();
  if (!vm) {
    return std::unexpected(vm.error());
  }
  // Guest RAM from 0, then the output region; each region becomes a KVM slot (0, 1, ...) in address order.
  if (config.ram_size > layout::kMaxRam) {
    return logic_error("LongModeVm::create", fmt::format("{:#x} bytes of RAM would overlap the output region at {:#x}",
                                                         config.ram_size, layout::kOutput));
  }
  auto ram_layout = memory::x86::layout_for(config.ram_size);
  if (!ram_layout) {
    return std::unexpected(ram_layout.error());
  }
  const memory::RegionOptions options{.backing = config.memfd ? memory::Backing::memfd : memory::Backing::anonymous,
                                      .hugepages = config.hugepages};
  auto guest_memory = memory::x86::allocate(*ram_layout, options);
  if (!guest_memory) {
    return std::unexpected(guest_memory.error());
  }
  auto output = memory::GuestMemoryRegion::create(GuestAddress(layout::kOutput), layout::kOutputSize, options);
  if (!output) {
    return std::unexpected(output.error());
  }
  if (auto rc = guest_memory->add_region(std::move(*output)); !rc) {
    return std::unexpected(rc.error());
  }
  if (auto rc = memory::register_with(*guest_memory, *vm, 0); !rc) {
    return std::unexpected(rc.error());
  }
  // Only the output region is logged. (In the rig, on AMD nested paging, logging RAM as well showed pages the guest
  // had only read, such as its page tables and code: see README.md.)
  const auto output_slot = static_cast<std::uint32_t>(guest_memory->regions().size() - 1);
  if (config.dirty_logging) {
    if (auto rc = memory::enable_dirty_logging(*vm, output_slot); !rc) {
      return std::unexpected(rc.error());
    }
  }
  if (config.prepare_vm) {
    if (auto rc = config.prepare_vm(*vm); !rc) {
      return std::unexpected(rc.error());
    }
  }
  auto vcpu = vm->create_vcpu(0);
  if (!vcpu) {
    return std::unexpected(vcpu.error());
  }
  LongModeVm machine(std::move(*kvm), std::move(*vm), std::move(*guest_memory), std::move(*vcpu), config);
  machine.output_slot_ = output_slot;

  // The program, then what it is told, then the CPU state that starts it.
  if (auto rc = machine.memory_.write(GuestAddress(image.load_address), image.bytes); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("loading guest '{}'", image.name)));
  }
  const vmmlab_boot_info info{
      .magic = VMMLAB_BOOT_INFO_MAGIC,
      .input = layout::kInput,
      .input_size = 0,
      .result = layout::kResult,
      .message = layout::kMessage,
      .message_size = layout::kMessageSize,
  };
  if (auto rc = machine.memory_.write_obj(GuestAddress(layout::kBootInfo), info); !rc) {
    return std::unexpected(rc.error());
  }
  auto tables = x86::enter_long_mode(machine.vcpu_, machine.memory_, *cpuid,
                                     {.gdt = GuestAddress(layout::kGdt),
                                      .page_tables = GuestAddress(layout::kPageTables),
                                      .identity_map_bytes = 4ull << 30,
                                      .entry = image.entry,
                                      .stack_top = layout::kStackTop,
                                      .argument = layout::kBootInfo});
  if (!tables) {
    return std::unexpected(tables.error());
  }
  machine.page_tables_ = std::move(*tables);
  return machine;
}

Result<void> LongModeVm::set_input(std::span<const std::byte> input) {
  if (input.size() > layout::kMaxInput) {
    return logic_error("set_input", fmt::format("{} bytes do not fit below the result page", input.size()));
  }
  if (auto rc = memory_.write(GuestAddress(layout::kInput), input); !rc) {
    return rc;
  }
  const std::uint64_t size = input.size();
  return memory_.write_obj(GuestAddress(layout::kBootInfo + offsetof(vmmlab_boot_info, input_size)), size);
}

Result<stage01::RunOutcome> LongModeVm::run(const stage01::IoHook& hook, std::size_t max_exits) {
  report_ = {};
  auto report_channel = [&](kvm::IoExit& io) {
    if (hook && hook(io)) {
      return true;
    }
    if (io.direction != kvm::IoDirection::Out || io.size != 4 ||
        (io.port != VMMLAB_PORT_EXIT && io.port != VMMLAB_PORT_REPORT)) {
      return false;
    }
    for (std::uint32_t i = 0; i < io.count; ++i) {
      std::uint32_t value = 0;
      std::memcpy(&value, io.item(i).data(), sizeof(value));
      if (io.port == VMMLAB_PORT_EXIT) {
        report_.exit_status = value;
      } else {
        report_.values.push_back(value);
      }
    }
    return true;
  };
  return stage01::run_vcpu(vcpu_, {.trace = config_.trace, .record_trace = config_.record_trace}, report_channel,
                           max_exits);
}

Result<memory::DirtyLog> LongModeVm::dirty_pages() {
  return memory::dirty_pages(vm_, output_slot_);
}

}  // namespace vmm::stage02
