#include "vmm/boot/mptable.hpp"

#include <fmt/format.h>

#include <cstring>
#include <numeric>
#include <string_view>

namespace vmm::boot {
namespace {

// Little-endian byte appender: the MP structures are packed and unaligned, so they are written field by field.
class Bytes {
 public:
  void u8(std::uint8_t v) { bytes_.push_back(std::byte{v}); }
  void u16(std::uint16_t v) { put(v, 2); }
  void u32(std::uint32_t v) { put(v, 4); }
  void text(std::string_view s, std::size_t width) {
    for (std::size_t i = 0; i < width; ++i) {
      u8(i < s.size() ? static_cast<std::uint8_t>(s[i]) : ' ');
    }
  }
  [[nodiscard]] std::size_t size() const { return bytes_.size(); }
  std::vector<std::byte>& data() { return bytes_; }
  void set_u8(std::size_t at, std::uint8_t v) { bytes_[at] = std::byte{v}; }
  void set_u16(std::size_t at, std::uint16_t v) {
    bytes_[at] = std::byte(v & 0xff);
    bytes_[at + 1] = std::byte(v >> 8);
  }

 private:
  void put(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) {
      u8(static_cast<std::uint8_t>(v >> (8 * i)));
    }
  }
  std::vector<std::byte> bytes_;
};

constexpr std::uint8_t kBusIdPci = 0;
constexpr std::uint8_t kBusIdIsa = 1;
constexpr std::uint8_t kApicVersion = 0x14;    // an integrated local APIC (xAPIC)
constexpr std::uint8_t kIoapicVersion = 0x11;  // KVM's IOAPIC reports 0x11
constexpr std::uint8_t kCpuEnabled = 0x01;
constexpr std::uint8_t kCpuBootstrap = 0x02;
constexpr std::uint8_t kIrqInt = 0;  // vectored interrupt, vector from the APIC's redirection entry
constexpr std::uint8_t kIrqNmi = 1;
constexpr std::uint8_t kIrqExtInt = 3;       // vectored by the 8259 PIC
constexpr std::uint16_t kIrqConforming = 0;  // polarity and trigger "conform to the bus" (ISA: high, edge)
constexpr std::uint8_t kAllLocalApics = 0xff;
constexpr std::uint8_t kIsaIrqs = 16;

}  // namespace

std::uint8_t checksum_byte(std::span<const std::byte> bytes) {
  const unsigned sum = std::accumulate(bytes.begin(), bytes.end(), 0u,
                                       [](unsigned acc, std::byte b) { return acc + static_cast<unsigned>(b); });
  return static_cast<std::uint8_t>(-sum);
}

Result<std::vector<std::byte>> build_mptable(std::uint64_t base, const MpTableConfig& config) {
  if (config.cpus == 0 || config.cpus > kMaxCpus) {
    return logic_error("build MP table", fmt::format("{} CPUs: between 1 and {}", config.cpus, kMaxCpus));
  }
  if (base + 0x10000 > 0x100000000ull) {
    return logic_error("build MP table", fmt::format("base {:#x}: the table must be below 4 GiB", base));
  }
  const auto ioapic_id = static_cast<std::uint8_t>(config.cpus);
  Bytes b;
  // Floating pointer structure (MP spec 4.1): "_MP_", the table's address, length in 16-byte units, revision 1.4,
  // checksum, and feature bytes all 0 ("a configuration table is present"; no IMCR: virtual wire mode).
  const std::size_t table_start = mp::kFloatingPointerSize;
  b.text("_MP_", 4);
  b.u32(static_cast<std::uint32_t>(base + table_start));
  b.u8(1);
  b.u8(4);
  b.u8(0);  // checksum, below
  for (int i = 0; i < 5; ++i) {
    b.u8(0);
  }

  // Configuration table header (4.2). Length, entry count and checksum are patched at the end.
  b.text("PCMP", 4);
  b.u16(0);  // base table length
  b.u8(4);   // spec revision 1.4
  b.u8(0);   // checksum
  b.text("VMMLAB", 8);
  b.text("FINAL-VMM", 12);
  b.u32(0);  // OEM table pointer
  b.u16(0);  // OEM table size
  b.u16(0);  // entry count
  b.u32(config.lapic_address);
  b.u16(0);  // extended table length
  b.u8(0);   // extended table checksum
  b.u8(0);   // reserved
  std::uint16_t entries = 0;

  // One processor entry per vCPU (4.3.1): APIC ID = vCPU index, CPU 0 is the BSP.
  for (std::uint32_t cpu = 0; cpu < config.cpus; ++cpu) {
    b.u8(mp::kEntryProcessor);
    b.u8(static_cast<std::uint8_t>(cpu));
    b.u8(kApicVersion);
    b.u8(cpu == 0 ? kCpuEnabled | kCpuBootstrap : kCpuEnabled);
    b.u32(config.cpu_signature);
    b.u32(config.cpu_features);
    b.u32(0);
    b.u32(0);
    ++entries;
  }
  // Buses (4.3.2): bus 0 is PCI (the root bridge), bus 1 ISA (where the legacy IRQs come from).
  b.u8(mp::kEntryBus);
  b.u8(kBusIdPci);
  b.text("PCI", 6);
  b.u8(mp::kEntryBus);
  b.u8(kBusIdIsa);
  b.text("ISA", 6);
  entries += 2;
  // The IOAPIC (4.3.3).
  b.u8(mp::kEntryIoapic);
  b.u8(ioapic_id);
  b.u8(kIoapicVersion);
  b.u8(kCpuEnabled);
  b.u32(config.ioapic_address);
  ++entries;
  // ISA IRQ n arrives at IOAPIC pin n: that is how KVM's default GSI routing wires its in-kernel IOAPIC (GSI n =
  // pin n, PIT included), so no interrupt source overrides are needed.
  for (std::uint8_t irq = 0; irq < kIsaIrqs; ++irq) {
    b.u8(mp::kEntryIoInterrupt);
    b.u8(kIrqInt);
    b.u16(kIrqConforming);
    b.u8(kBusIdIsa);
    b.u8(irq);
    b.u8(ioapic_id);
    b.u8(irq);
    ++entries;
  }
  // Local interrupts (4.3.5): ExtINT on LINT0 and NMI on LINT1 of every local APIC.
  b.u8(mp::kEntryLocalInterrupt);
  b.u8(kIrqExtInt);
  b.u16(kIrqConforming);
  b.u8(kBusIdIsa);
  b.u8(0);
  b.u8(kAllLocalApics);
  b.u8(0);
  b.u8(mp::kEntryLocalInterrupt);
  b.u8(kIrqNmi);
  b.u16(kIrqConforming);
  b.u8(kBusIdIsa);
  b.u8(0);
  b.u8(kAllLocalApics);
  b.u8(1);
  entries += 2;

  const std::size_t table_length = b.size() - table_start;
  b.set_u16(table_start + 4, static_cast<std::uint16_t>(table_length));
  b.set_u16(table_start + 34, entries);
  auto& bytes = b.data();
  b.set_u8(table_start + 7, checksum_byte(std::span(bytes).subspan(table_start, table_length)));
  b.set_u8(10, checksum_byte(std::span(bytes).first(mp::kFloatingPointerSize)));
  return std::move(bytes);
}

Result<std::size_t> write_mptable(const memory::GuestMemory& memory, memory::GuestAddress base,
                                  const MpTableConfig& config) {
  auto bytes = build_mptable(base.raw(), config);
  if (!bytes) {
    return std::unexpected(bytes.error());
  }
  if (auto rc = memory.write(base, *bytes); !rc) {
    return std::unexpected(rc.error().with_context("writing the MP table"));
  }
  return bytes->size();
}

}  // namespace vmm::boot
