#include "vmm/pci/msix.hpp"

#include <linux/pci_regs.h>

#include <algorithm>

#include <fmt/format.h>

namespace vmm::pci {

namespace {

constexpr std::uint8_t kMaxBar = 5;
constexpr std::uint32_t kOffsetAlignment = 8;  // the BIR takes the low three bits
// Where each register sits in the body, which starts after the ID and next bytes.
constexpr std::size_t kBodyStart = 2;
constexpr std::size_t kControlAt = PCI_MSIX_FLAGS - kBodyStart;
constexpr std::size_t kTableAt = PCI_MSIX_TABLE - kBodyStart;
constexpr std::size_t kPbaAt = PCI_MSIX_PBA - kBodyStart;
constexpr std::uint16_t kControlWritable = PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL;

template <std::size_t N>
void put(std::array<std::uint8_t, N>& out, std::size_t at, std::uint64_t value, std::size_t width) {
  for (std::size_t i = 0; i < width; ++i) {
    out[at + i] = static_cast<std::uint8_t>(value >> (8 * i));
  }
}

std::uint64_t get_le(std::span<const std::uint8_t> data) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    value |= std::uint64_t{data[i]} << (8 * i);
  }
  return value;
}

void put_le(std::span<std::uint8_t> data, std::uint64_t value) {
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<std::uint8_t>(value >> (8 * i));
  }
}

// The only accesses MSI-X structures accept: 4 or 8 bytes, naturally aligned, inside [0, size).
bool valid_access(std::uint64_t offset, std::size_t width, std::uint64_t size) {
  return (width == 4 || width == 8) && offset % width == 0 && offset < size && width <= size - offset;
}

bool overlaps(std::uint64_t a, std::uint64_t a_size, std::uint64_t b, std::uint64_t b_size) {
  return a < b + b_size && b < a + a_size;
}

}  // namespace

Result<void> MsixCapability::validate() const {
  const std::string op = "MSI-X capability";
  if (vectors == 0 || vectors > kMaxVectors) {
    return logic_error(op, fmt::format("{} vectors (1..{})", vectors, kMaxVectors));
  }
  if (table_bar > kMaxBar || pba_bar > kMaxBar) {
    return logic_error(op, fmt::format("table BIR {} / PBA BIR {}: BARs are 0..{}", table_bar, pba_bar, kMaxBar));
  }
  if (table_offset % kOffsetAlignment != 0 || pba_offset % kOffsetAlignment != 0) {
    return logic_error(op, fmt::format("table offset {:#x} / PBA offset {:#x} must be {}-byte aligned", table_offset,
                                       pba_offset, kOffsetAlignment));
  }
  if (table_bar == pba_bar && overlaps(table_offset, table_size(), pba_offset, pba_size())) {
    return logic_error(op, fmt::format("table [{:#x}, {:#x}) and PBA [{:#x}, {:#x}) overlap in BAR{}", table_offset,
                                       table_offset + table_size(), pba_offset, pba_offset + pba_size(), table_bar));
  }
  return {};
}

std::array<std::uint8_t, MsixCapability::kBodySize> MsixCapability::body() const noexcept {
  std::array<std::uint8_t, kBodySize> out{};
  put(out, kControlAt, static_cast<std::uint16_t>((vectors - 1) & PCI_MSIX_FLAGS_QSIZE), 2);
  put(out, kTableAt, (table_offset & PCI_MSIX_TABLE_OFFSET) | (table_bar & PCI_MSIX_TABLE_BIR), 4);
  put(out, kPbaAt, (pba_offset & PCI_MSIX_PBA_OFFSET) | (pba_bar & PCI_MSIX_PBA_BIR), 4);
  return out;
}

std::array<std::uint8_t, MsixCapability::kBodySize> MsixCapability::writable() noexcept {
  std::array<std::uint8_t, kBodySize> out{};
  put(out, kControlAt, kControlWritable, 2);
  return out;
}

Result<std::uint8_t> MsixCapability::add_to(ConfigSpace& config) const {
  if (auto ok = validate(); !ok) {
    return std::unexpected(ok.error());
  }
  const auto bytes = body();
  const auto mask = writable();
  return config.add_capability(PCI_CAP_ID_MSIX, bytes, mask);
}

Result<std::unique_ptr<MsixTable>> MsixTable::create(std::uint16_t vectors, MsiSink& sink) {
  if (vectors == 0 || vectors > MsixCapability::kMaxVectors) {
    return logic_error("MSI-X table", fmt::format("{} vectors (1..{})", vectors, MsixCapability::kMaxVectors));
  }
  return std::unique_ptr<MsixTable>(new MsixTable(vectors, sink));
}

MsixTable::MsixTable(std::uint16_t vectors, MsiSink& sink)
    : sink_(sink), entries_(vectors), pending_((std::size_t{vectors} + 63) / 64, 0) {}

bool MsixTable::masked_locked(std::size_t vector) const noexcept {
  return function_masked_ || (entries_[vector].control & PCI_MSIX_ENTRY_CTRL_MASKBIT) != 0;
}

bool MsixTable::pending_locked(std::size_t vector) const noexcept {
  return (pending_[vector / 64] >> (vector % 64) & 1) != 0;
}

void MsixTable::read_table(std::uint64_t offset, std::span<std::uint8_t> data) const {
  if (!valid_access(offset, data.size(), table_size())) {
    std::ranges::fill(data, std::uint8_t{0xff});
    return;
  }
  std::lock_guard lock(mutex_);
  const auto& e = entries_[offset / PCI_MSIX_ENTRY_SIZE];
  // The entry as four dwords, in the order PCI_MSIX_ENTRY_* gives them.
  const std::array<std::uint32_t, 4> dwords{static_cast<std::uint32_t>(e.address),
                                            static_cast<std::uint32_t>(e.address >> 32), e.data, e.control};
  const std::size_t first = offset % PCI_MSIX_ENTRY_SIZE / 4;
  std::uint64_t value = dwords[first];
  if (data.size() == 8) {
    value |= std::uint64_t{dwords[first + 1]} << 32;
  }
  put_le(data, value);
}

void MsixTable::write_table(std::uint64_t offset, std::span<const std::uint8_t> data) {
  if (!valid_access(offset, data.size(), table_size())) {
    return;
  }
  const std::uint64_t value = get_le(data);
  const auto vector = static_cast<std::uint16_t>(offset / PCI_MSIX_ENTRY_SIZE);
  std::vector<Delivery> deliveries;
  bool changed = false;
  {
    std::lock_guard lock(mutex_);
    auto& e = entries_[vector];
    const MsixEntry before = e;
    const std::size_t first = offset % PCI_MSIX_ENTRY_SIZE;
    for (std::size_t i = 0; i < data.size() / 4; ++i) {
      const auto dword = static_cast<std::uint32_t>(value >> (32 * i));
      switch (first + 4 * i) {
        case PCI_MSIX_ENTRY_LOWER_ADDR:
          e.address = (e.address & 0xffff'ffff'0000'0000) | dword;
          break;
        case PCI_MSIX_ENTRY_UPPER_ADDR:
          e.address = (e.address & 0xffff'ffff) | std::uint64_t{dword} << 32;
          break;
        case PCI_MSIX_ENTRY_DATA:
          e.data = dword;
          break;
        case PCI_MSIX_ENTRY_VECTOR_CTRL:
          e.control = dword & PCI_MSIX_ENTRY_CTRL_MASKBIT;  // the other bits are reserved: read as 0
          break;
        default:
          break;
      }
    }
    changed = e != before;
    deliveries = take_deliverable_locked();
  }
  // The observer first: a route that follows this vector must be in place before a released message uses it.
  if (changed) {
    notify(vector, static_cast<std::uint16_t>(vector + 1));
  }
  deliver(deliveries);
}

void MsixTable::read_pba(std::uint64_t offset, std::span<std::uint8_t> data) const {
  if (!valid_access(offset, data.size(), pba_size())) {
    std::ranges::fill(data, std::uint8_t{0xff});
    return;
  }
  std::lock_guard lock(mutex_);
  const std::uint64_t qword = pending_[offset / 8];
  put_le(data, data.size() == 8 ? qword : qword >> (offset % 8 * 8));
}

void MsixTable::set_control(std::uint16_t message_control) {
  std::vector<Delivery> deliveries;
  bool changed = false;
  {
    std::lock_guard lock(mutex_);
    const bool enabled = (message_control & PCI_MSIX_FLAGS_ENABLE) != 0;
    const bool function_masked = (message_control & PCI_MSIX_FLAGS_MASKALL) != 0;
    changed = enabled != enabled_ || function_masked != function_masked_;
    enabled_ = enabled;
    function_masked_ = function_masked;
    deliveries = take_deliverable_locked();
  }
  // Enable and Function Mask gate every vector at once.
  if (changed) {
    notify(0, vectors());
  }
  deliver(deliveries);
}

void MsixTable::config_written(const ConfigSpace& config, std::uint8_t capability, std::uint16_t offset,
                               std::size_t size) {
  const std::uint32_t control = std::uint32_t{capability} + PCI_MSIX_FLAGS;
  if (offset < control + 2 && control < offset + size) {
    set_control(config.read16(control));
  }
}

Result<MsixTrigger> MsixTable::trigger(std::uint16_t vector) {
  Delivery delivery{};
  {
    std::lock_guard lock(mutex_);
    if (vector >= entries_.size()) {
      return MsixTrigger::NoVector;
    }
    if (!enabled_) {
      return MsixTrigger::Disabled;
    }
    if (masked_locked(vector)) {
      pending_[vector / 64] |= std::uint64_t{1} << (vector % 64);
      return MsixTrigger::Pending;
    }
    delivery = {.message = {.address = entries_[vector].address, .data = entries_[vector].data}, .vector = vector};
  }
  if (auto rc = sink_.signal(delivery.message, delivery.vector); !rc) {
    std::lock_guard lock(mutex_);
    last_error_ = rc.error();
    return std::unexpected(std::move(rc).error());
  }
  return MsixTrigger::Delivered;
}

std::vector<MsixTable::Delivery> MsixTable::take_deliverable_locked() {
  std::vector<Delivery> out;
  if (!enabled_ || function_masked_) {
    return out;
  }
  for (std::size_t word = 0; word < pending_.size(); ++word) {
    if (pending_[word] == 0) {
      continue;
    }
    for (std::size_t bit = 0; bit < 64; ++bit) {
      const std::size_t vector = word * 64 + bit;
      if (vector < entries_.size() && pending_locked(vector) && !masked_locked(vector)) {
        pending_[word] &= ~(std::uint64_t{1} << bit);
        out.push_back({.message = {.address = entries_[vector].address, .data = entries_[vector].data},
                       .vector = static_cast<std::uint16_t>(vector)});
      }
    }
  }
  return out;
}

void MsixTable::deliver(const std::vector<Delivery>& deliveries) {
  for (const auto& d : deliveries) {
    if (auto rc = sink_.signal(d.message, d.vector); !rc) {
      std::lock_guard lock(mutex_);
      last_error_ = std::move(rc).error();
    }
  }
}

void MsixTable::set_observer(Observer observer) {
  auto shared = observer ? std::make_shared<const Observer>(std::move(observer)) : nullptr;
  std::lock_guard lock(mutex_);
  observer_ = std::move(shared);
}

void MsixTable::notify(std::uint16_t first, std::uint16_t last) const {
  std::shared_ptr<const Observer> observer;
  {
    std::lock_guard lock(mutex_);
    observer = observer_;
  }
  if (!observer) {
    return;
  }
  for (std::uint16_t vector = first; vector < last; ++vector) {
    (*observer)(vector);
  }
}

bool MsixTable::enabled() const {
  std::lock_guard lock(mutex_);
  return enabled_;
}

bool MsixTable::function_masked() const {
  std::lock_guard lock(mutex_);
  return function_masked_;
}

std::optional<MsixEntry> MsixTable::entry(std::uint16_t vector) const {
  std::lock_guard lock(mutex_);
  if (vector >= entries_.size()) {
    return std::nullopt;
  }
  return entries_[vector];
}

bool MsixTable::pending(std::uint16_t vector) const {
  std::lock_guard lock(mutex_);
  return vector < entries_.size() && pending_locked(vector);
}

std::optional<Error> MsixTable::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

}  // namespace vmm::pci
