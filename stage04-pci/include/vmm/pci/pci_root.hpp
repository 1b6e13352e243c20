#pragma once
/// @file
/// @brief `PciRoot`: PCI bus 0 with its host bridge, the two ways a guest reaches configuration space
/// (`ConfigMechanism1` at 0xCF8/0xCFC, `EcamWindow` over MMIO), and BARs placed on the buses as the guest programs
/// them.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/devices/bus.hpp"
#include "vmm/devices/bus_device.hpp"
#include "vmm/error.hpp"
#include "vmm/pci/config_space.hpp"
#include "vmm/pci/pci_device.hpp"

namespace vmm::pci {

/// @brief The host bridge at 00:00.0: a device with no BARs that tells the guest "this bus has a root".
///
/// It reports Red Hat's QEMU PCIe host bridge IDs, 1b36:0008 (QEMU's include/hw/pci/pci_ids.h,
/// PCI_DEVICE_ID_REDHAT_PCIE_HOST): a generic bridge no guest driver applies chipset quirks to, unlike Intel's
/// 440FX/Q35 IDs, whose drivers would expect chipset registers vmmlab does not model. Class 06/00/00 (host bridge).
class HostBridge final : public PciDevice {
 public:
  /// @brief Red Hat, Inc. (QEMU's PCI vendor ID).
  static constexpr std::uint16_t kVendorId = 0x1b36;
  /// @brief QEMU's generic PCIe host bridge.
  static constexpr std::uint16_t kDeviceId = 0x0008;

  /// @brief Fills the header.
  HostBridge();
  /// @brief Its configuration space.
  ConfigSpace& config() override { return config_; }
  /// @brief Never called (no BARs); reads all-ones.
  void bar_read(std::size_t bar_index, std::uint64_t offset, std::span<std::uint8_t> data) override;
  /// @brief Never called (no BARs); ignored.
  void bar_write(std::size_t bar_index, std::uint64_t offset, std::span<const std::uint8_t> data) override;
  /// @brief "host-bridge".
  [[nodiscard]] std::string name() const override { return "host-bridge"; }

 private:
  ConfigSpace config_;
};

/// @brief Which bus a mapped BAR sits on.
enum class BarSpace : std::uint8_t {
  Io,      ///< The I/O bus.
  Memory,  ///< The MMIO bus.
};

/// @brief A BAR currently placed on a bus (for tests, traces and gdb).
struct BarMapping {
  std::uint8_t device_number = 0;     ///< Slot on bus 0.
  std::uint8_t bar_index = 0;         ///< BAR0..BAR5.
  BarSpace space = BarSpace::Memory;  ///< I/O or memory.
  std::uint64_t base = 0;             ///< Guest address (port or physical).
  std::uint64_t size = 0;             ///< Bytes.
  /// @brief Equal when every field is.
  bool operator==(const BarMapping&) const = default;
};

/// @brief PCI bus 0: up to 32 single-function devices, a host bridge at 00:00.0, and the BAR mapper.
///
/// Configuration accesses (from `ConfigMechanism1`, `EcamWindow` or the VMM itself) go to the addressed device's
/// config space; bus != 0, a function other than 0 or an empty slot reads all-ones and drops writes, which is how a
/// guest enumerator learns that nothing is there. Only function 0 exists: devices report a single-function header
/// type, so guests never probe functions 1-7.
///
/// After each configuration write the root recomputes where the device's BARs should be and moves them: the old range
/// is removed from its bus and the new one inserted as a small `BusDevice` that forwards to `PciDevice::bar_read` /
/// `bar_write`. A BAR is placed when all of these hold (the rules QEMU follows too):
/// - the command register enables its space (PCI_COMMAND_IO or PCI_COMMAND_MEMORY);
/// - it is not being sized: no register of it holds all-ones in its address bits;
/// - its address is not 0 (firmware leaves unassigned BARs at 0) and its range fits (I/O below 64 KiB, memory
///   without wrapping);
/// - for a 64-bit BAR, its two halves are consistent: after the guest writes one half, the BAR stays where it was
///   (or unplaced) until it writes the other half or the command register. Linux and firmware write both halves, and
///   Linux turns memory decoding off while it does, so the BAR never flickers to a half-old, half-new address.
/// An insertion the bus refuses (it overlaps another device) leaves the BAR unplaced; the error is kept and returned
/// by `mapping_errors`, and the same placement is not retried until the guest changes it. The VMM keeps running: a
/// guest that programs overlapping BARs gets a device that does not answer, as on real hardware with a conflict.
///
/// Components that must follow a BAR (stage06 registers ioeventfds at a virtio device's notify addresses) install a
/// `BarObserver`: it hears every placement and removal as it happens.
///
/// The buses must outlive the root (its destructor removes the BARs it placed). One mutex serialises configuration
/// accesses and mapping changes: they are rare, and serialising them keeps BAR moves atomic. BAR accesses themselves
/// go straight from the bus to the device, without it.
class PciRoot {
 public:
  /// @brief Devices per bus.
  static constexpr std::size_t kDevicesPerBus = 32;
  /// @brief Functions per device (only function 0 is implemented).
  static constexpr std::size_t kFunctionsPerDevice = 8;

  /// @brief A root that places BARs on `io` and `mmio`, with its host bridge at 00:00.0.
  PciRoot(devices::IoBus& io, devices::MmioBus& mmio);
  PciRoot(const PciRoot&) = delete;
  PciRoot& operator=(const PciRoot&) = delete;
  PciRoot(PciRoot&&) = delete;
  PciRoot& operator=(PciRoot&&) = delete;
  /// @brief Removes the BARs it placed from the buses.
  ~PciRoot();

  /// @brief Plugs `device` into slot `device_number` (1..31; 0 is the host bridge) as function 0.
  ///
  /// Refused for a null device, a slot out of range or taken. BARs the device's config space already enables are
  /// placed at once.
  [[nodiscard]] Result<void> add_device(std::shared_ptr<PciDevice> device, std::uint8_t device_number);
  /// @brief The device in slot `device_number`, or null.
  [[nodiscard]] std::shared_ptr<PciDevice> device(std::uint8_t device_number) const;

  /// @brief A configuration read of `data.size()` bytes at register `reg` of bus:device.function; all-ones if absent.
  void config_read(std::uint8_t bus, std::uint8_t device, std::uint8_t function, std::uint16_t reg,
                   std::span<std::uint8_t> data) const;
  /// @brief A configuration write; dropped if absent. Calls the device's `config_written`, then moves its BARs.
  void config_write(std::uint8_t bus, std::uint8_t device, std::uint8_t function, std::uint16_t reg,
                    std::span<const std::uint8_t> data);

  /// @brief Every BAR currently placed on a bus, by device then BAR.
  [[nodiscard]] std::vector<BarMapping> mappings() const;
  /// @brief Placements the buses refused (overlaps) or that fell outside their space, oldest first; the last 32.
  [[nodiscard]] std::vector<Error> mapping_errors() const;

  /// @brief Told about each BAR placed on a bus (`placed` true) or removed from one (false).
  using BarObserver = std::function<void(const BarMapping& mapping, bool placed)>;
  /// @brief Installs `observer` (null removes it), replacing any previous one.
  ///
  /// It runs on whichever thread made the change (a vCPU thread for a guest's configuration write) with the root's
  /// mutex held, so it sees the moves of one BAR in order (a move is a removal of the old range, then a placement of
  /// the new one) and never concurrently. Because of that lock it must not call back into the root (deadlock), and it
  /// should be quick. Placements the bus refused are not reported (they are in `mapping_errors`), and neither are the
  /// removals done by the root's destructor: uninstall the observer before tearing the machine down.
  void set_bar_observer(BarObserver observer);

 private:
  struct Placement {
    BarSpace space = BarSpace::Memory;
    std::uint64_t base = 0;
    std::uint64_t size = 0;
    bool operator==(const Placement&) const = default;
  };
  struct BarState {
    std::optional<Placement> placed;   // where it is on a bus now
    std::optional<Placement> refused;  // the last placement the bus refused: not retried until it changes
    bool low_written = false;          // 64-bit BARs: halves written since the last consistent state
    bool high_written = false;
  };
  struct Slot {
    std::shared_ptr<PciDevice> device;
    std::array<BarState, 6> bars{};
  };

  [[nodiscard]] const Slot* find_slot(std::uint8_t bus, std::uint8_t device, std::uint8_t function) const;
  [[nodiscard]] std::optional<Placement> wanted_placement(std::uint8_t device_number, const Bar& bar,
                                                          const BarState& state);
  void track_halves(Slot& slot, std::uint16_t reg, std::size_t size);
  void update_bars(std::uint8_t device_number);
  void notify(std::uint8_t device_number, std::size_t bar_index, const Placement& placement, bool placed) const;
  void record_error(const Error& error);
  [[nodiscard]] devices::Bus& bus_for(BarSpace space) const;

  devices::IoBus& io_;
  devices::MmioBus& mmio_;
  mutable std::mutex mutex_;
  std::array<Slot, kDevicesPerBus> slots_{};
  std::vector<Error> errors_;
  BarObserver observer_;
};

/// @brief PCI configuration mechanism #1: the address register at 0xCF8 and the data window at 0xCFC-0xCFF.
///
/// A 32-bit write to 0xCF8 latches the address: bit 31 enables, bits 23:16 the bus, 15:11 the device, 10:8 the
/// function and 7:2 the dword register (reserved bits 30:24 and 1:0 read back as 0). A data access of 1, 2 or 4 bytes
/// at 0xCFC + n reaches register (address & 0xfc) + n. With the enable bit clear, data reads are all-ones and writes
/// are dropped. Byte and word accesses to 0xCF8-0xCFB are not the address register (on a PC, 0xCF9 is the chipset's
/// reset control, which vmmlab does not model): reads are all-ones, writes are dropped.
///
/// Insert it on the I/O bus at `kBase` for `kSize` ports. The address register is shared by every vCPU, as on
/// hardware: guests serialise their CF8/CFC pairs themselves.
class ConfigMechanism1 final : public devices::BusDevice {
 public:
  /// @brief The address register's port.
  static constexpr std::uint64_t kBase = 0xcf8;
  /// @brief Ports 0xCF8-0xCFF.
  static constexpr std::uint64_t kSize = 8;
  /// @brief The enable bit of the address register.
  static constexpr std::uint32_t kEnable = 0x8000'0000;

  /// @brief Forwards to `root`, which must outlive it (and the bus it is inserted on).
  explicit ConfigMechanism1(PciRoot& root) : root_(root) {}
  /// @brief A guest IN from 0xCF8 + `offset`.
  void read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  /// @brief A guest OUT to 0xCF8 + `offset`.
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) override;
  /// @brief The latched address register (for tests and gdb).
  [[nodiscard]] std::uint32_t address() const;

 private:
  PciRoot& root_;
  mutable std::mutex mutex_;
  std::uint32_t address_ = 0;
};

/// @brief PCI Express ECAM (MMCONFIG) for bus 0: 4 KiB of configuration space per function in a 1 MiB MMIO window.
///
/// The offset into the window is device << 15 | function << 12 | register, so the extended space (0x100-0xFFF) of a
/// `kExpressSize` config space is reachable, unlike through mechanism #1. Absent functions read all-ones. Insert it on
/// the MMIO bus at `kDefaultBase` (or wherever the ACPI MCFG table will say) for `kSize` bytes.
class EcamWindow final : public devices::BusDevice {
 public:
  /// @brief One bus: 32 devices x 8 functions x 4 KiB.
  static constexpr std::uint64_t kSize = 1 << 20;
  /// @brief Where vmmlab puts it: the start of the traditional MMCONFIG area at 0xE000_0000, inside the 32-bit PCI
  /// hole, so BAR allocation in the hole must skip [kDefaultBase, kDefaultBase + kSize).
  static constexpr std::uint64_t kDefaultBase = 0xe000'0000;

  /// @brief Forwards to `root`, which must outlive it (and the bus it is inserted on).
  explicit EcamWindow(PciRoot& root) : root_(root) {}
  /// @brief A guest read at `offset` into the window.
  void read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  /// @brief A guest write at `offset` into the window.
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

 private:
  PciRoot& root_;
};

}  // namespace vmm::pci
