#pragma once
/// @file
/// @brief MSI-X: the capability a guest finds in configuration space (`MsixCapability`) and the vector table with its
/// Pending Bit Array that live in a memory BAR (`MsixTable`).

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include <linux/pci_regs.h>

#include "vmm/error.hpp"
#include "vmm/pci/config_space.hpp"
#include "vmm/pci/msi.hpp"

namespace vmm::pci {

/// @brief The MSI-X capability structure: how many vectors, and where in which BAR the table and the PBA are.
///
/// The guest sees (after the ID and next bytes) Message Control (table size N-1 in bits 10:0, read-only; Function
/// Mask and Enable writable), then Table Offset/BIR and PBA Offset/BIR (read-only). Offsets are 8-byte aligned because
/// the BIR takes the low three bits.
struct MsixCapability {
  /// @brief The most vectors MSI-X allows (an 11-bit N-1).
  static constexpr std::uint16_t kMaxVectors = 2048;
  /// @brief Bytes after the two-byte header: Message Control, Table and PBA (PCI_CAP_MSIX_SIZEOF - 2).
  static constexpr std::size_t kBodySize = PCI_CAP_MSIX_SIZEOF - 2;

  std::uint16_t vectors = 1;       ///< N: 1..2048 table entries.
  std::uint8_t table_bar = 0;      ///< BIR of the table (BAR0..BAR5).
  std::uint32_t table_offset = 0;  ///< Offset of the table in that BAR; 8-aligned.
  std::uint8_t pba_bar = 0;        ///< BIR of the PBA.
  std::uint32_t pba_offset = 0;    ///< Offset of the PBA in that BAR; 8-aligned.

  /// @brief Bytes of the table: 16 per vector.
  [[nodiscard]] std::uint64_t table_size() const noexcept { return std::uint64_t{vectors} * PCI_MSIX_ENTRY_SIZE; }
  /// @brief Bytes of the PBA: one bit per vector, in whole qwords.
  [[nodiscard]] std::uint64_t pba_size() const noexcept { return (std::uint64_t{vectors} + 63) / 64 * 8; }

  /// @brief Checks: 1..2048 vectors, BIRs 0..5, offsets 8-aligned, table and PBA not overlapping in the same BAR.
  [[nodiscard]] Result<void> validate() const;
  /// @brief The body for `ConfigSpace::add_capability(PCI_CAP_ID_MSIX, body(), writable())`, Enable and Function
  /// Mask clear.
  [[nodiscard]] std::array<std::uint8_t, kBodySize> body() const noexcept;
  /// @brief The writable mask of the body: only Enable and Function Mask.
  [[nodiscard]] static std::array<std::uint8_t, kBodySize> writable() noexcept;
  /// @brief Validates and appends the capability to `config`; returns its offset.
  [[nodiscard]] Result<std::uint8_t> add_to(ConfigSpace& config) const;
};

/// @brief One table entry as the guest programmed it.
struct MsixEntry {
  std::uint64_t address = 0;                            ///< Message Address (upper and lower).
  std::uint32_t data = 0;                               ///< Message Data.
  std::uint32_t control = PCI_MSIX_ENTRY_CTRL_MASKBIT;  ///< Vector Control: bit 0 masks.
  /// @brief Equal when every field is.
  bool operator==(const MsixEntry&) const = default;
};

/// @brief What `MsixTable::trigger` did with an interrupt.
enum class MsixTrigger : std::uint8_t {
  Delivered,  ///< The message went to the sink.
  Pending,    ///< Masked (vector or function): the pending bit is set; it fires when unmasked.
  Disabled,   ///< MSI-X is not enabled: dropped, nothing recorded (as QEMU's msix_notify).
  NoVector,   ///< No such vector: dropped.
};

/// @brief The MSI-X vector table and Pending Bit Array of one function, and the interrupt logic around them.
///
/// The device serves two regions of its BARs with `read_table`/`write_table` (offsets from the table's start) and
/// `read_pba` (from the PBA's start), and reports Message Control writes with `set_control` (or `config_written`).
/// Guests may only use aligned 4- and 8-byte accesses (the PCI spec's rule); anything else, and anything past the
/// end, reads all-ones and writes nothing, so a hostile guest cannot crash or confuse the VMM. The PBA is read-only.
///
/// At reset every vector is masked, MSI-X disabled and the function unmasked. `trigger(v)`:
/// - MSI-X disabled: nothing happens (the function would use INTx; no pending bit is set);
/// - Function Mask set or vector v masked: v's pending bit is set instead;
/// - otherwise the entry's message goes to the `MsiSink`.
/// Whenever a vector becomes unmasked (its mask bit cleared, Function Mask cleared, or Enable set), each pending
/// vector now deliverable is delivered and its pending bit cleared.
///
/// Thread-safe: one mutex guards the state, and it is released before the sink is called. Errors from the sink
/// cannot fail a guest access: the latest is kept for `last_error`. Bus mastering is not modelled:
/// messages are sent whatever PCI_COMMAND_MASTER says.
///
/// An optional observer (`set_observer`) hears which vectors the guest reprogrammed, so that state kept outside the
/// table (stage06's KVM GSI routes, one per vector) can follow it.
class MsixTable {
 public:
  /// @brief Told the index of a vector whose address, data or effective mask may have changed.
  using Observer = std::function<void(std::uint16_t vector)>;

  /// @brief A table of `vectors` entries (1..2048) delivering through `sink`, which must outlive it.
  [[nodiscard]] static Result<std::unique_ptr<MsixTable>> create(std::uint16_t vectors, MsiSink& sink);
  MsixTable(const MsixTable&) = delete;
  MsixTable& operator=(const MsixTable&) = delete;
  MsixTable(MsixTable&&) = delete;
  MsixTable& operator=(MsixTable&&) = delete;
  ~MsixTable() = default;

  /// @brief N.
  [[nodiscard]] std::uint16_t vectors() const noexcept { return static_cast<std::uint16_t>(entries_.size()); }
  /// @brief Bytes of the table region.
  [[nodiscard]] std::uint64_t table_size() const noexcept { return entries_.size() * PCI_MSIX_ENTRY_SIZE; }
  /// @brief Bytes of the PBA region.
  [[nodiscard]] std::uint64_t pba_size() const noexcept { return pending_.size() * 8; }

  /// @brief A guest read at `offset` into the table.
  void read_table(std::uint64_t offset, std::span<std::uint8_t> data) const;
  /// @brief A guest write at `offset` into the table; clearing a mask bit delivers the vector if pending.
  void write_table(std::uint64_t offset, std::span<const std::uint8_t> data);
  /// @brief A guest read at `offset` into the PBA.
  void read_pba(std::uint64_t offset, std::span<std::uint8_t> data) const;

  /// @brief The Message Control word after a guest write (only Enable and Function Mask matter); delivers pending
  /// vectors that became deliverable.
  void set_control(std::uint16_t message_control);
  /// @brief For `PciDevice::config_written`: if the write at [offset, offset + size) touched the Message Control of
  /// the capability at `capability`, reads it from `config` and calls `set_control`.
  void config_written(const ConfigSpace& config, std::uint8_t capability, std::uint16_t offset, std::size_t size);

  /// @brief Installs `observer` (an empty function removes it). It is called without the table's lock, from the
  /// thread that made the change, before any pending vector the change released is delivered:
  /// - after a `write_table` that changed vector v's address, data or mask bit: with v;
  /// - after a `set_control` that changed Enable or Function Mask: with every vector, 0 to N-1.
  /// The observer reads the new state back with `entry`, `enabled` and `function_masked` (the call says what may have
  /// changed, not how), so concurrent changes cannot hand it stale values. It must not call `set_observer`.
  void set_observer(Observer observer);

  /// @brief Raises vector `vector`; see the class comment. A sink error is returned (and kept for `last_error`).
  Result<MsixTrigger> trigger(std::uint16_t vector);

  /// @brief Enable bit of Message Control.
  [[nodiscard]] bool enabled() const;
  /// @brief Function Mask bit of Message Control.
  [[nodiscard]] bool function_masked() const;
  /// @brief The entry of `vector` (nothing if out of range).
  [[nodiscard]] std::optional<MsixEntry> entry(std::uint16_t vector) const;
  /// @brief The pending bit of `vector` (false if out of range).
  [[nodiscard]] bool pending(std::uint16_t vector) const;
  /// @brief The latest sink error (from `trigger` or a release of pending vectors), if any.
  [[nodiscard]] std::optional<Error> last_error() const;

 private:
  struct Delivery {
    MsiMessage message;
    std::uint16_t vector;
  };

  MsixTable(std::uint16_t vectors, MsiSink& sink);
  [[nodiscard]] bool masked_locked(std::size_t vector) const noexcept;
  [[nodiscard]] bool pending_locked(std::size_t vector) const noexcept;
  // Collects every pending vector that is now deliverable, clearing its bit (mutex_ held).
  [[nodiscard]] std::vector<Delivery> take_deliverable_locked();
  // Calls the sink for each, without the lock; keeps the last error.
  void deliver(const std::vector<Delivery>& deliveries);
  // Calls the observer (if any) for vectors [first, last), without the lock.
  void notify(std::uint16_t first, std::uint16_t last) const;

  MsiSink& sink_;
  mutable std::mutex mutex_;
  std::vector<MsixEntry> entries_;
  std::vector<std::uint64_t> pending_;
  bool enabled_ = false;
  bool function_masked_ = false;
  std::optional<Error> last_error_;
  // Copied out under mutex_ and called without it, so an observer may read the table back.
  std::shared_ptr<const Observer> observer_;
};

}  // namespace vmm::pci
