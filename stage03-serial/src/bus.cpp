#include "vmm/devices/bus.hpp"

#include <algorithm>
#include <mutex>

#include <fmt/format.h>

namespace vmm::devices {

namespace {
std::string describe(const BusRange& r) {
  return fmt::format("[{:#x}, {:#x})", r.base, r.end());
}
}  // namespace

Result<void> Bus::insert(std::shared_ptr<BusDevice> device, std::uint64_t base, std::uint64_t size, std::string name) {
  const std::string op = fmt::format("{} bus: insert {}", name_, name);
  if (!device) {
    return logic_error(op, "no device");
  }
  if (size == 0 || base + size < base) {
    return logic_error(op, fmt::format("invalid range of {:#x} bytes at {:#x}", size, base));
  }
  const BusRange range{.base = base, .size = size};
  std::unique_lock lock(mutex_);
  // Ranges are disjoint and sorted by base: only the neighbours can overlap.
  auto next = entries_.lower_bound(base);
  if (next != entries_.end() && next->second.range.base < range.end()) {
    return logic_error(
        op, fmt::format("{} overlaps {} at {}", describe(range), next->second.name, describe(next->second.range)));
  }
  if (next != entries_.begin()) {
    const auto& prev = std::prev(next)->second;
    if (prev.range.end() > base) {
      return logic_error(op, fmt::format("{} overlaps {} at {}", describe(range), prev.name, describe(prev.range)));
    }
  }
  entries_.emplace(base, BusEntry{.range = range, .device = std::move(device), .name = std::move(name)});
  return {};
}

Result<std::shared_ptr<BusDevice>> Bus::remove(std::uint64_t base) {
  std::unique_lock lock(mutex_);
  auto it = entries_.find(base);
  if (it == entries_.end()) {
    return logic_error(fmt::format("{} bus: remove", name_), fmt::format("no device at {:#x}", base));
  }
  auto device = std::move(it->second.device);
  entries_.erase(it);
  return device;
}

const BusEntry* Bus::lookup(std::uint64_t address, std::uint64_t length) const {
  auto next = entries_.upper_bound(address);
  if (next == entries_.begin()) {
    return nullptr;
  }
  const auto& entry = std::prev(next)->second;
  return entry.range.contains(address, length) ? &entry : nullptr;
}

bool Bus::read(std::uint64_t address, std::span<std::uint8_t> data) const {
  std::shared_ptr<BusDevice> device;
  std::uint64_t offset = 0;
  {
    std::shared_lock lock(mutex_);
    if (const auto* entry = lookup(address, data.size())) {
      device = entry->device;  // keep it alive if another thread removes it meanwhile
      offset = address - entry->range.base;
    }
  }
  if (!device) {
    std::ranges::fill(data, std::uint8_t{0xff});  // nothing drives the bus: it floats high
    unclaimed_reads_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  device->read(offset, data);
  return true;
}

bool Bus::write(std::uint64_t address, std::span<const std::uint8_t> data) const {
  std::shared_ptr<BusDevice> device;
  std::uint64_t offset = 0;
  {
    std::shared_lock lock(mutex_);
    if (const auto* entry = lookup(address, data.size())) {
      device = entry->device;
      offset = address - entry->range.base;
    }
  }
  if (!device) {
    unclaimed_writes_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  device->write(offset, data);
  return true;
}

std::optional<BusEntry> Bus::find(std::uint64_t address) const {
  std::shared_lock lock(mutex_);
  if (const auto* entry = lookup(address, 1)) {
    return *entry;
  }
  return std::nullopt;
}

std::vector<BusEntry> Bus::entries() const {
  std::shared_lock lock(mutex_);
  std::vector<BusEntry> out;
  out.reserve(entries_.size());
  for (const auto& [base, entry] : entries_) {
    out.push_back(entry);
  }
  return out;
}

}  // namespace vmm::devices
