#pragma once
/// @file
/// @brief final-vmm's command line, in Cloud Hypervisor's style (`--disk path=a.img,readonly=on`), parsed into a
///        `VmConfig` with CLI11. Every value is checked here, before anything opens a device, so a typo costs an
///        exit status 2 and one line naming the option and the value instead of a half-built VM.
///
/// Nothing here exits the process or prints: `main` prints `CliOutcome::output` and returns its `exit_code`, and the
/// tests read both.

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "vmm/error.hpp"
#include "vmm/machine/vm_config.hpp"

namespace vmm::machine {

/// @brief The exit status of a command line final-vmm refuses: the one most tools, Cloud Hypervisor among them, give
///        a usage error. CLI11's own codes (100 and up) are folded into it.
inline constexpr int kCliUsageError = 2;

/// @brief What `parse_command_line` decided: a configuration to run, or text to print and an exit status.
struct CliOutcome {
  std::optional<VmConfig> config;  ///< Set when the VM should run (`exit_code` is then 0, `output` empty).
  int exit_code = 0;               ///< 0 for --help and --version, `kCliUsageError` for a bad command line.
  std::string output;              ///< Help or version (for stdout), or the one-line error (stderr); ends in '\n'.
};

/// @brief Parses `argv` (`argv[0]` is the program). Never exits: --help, --version and every error come back in the
///        outcome. An error's line reads "final-vmm: OPTION: VALUE: why", e.g.
///        "final-vmm: --memory: size=12Q: not a size (use e.g. 512M or 2G)".
/// @param argc The number of entries in `argv`; 0 is treated as an empty command line.
/// @param argv The arguments, as `main` received them.
[[nodiscard]] CliOutcome parse_command_line(int argc, const char* const* argv);

/// @brief A size in bytes: a whole number with an optional binary suffix K, M or G (either case): "65536", "2048K",
///        "512M", "1G". Fractions ("1.5G"), signs, other suffixes and values beyond 64 bits are refused; 0 is a size
///        (callers decide their own minimum).
/// @return The size, or an error whose `operation` is the text and whose `context` says why.
[[nodiscard]] Result<std::uint64_t> parse_size(std::string_view text);

/// @brief One option's value, "key=value[,key=value...]", as a map: "path=a.img,readonly=on" gives
///        {path: a.img, readonly: on}. Values may be empty ("serial=") and may contain '=' after the first one; they
///        cannot contain ','.
/// @param text The option's value.
/// @param allowed_keys The keys this option knows; any other is refused, listing these.
/// @param option The option's name ("--disk"), for the error message.
/// @return The map, or an error (operation `option`) for an empty item, an item without '=', an unknown key or a key
///         given twice, naming the item.
[[nodiscard]] Result<std::map<std::string, std::string>> parse_key_values(
    std::string_view text, std::span<const std::string_view> allowed_keys, std::string_view option);

}  // namespace vmm::machine
