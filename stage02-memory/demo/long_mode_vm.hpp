#pragma once
/// @file
/// @brief `LongModeVm`: stage02's machine. Guest memory from the x86 layout, one vCPU started in 64-bit mode, the
///        guest runtime's boot info, and dirty logging.

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "test_vm.hpp"  // stage01's run loop (run_vcpu, RunOutcome, IoHook)
#include "vmm/guest_image.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/memory/guest_memory.hpp"
#include "vmm/memory/kvm_memory.hpp"
#include "vmm/x86/long_mode.hpp"

namespace vmm::stage02 {

/// @brief Where stage02 puts things in guest-physical memory (see README.md for the picture).
namespace layout {
inline constexpr std::uint64_t kGdt = 0x1000;         ///< Three descriptors.
inline constexpr std::uint64_t kBootInfo = 0x2000;    ///< struct vmmlab_boot_info; RDI points here.
inline constexpr std::uint64_t kPageTables = 0x9000;  ///< PML4, PDPT, four page directories (4 GiB, 2 MiB pages).
inline constexpr std::uint64_t kInput = 0x200000;     ///< The buffer the VMM fills for the guest.
inline constexpr std::uint64_t kMaxInput = 0x100000;  ///< 1 MiB at most.
/// The output region: a second memory region and KVM slot, the only one with dirty logging. Everything the guest
/// writes lives here (its stack, its result, its message); everything it only reads lives in RAM.
inline constexpr std::uint64_t kOutput = 0x8000'0000;          ///< 2 GiB, below the PCI hole.
inline constexpr std::uint64_t kOutputSize = 0x20000;          ///< 128 KiB.
inline constexpr std::uint64_t kStackTop = kOutput + 0x10000;  ///< RSP at entry; the stack grows down.
inline constexpr std::uint64_t kResult = kOutput + 0x10000;    ///< The guest's 64-bit result.
inline constexpr std::uint64_t kMessage = kOutput + 0x11000;   ///< The guest's message.
inline constexpr std::uint64_t kMessageSize = 256;             ///< Its capacity, NUL included.
inline constexpr std::uint64_t kMaxRam = kOutput;              ///< RAM must end below the output region.
}  // namespace layout

/// @brief How to build the machine.
struct LongModeVmConfig {
  std::uint64_t ram_size = 16ull << 20;  ///< Guest RAM from 0 (at most layout::kMaxRam).
  bool memfd = false;                    ///< Back RAM with a memfd (shareable, as stage07 will need).
  bool hugepages = false;                ///< Ask for huge pages.
  bool dirty_logging = true;             ///< Log the guest's writes to the output region's slot.
  bool trace = false;                    ///< Print every exit to stderr.
  bool record_trace = false;             ///< Keep every exit's description (tests).
  /// Called after the memory slots are registered and before the vCPU is created: what must happen in that window
  /// (stage03: KVM_CREATE_IRQCHIP, which KVM refuses once a vCPU exists).
  std::function<Result<void>(kvm::Vm&)> prepare_vm = nullptr;
};

/// @brief What the guest told the VMM through the runtime's report channel.
struct GuestReport {
  std::optional<std::uint32_t> exit_status;  ///< Written to VMMLAB_PORT_EXIT; 0 = PASS.
  std::vector<std::uint32_t> values;         ///< Written to VMMLAB_PORT_REPORT, in order.
};

/// @brief The stage02 machine: a 64-bit guest program on guest memory the VMM laid out.
class LongModeVm {
 public:
  /// @brief Creates the VM, its memory and slots, loads `image`, writes the boot info and enters long mode.
  [[nodiscard]] static Result<LongModeVm> create(const GuestImage& image, const LongModeVmConfig& config = {});

  /// @brief Copies `input` to layout::kInput and records its size in the boot info.
  [[nodiscard]] Result<void> set_input(std::span<const std::byte> input);

  /// @brief Runs the guest (stage01's loop) and collects its reports; `hook` sees other port I/O first.
  [[nodiscard]] Result<stage01::RunOutcome> run(const stage01::IoHook& hook = {}, std::size_t max_exits = 100000);

  /// @brief The pages of the output region the guest wrote since logging was enabled (or since the last call).
  [[nodiscard]] Result<memory::DirtyLog> dirty_pages();

  /// @brief What the guest reported during the last run.
  [[nodiscard]] const GuestReport& report() const noexcept { return report_; }
  /// @brief The page tables written by `create`.
  [[nodiscard]] const x86::PageTables& page_tables() const noexcept { return page_tables_; }
  [[nodiscard]] const memory::GuestMemory& memory() const noexcept { return memory_; }
  [[nodiscard]] kvm::Vm& vm() noexcept { return vm_; }
  [[nodiscard]] kvm::Vcpu& vcpu() noexcept { return vcpu_; }
  /// @brief The KVM slot of the output region.
  [[nodiscard]] std::uint32_t output_slot() const noexcept { return output_slot_; }

 private:
  LongModeVm(kvm::Kvm kvm, kvm::Vm vm, memory::GuestMemory memory, kvm::Vcpu vcpu, LongModeVmConfig config)
      : kvm_(std::move(kvm)), vm_(std::move(vm)), memory_(std::move(memory)), vcpu_(std::move(vcpu)), config_(config) {}

  kvm::Kvm kvm_;
  kvm::Vm vm_;
  memory::GuestMemory memory_;
  kvm::Vcpu vcpu_;
  LongModeVmConfig config_;
  x86::PageTables page_tables_;
  std::uint32_t output_slot_ = 0;
  GuestReport report_;
};

/// @brief A reproducible input for the checksum guest: byte i is (i * 131 + seed) mod 256. The demo, the tests and
///        the labs all use it, so runs can be compared.
[[nodiscard]] std::vector<std::byte> input_pattern(std::size_t size, unsigned seed);

/// @brief FNV-1a 64, what the checksum guest computes: the host's reference.
[[nodiscard]] std::uint64_t fnv1a64(std::span<const std::byte> data);

}  // namespace vmm::stage02
