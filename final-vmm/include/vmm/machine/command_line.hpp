#pragma once
/// @file
/// @brief final-vmm's command line, in Cloud Hypervisor's style (`--disk path=a.img,readonly=on`), parsed into a
///        `VmConfig` with CLI11. Never exits the process: the caller prints what it returns.

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "vmm/error.hpp"
#include "vmm/machine/vm_config.hpp"

namespace vmm::machine {

/// @brief What `parse_command_line` decided: a configuration to run, or text to print and an exit status.
struct CliOutcome {
  std::optional<VmConfig> config;  ///< Set when the VM should run.
  int exit_code = 0;               ///< 0 for --help/--version, 2 for a bad command line.
  std::string output;              ///< The help text, the version, or the one-line error (ending in a newline).
};

/// @brief Parses `argv`. Any bad value gives exit code 2 and a message that names the option and the value.
[[nodiscard]] CliOutcome parse_command_line(int argc, const char* const* argv);

/// @brief "512M", "2G", "65536", "64K" in bytes (binary units, case-insensitive suffix). Refuses fractions, other
///        suffixes and values that overflow 64 bits.
[[nodiscard]] Result<std::uint64_t> parse_size(std::string_view text);

/// @brief "path=a.img,readonly=on" as a map. Keys must be in `allowed`; each at most once; every item needs `=`
///        unless `bare_key` is given, in which case one item without `=` is the value of that key ("512M" for
///        --memory). Errors name `option`.
[[nodiscard]] Result<std::map<std::string, std::string>> parse_key_values(std::string_view text,
                                                                          std::span<const std::string_view> allowed,
                                                                          std::string_view option,
                                                                          std::string_view bare_key = {});

}  // namespace vmm::machine
