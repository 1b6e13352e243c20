#pragma once
/// @file
/// @brief `ConfigSpace`: one PCI function's configuration space, with the write semantics hardware gives each bit.

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/pci/bar.hpp"

namespace vmm::pci {

/// @brief One entry of a capability list, as a walk finds it.
struct Capability {
  std::uint8_t offset = 0;  ///< Where the capability starts (its ID byte).
  std::uint8_t id = 0;      ///< PCI_CAP_ID_*.
  /// @brief Equal when both fields are.
  bool operator==(const Capability&) const = default;
};

/// @brief Walks the capability list in `config` (the first bytes of a configuration space, as read by anyone: the
/// VMM, a test through 0xCF8/0xCFC, later a gdb script).
///
/// Follows PCI_CAPABILITY_LIST and the next pointers, ignoring their reserved low two bits, as Linux does. Stops at a
/// null pointer, at a pointer into the standard header (< 0x40) or past the data, and after 48 entries (a list that
/// loops back on itself would otherwise never end). Returns nothing when PCI_STATUS_CAP_LIST is clear.
[[nodiscard]] std::vector<Capability> walk_capabilities(std::span<const std::uint8_t> config);

/// @brief The configuration space of one PCI function: 256 bytes, or 4096 for a PCI Express function reached via ECAM.
///
/// Every byte has a value and two masks. The *writable* mask says which bits a guest write changes; the others are
/// read-only (IDs, type bits, the low bits of a BAR). The *write-1-to-clear* mask marks status bits the device sets and
/// the guest acknowledges by writing 1 (writing 0 leaves them alone). The guest-facing `read`/`write` honour the masks;
/// the device-facing `set*` and `set_writable*`/`set_w1c*` calls change values and masks regardless, the way the
/// device's own logic drives its registers.
///
/// Guest accesses come at any offset and any size: bytes outside the space read as 0xff and writes to them are
/// dropped, so a malformed access never fails or crashes. An internal mutex makes each call atomic: the PCI root calls
/// it from vCPU threads while the device's own code may read it from another.
class ConfigSpace {
 public:
  /// @brief Size of a conventional PCI configuration space (type-0 header and capabilities).
  static constexpr std::size_t kConventionalSize = 256;
  /// @brief Size of a PCI Express configuration space (extended capabilities from 0x100, reachable via ECAM only).
  static constexpr std::size_t kExpressSize = 4096;

  /// @brief An all-zero, all-read-only space: `kConventionalSize` bytes if `size` <= 256, else `kExpressSize`.
  explicit ConfigSpace(std::size_t size = kConventionalSize);
  ConfigSpace(const ConfigSpace&) = delete;
  ConfigSpace& operator=(const ConfigSpace&) = delete;
  ConfigSpace(ConfigSpace&&) = delete;
  ConfigSpace& operator=(ConfigSpace&&) = delete;
  ~ConfigSpace() = default;

  /// @brief 256 or 4096.
  [[nodiscard]] std::size_t size() const noexcept { return bytes_.size(); }

  /// @brief A guest read: `data.size()` bytes at `offset`, little-endian; bytes past the end read 0xff.
  void read(std::uint64_t offset, std::span<std::uint8_t> data) const;
  /// @brief A guest write: each bit changes only if writable; W1C bits written as 1 are cleared; bytes past the end
  /// are dropped.
  void write(std::uint64_t offset, std::span<const std::uint8_t> data);

  /// @brief A guest-view byte read (0xff out of range).
  [[nodiscard]] std::uint8_t read8(std::uint64_t offset) const;
  /// @brief A guest-view 16-bit little-endian read.
  [[nodiscard]] std::uint16_t read16(std::uint64_t offset) const;
  /// @brief A guest-view 32-bit little-endian read.
  [[nodiscard]] std::uint32_t read32(std::uint64_t offset) const;
  /// @brief A guest write of one byte (masks apply).
  void write8(std::uint64_t offset, std::uint8_t value);
  /// @brief A guest write of 16 bits (masks apply).
  void write16(std::uint64_t offset, std::uint16_t value);
  /// @brief A guest write of 32 bits (masks apply).
  void write32(std::uint64_t offset, std::uint32_t value);

  /// @brief Device side: sets a byte regardless of the masks (out of range: ignored).
  void set8(std::uint64_t offset, std::uint8_t value);
  /// @brief Device side: sets 16 bits regardless of the masks.
  void set16(std::uint64_t offset, std::uint16_t value);
  /// @brief Device side: sets 32 bits regardless of the masks.
  void set32(std::uint64_t offset, std::uint32_t value);
  /// @brief Device side: makes the bits of `mask` writable by the guest (and the others of that byte read-only).
  void set_writable8(std::uint64_t offset, std::uint8_t mask);
  /// @brief Device side: the writable mask of a 16-bit register.
  void set_writable16(std::uint64_t offset, std::uint16_t mask);
  /// @brief Device side: the writable mask of a 32-bit register.
  void set_writable32(std::uint64_t offset, std::uint32_t mask);
  /// @brief Device side: the write-1-to-clear mask of a 16-bit register (such bits should not also be writable).
  void set_w1c16(std::uint64_t offset, std::uint16_t mask);

  /// @brief Writes the identification part of a type-0 header and gives the standard registers their masks.
  ///
  /// Command: IO, MEMORY, MASTER, PARITY, SERR and INTX_DISABLE writable (the bits a guest OS touches). Status: the
  /// error bits write-1-to-clear, the rest read-only. Cache line size, latency timer and interrupt line writable (the
  /// guest records its choices there). Everything else, BARs included, stays read-only until `add_bar`.
  void set_header(std::uint16_t vendor, std::uint16_t device, std::uint8_t class_code, std::uint8_t subclass,
                  std::uint8_t prog_if, std::uint8_t revision, std::uint8_t header_type);

  /// @brief Declares a BAR: writes its type bits and makes its address bits writable, so the guest's sizing writes
  /// of all-ones read back ~(size - 1) with the type bits. For a 64-bit BAR the next register is its high dword.
  ///
  /// Refused if `validate(bar)` fails or the register(s) already belong to a BAR.
  [[nodiscard]] Result<void> add_bar(const Bar& bar);
  /// @brief The BARs declared so far, in declaration order.
  [[nodiscard]] std::vector<Bar> bars() const;

  /// @brief Appends a capability: `id`, a next pointer, then `body` (the bytes after the two-byte header).
  ///
  /// Capabilities are placed one after another from 0x40, dword-aligned, within the first 256 bytes, and linked at the
  /// end of the list (PCI_CAPABILITY_LIST for the first); PCI_STATUS_CAP_LIST is set. `writable`, when not empty, is
  /// the writable mask of `body` byte for byte (same length); the header is read-only. Returns the capability's offset,
  /// or an error if it does not fit or the mask's length is wrong.
  [[nodiscard]] Result<std::uint8_t> add_capability(std::uint8_t id, std::span<const std::uint8_t> body,
                                                    std::span<const std::uint8_t> writable = {});
  /// @brief The capability list, walked as a guest would (`walk_capabilities` over this space).
  [[nodiscard]] std::vector<Capability> capabilities() const;
  /// @brief The offset of the first capability with `id`, if any.
  [[nodiscard]] std::optional<std::uint8_t> find_capability(std::uint8_t id) const;

 private:
  void set_bytes(std::uint64_t offset, std::uint32_t value, std::size_t width);
  void set_mask(std::vector<std::uint8_t>& mask, std::uint64_t offset, std::uint32_t value, std::size_t width);
  [[nodiscard]] bool in_range(std::uint64_t offset, std::size_t i) const noexcept {
    return offset < bytes_.size() && i < bytes_.size() - offset;
  }

  mutable std::mutex mutex_;
  std::vector<std::uint8_t> bytes_;
  std::vector<std::uint8_t> writable_;
  std::vector<std::uint8_t> w1c_;
  std::vector<Bar> bars_;
  std::uint8_t last_capability_ = 0;   // 0: the list is empty
  std::uint16_t next_capability_ = 0;  // where the next capability goes (set in the constructor)
};

}  // namespace vmm::pci
