#pragma once
/// @file
/// @brief `PciTestDevice`: a small PCI function for guests and tests to exercise BARs, I/O decoding and MSI-X.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "vmm/error.hpp"
#include "vmm/pci/config_space.hpp"
#include "vmm/pci/msi.hpp"
#include "vmm/pci/msix.hpp"
#include "vmm/pci/pci_device.hpp"

namespace vmm::pci {

/// @brief vmmlab's PCI test device, in the spirit of QEMU's pci-testdev and edu (its own register layout).
///
/// IDs 1af4:10f1, class ff/00/00 ("unassigned class"). QEMU's docs/specs/pci-ids.rst sets 1af4:10f0-10ff (Red
/// Hat's former Qumranet vendor ID) aside "for experimental usage without registration", until code leaves the test
/// lab; vmmlab's test device never does. 1b36 (QEMU's own devices, like the host bridge) has no such range: every ID
/// there not assigned is reserved. A Linux guest's virtio-pci driver matches any 1af4 device but refuses IDs outside
/// 0x1000-0x107f, so no driver binds: only vmmlab's test guests drive it.
///
/// | BAR  | kind          | size  | contents                                                             |
/// |------|---------------|-------|----------------------------------------------------------------------|
/// | BAR0 | 32-bit memory | 4 KiB | registers, below; aligned 4-byte accesses only                       |
/// | BAR1 | I/O           | 16    | ports 0-3 mirror the scratch register (any width); others read ones  |
/// | BAR2 | 32-bit memory | 4 KiB | MSI-X table at 0, PBA at 0x800; 4 vectors                            |
///
/// BAR0 registers: `kRegId` (read-only "VMML"), `kRegScratch` (read/write), `kRegDoorbell` (write n: trigger MSI-X
/// vector n; reads 0), `kRegFired` (read-only: messages the device delivered, including pending ones released later).
/// Other offsets and sizes read all-ones and ignore writes.
class PciTestDevice final : public PciDevice {
 public:
  /// @brief Red Hat, Inc. (formerly Qumranet): the vendor of QEMU's experimental ID range.
  static constexpr std::uint16_t kVendorId = 0x1af4;
  /// @brief In the experimental range 0x10f0-0x10ff (0x10f0 is the fake device of pci_root_test).
  static constexpr std::uint16_t kDeviceId = 0x10f1;
  /// @brief "Unassigned class" (0xff).
  static constexpr std::uint8_t kClass = 0xff;
  /// @brief MSI-X vectors.
  static constexpr std::uint16_t kVectors = 4;
  /// @brief BAR0 size (registers).
  static constexpr std::uint64_t kRegistersSize = 0x1000;
  /// @brief BAR1 size (ports).
  static constexpr std::uint64_t kIoSize = 16;
  /// @brief BAR2 size (MSI-X).
  static constexpr std::uint64_t kMsixBarSize = 0x1000;
  /// @brief The BAR indices.
  static constexpr std::uint8_t kRegistersBar = 0;
  /// @brief The I/O BAR.
  static constexpr std::uint8_t kIoBar = 1;
  /// @brief The MSI-X BAR.
  static constexpr std::uint8_t kMsixBar = 2;
  /// @brief Offset of the MSI-X table in BAR2.
  static constexpr std::uint32_t kTableOffset = 0;
  /// @brief Offset of the PBA in BAR2.
  static constexpr std::uint32_t kPbaOffset = 0x800;

  /// @brief BAR0: read-only ID.
  static constexpr std::uint64_t kRegId = 0x0;
  /// @brief BAR0: scratch.
  static constexpr std::uint64_t kRegScratch = 0x4;
  /// @brief BAR0: doorbell, writing n fires vector n.
  static constexpr std::uint64_t kRegDoorbell = 0x8;
  /// @brief BAR0: messages delivered.
  static constexpr std::uint64_t kRegFired = 0xc;
  /// @brief The value of the ID register: "VMML" read as a little-endian dword's bytes 4c 4d 4d 56.
  static constexpr std::uint32_t kIdValue = 0x564d'4d4c;

  /// @brief A device delivering its MSI-X messages to `sink`, which must outlive it.
  [[nodiscard]] static Result<std::shared_ptr<PciTestDevice>> create(MsiSink& sink);

  /// @brief Its configuration space.
  ConfigSpace& config() override { return config_; }
  /// @brief A guest read in BAR0, BAR1 or BAR2.
  void bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) override;
  /// @brief A guest write in BAR0, BAR1 or BAR2.
  void bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) override;
  /// @brief Forwards Message Control writes to the MSI-X table (Enable / Function Mask release pending vectors).
  void config_written(std::uint16_t offset, std::size_t size) override;
  /// @brief "pci-test".
  [[nodiscard]] std::string name() const override { return "pci-test"; }

  /// @brief The MSI-X state (for tests and gdb).
  [[nodiscard]] MsixTable& msix() noexcept { return *msix_; }
  /// @brief Offset of the MSI-X capability in config space.
  [[nodiscard]] std::uint8_t msix_capability() const noexcept { return msix_capability_; }
  /// @brief The scratch register.
  [[nodiscard]] std::uint32_t scratch() const;
  /// @brief Messages delivered so far.
  [[nodiscard]] std::uint32_t fired() const noexcept { return counter_.count.load(); }

 private:
  // Counts the messages that reach the real sink.
  struct CountingSink final : MsiSink {
    explicit CountingSink(MsiSink& to) : target(to) {}
    Result<void> signal(const MsiMessage& message, std::uint16_t vector_index) override;
    MsiSink& target;
    std::atomic<std::uint32_t> count{0};
  };

  explicit PciTestDevice(MsiSink& sink) : counter_(sink) {}
  void registers_read(std::uint64_t offset, std::span<std::uint8_t> data);
  void registers_write(std::uint64_t offset, std::span<const std::uint8_t> data);

  ConfigSpace config_;
  CountingSink counter_;
  std::unique_ptr<MsixTable> msix_;
  std::uint8_t msix_capability_ = 0;
  mutable std::mutex mutex_;
  std::uint32_t scratch_ = 0;
};

}  // namespace vmm::pci
