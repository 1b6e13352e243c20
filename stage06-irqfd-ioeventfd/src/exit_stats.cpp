#include "vmm/machine/exit_stats.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include <fmt/format.h>

namespace vmm::machine {

namespace {

// Width of the left column of the side-by-side table: "  " + 18 for the name + 12 for the count + 4 of gap.
constexpr std::size_t kLeftWidth = 36;

// The reasons that happened, then the total, as "  name  count" lines (without newlines).
std::vector<std::string> reason_lines(const ExitCountersSnapshot& snapshot) {
  std::vector<std::string> lines;
  for (std::size_t i = 0; i < kExitReasonCount; ++i) {
    const auto reason = static_cast<ExitReason>(i);
    if (snapshot.count(reason) != 0) {
      lines.push_back(fmt::format("  {:<18}{:>12}", to_string(reason), snapshot.count(reason)));
    }
  }
  lines.push_back(fmt::format("  {:<18}{:>12}", "total", snapshot.total()));
  return lines;
}

std::vector<std::string> kvm_lines(std::span<const Stat> kvm) {
  std::vector<std::string> lines;
  for (const auto name : kKvmExitStatNames) {
    auto it = std::ranges::find(kvm, name, &Stat::name);
    if (it != kvm.end() && !it->values.empty()) {
      lines.push_back(fmt::format("  {:<18}{:>12}", name, it->values.front()));
    }
  }
  return lines;
}

}  // namespace

std::string format_exit_reasons(const ExitCountersSnapshot& snapshot) {
  std::string out = "VMM userspace exits\n";
  for (const auto& line : reason_lines(snapshot)) {
    out += line + "\n";
  }
  return out;
}

std::string format_exit_addresses(const ExitCountersSnapshot& snapshot, std::size_t limit) {
  struct Row {
    bool mmio;
    std::uint64_t address;
    AccessCount count;
  };
  std::vector<Row> rows;
  for (const auto& [address, count] : snapshot.mmio) {
    rows.push_back({true, address, count});
  }
  for (const auto& [port, count] : snapshot.pio) {
    rows.push_back({false, port, count});
  }
  // Busiest first; ties by MMIO before port I/O, then by address, so the table is deterministic.
  std::ranges::sort(rows, [](const Row& a, const Row& b) {
    if (a.count.total() != b.count.total()) {
      return a.count.total() > b.count.total();
    }
    if (a.mmio != b.mmio) {
      return a.mmio;
    }
    return a.address < b.address;
  });
  std::string out = "busiest exit addresses\n";
  if (rows.empty()) {
    return out + "  (none)\n";
  }
  for (std::size_t i = 0; i < rows.size() && i < limit; ++i) {
    const auto& row = rows[i];
    out += fmt::format("  {:<4} {:<#14x} reads {:<10} writes {}\n", row.mmio ? "mmio" : "pio", row.address,
                       row.count.reads, row.count.writes);
  }
  if (rows.size() > limit) {
    out += fmt::format("  ... and {} more\n", rows.size() - limit);
  }
  return out;
}

std::string format_exit_stats(const ExitCountersSnapshot& snapshot, std::span<const Stat> kvm,
                              std::size_t address_limit) {
  const auto left = reason_lines(snapshot);
  const auto right = kvm_lines(kvm);
  std::string out;
  if (right.empty()) {
    out = format_exit_reasons(snapshot);
  } else {
    out += fmt::format("{:<{}}{}\n", "VMM userspace exits", kLeftWidth, "KVM vCPU stats (KVM_GET_STATS_FD)");
    for (std::size_t i = 0; i < std::max(left.size(), right.size()); ++i) {
      const std::string& l = i < left.size() ? left[i] : std::string();
      if (i < right.size()) {
        out += fmt::format("{:<{}}{}\n", l, kLeftWidth, right[i]);
      } else {
        out += l + "\n";
      }
    }
  }
  return out + format_exit_addresses(snapshot, address_limit);
}

}  // namespace vmm::machine
