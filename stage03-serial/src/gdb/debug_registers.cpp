#include "vmm/gdb/debug_registers.hpp"

#include <fmt/format.h>

#include <vector>

namespace vmm::gdb {

namespace {

struct Piece {
  std::uint64_t address;
  std::uint8_t length;
};

// The largest aligned power-of-two pieces (at most 8 bytes) that cover [address, address + length).
std::vector<Piece> split(std::uint64_t address, std::uint64_t length) {
  std::vector<Piece> pieces;
  while (length > 0 && pieces.size() <= 4) {
    std::uint8_t size = 8;
    while (size > 1 && ((address % size) != 0 || size > length)) {
      size = static_cast<std::uint8_t>(size / 2);
    }
    pieces.push_back({address, size});
    address += size;
    length -= size;
  }
  return pieces;
}

// DR7's R/W field per slot: 00 execute, 01 write, 11 read or write (10 is I/O, unused).
std::uint64_t condition_bits(HardwareKind kind) {
  switch (kind) {
    case HardwareKind::Execution:
      return 0b00;
    case HardwareKind::Write:
      return 0b01;
    case HardwareKind::Read:
    case HardwareKind::Access:
      return 0b11;
  }
  return 0;
}

// DR7's LEN field: 00 one byte, 01 two, 11 four, 10 eight.
std::uint64_t length_bits(std::uint8_t length) {
  switch (length) {
    case 2:
      return 0b01;
    case 4:
      return 0b11;
    case 8:
      return 0b10;
    default:
      return 0b00;
  }
}

}  // namespace

Result<void> DebugRegisters::insert(HardwareKind kind, std::uint64_t address, std::uint64_t length) {
  if (length == 0 || address + length < address) {
    return logic_error("hardware breakpoint", fmt::format("[{:#x}, +{}) is not a range", address, length));
  }
  if (kind == HardwareKind::Execution && length != 1) {
    return logic_error("hardware breakpoint", fmt::format("an execution breakpoint has kind 1, not {}", length));
  }
  const auto pieces = split(address, length);
  std::vector<std::size_t> free;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i].used) {
      free.push_back(i);
    }
  }
  if (pieces.size() > free.size()) {
    return logic_error("hardware breakpoint", fmt::format("[{:#x}, +{}) needs {} debug registers and {} of 4 are free",
                                                          address, length, pieces.size(), free.size()));
  }
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    slots_[free[i]] = {.used = true,
                       .kind = kind,
                       .request_address = address,
                       .request_length = length,
                       .address = pieces[i].address,
                       .length = pieces[i].length};
  }
  return {};
}

Result<void> DebugRegisters::remove(HardwareKind kind, std::uint64_t address, std::uint64_t length) {
  bool found = false;
  for (auto& slot : slots_) {
    if (slot.used && slot.kind == kind && slot.request_address == address && slot.request_length == length) {
      slot = {};
      found = true;
    }
  }
  if (!found) {
    return logic_error("hardware breakpoint", fmt::format("nothing inserted at [{:#x}, +{})", address, length));
  }
  return {};
}

bool DebugRegisters::empty() const {
  for (const auto& slot : slots_) {
    if (slot.used) {
      return false;
    }
  }
  return true;
}

std::array<std::uint64_t, 4> DebugRegisters::addresses() const {
  std::array<std::uint64_t, 4> out{};
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    out[i] = slots_[i].used ? slots_[i].address : 0;
  }
  return out;
}

std::uint64_t DebugRegisters::dr7() const {
  std::uint64_t dr7 = 0;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i].used) {
      continue;
    }
    dr7 |= 1ull << (2 * i);  // L<i>
    dr7 |= condition_bits(slots_[i].kind) << (16 + 4 * i);
    dr7 |= length_bits(slots_[i].length) << (18 + 4 * i);
  }
  if (dr7 != 0) {
    dr7 |= 0x300;  // LE | GE
  }
  return dr7;
}

std::optional<HardwareHit> DebugRegisters::hit(std::uint64_t dr6) const {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].used && (dr6 & (1ull << i)) != 0) {
      return HardwareHit{slots_[i].kind, slots_[i].request_address};
    }
  }
  return std::nullopt;
}

}  // namespace vmm::gdb
