#pragma once
// Test support: the BARs the stage04 enumerator guest lists, parsed back into BarMappings, so a test can compare the
// guest's view of the bus with the VMM's (stage04's machine tests and lab 04 use it).

#include <cstdint>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "vmm/pci/pci_root.hpp"

namespace vmm::pci::testing {

// The BARs in the guest's listing: "  BARn io|mem32|mem64 ... size 0x.. at 0x.." under "00:DD.0 ..." lines.
inline std::vector<BarMapping> guest_bars(const std::string& listing) {
  static const std::regex device_line(R"(^00:([0-9a-f]{2})\.0 )");
  static const std::regex bar_line(R"(^  BAR([0-5]) (io|mem32|mem64)[a-z ]* size 0x([0-9a-f]+) at 0x([0-9a-f]+)$)");
  std::vector<BarMapping> bars;
  std::uint8_t device = 0xff;
  std::istringstream in(listing);
  std::string line;
  std::smatch match;
  while (std::getline(in, line)) {
    if (std::regex_search(line, match, device_line)) {
      device = static_cast<std::uint8_t>(std::stoul(match[1], nullptr, 16));
    } else if (std::regex_match(line, match, bar_line)) {
      bars.push_back({.device_number = device,
                      .bar_index = static_cast<std::uint8_t>(std::stoul(match[1])),
                      .space = match[2] == "io" ? BarSpace::Io : BarSpace::Memory,
                      .base = std::stoull(match[4], nullptr, 16),
                      .size = std::stoull(match[3], nullptr, 16)});
    }
  }
  return bars;
}

}  // namespace vmm::pci::testing
