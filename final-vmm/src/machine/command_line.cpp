#include "vmm/machine/command_line.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <sstream>
#include <vector>

namespace vmm::machine {
namespace {

constexpr std::uint64_t kMinMemory = 64ull << 20;
constexpr std::uint64_t kMaxMemory = 64ull << 30;
constexpr std::uint32_t kMaxCpus = 32;
constexpr std::size_t kMaxSocketPath = 107;  // sockaddr_un.sun_path holds 108 bytes, NUL included

Error bad(std::string_view option, std::string_view value, std::string_view why) {
  return Error{std::string(option), 0, fmt::format("{}: {}", value, why)};
}

Result<bool> parse_on_off(std::string_view option, std::string_view key, std::string_view value) {
  if (value == "on" || value == "true") {
    return true;
  }
  if (value == "off" || value == "false") {
    return false;
  }
  return std::unexpected(bad(option, fmt::format("{}={}", key, value), "use on or off"));
}

Result<void> check_ipv4(std::string_view option, std::string_view key, const std::string& value) {
  in_addr address{};
  if (::inet_pton(AF_INET, value.c_str(), &address) != 1) {
    return std::unexpected(bad(option, fmt::format("{}={}", key, value), "not an IPv4 address"));
  }
  return {};
}

Result<void> check_mac(std::string_view option, const std::string& value) {
  unsigned octets[6];
  char tail = 0;
  if (std::sscanf(value.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &octets[0], &octets[1], &octets[2], &octets[3],
                  &octets[4], &octets[5], &tail) != 6 ||
      value.size() != 17) {
    return std::unexpected(bad(option, "mac=" + value, "not a MAC address (use e.g. 52:54:00:12:34:56)"));
  }
  if ((octets[0] & 1) != 0) {
    return std::unexpected(bad(option, "mac=" + value, "a multicast address cannot be an interface's"));
  }
  return {};
}

Result<std::string> socket_path(std::string_view option, const std::map<std::string, std::string>& kv) {
  auto it = kv.find("socket");
  if (it == kv.end() || it->second.empty()) {
    return std::unexpected(bad(option, "", "socket=PATH is required"));
  }
  if (it->second.size() > kMaxSocketPath) {
    return std::unexpected(bad(option, "socket=" + it->second,
                               fmt::format("longer than the {} bytes a unix socket path can have", kMaxSocketPath)));
  }
  return it->second;
}

// Applies one option's key=value text to the config. Each returns an error naming the option.
using Keys = std::vector<std::string_view>;

Result<void> apply_cpus(VmConfig& config, const std::string& text) {
  static const Keys keys{"boot"};
  auto kv = parse_key_values(text, keys, "--cpus", "boot");
  if (!kv) {
    return std::unexpected(kv.error());
  }
  const auto& value = (*kv)["boot"];
  std::uint32_t cpus = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), cpus);
  if (ec != std::errc() || end != value.data() + value.size() || cpus == 0 || cpus > kMaxCpus) {
    return std::unexpected(bad("--cpus", "boot=" + value, fmt::format("a number of vCPUs from 1 to {}", kMaxCpus)));
  }
  config.cpus = cpus;
  return {};
}

Result<void> apply_memory(VmConfig& config, const std::string& text) {
  static const Keys keys{"size", "shared", "hugepages"};
  auto kv = parse_key_values(text, keys, "--memory", "size");
  if (!kv) {
    return std::unexpected(kv.error());
  }
  if (auto it = kv->find("size"); it != kv->end()) {
    auto size = parse_size(it->second);
    if (!size) {
      return std::unexpected(bad("--memory", "size=" + it->second, "not a size (use e.g. 512M or 2G)"));
    }
    if (*size < kMinMemory || *size > kMaxMemory || *size % 4096 != 0) {
      return std::unexpected(bad("--memory", "size=" + it->second, "between 64M and 64G, in whole 4 KiB pages"));
    }
    config.memory.size = *size;
  }
  for (const auto& [key, field] :
       {std::pair{"shared", &config.memory.shared}, std::pair{"hugepages", &config.memory.hugepages}}) {
    if (auto it = kv->find(key); it != kv->end()) {
      auto on = parse_on_off("--memory", key, it->second);
      if (!on) {
        return std::unexpected(on.error());
      }
      *field = *on;
    }
  }
  return {};
}

Result<void> apply_disk(VmConfig& config, const std::string& text) {
  static const Keys keys{"path", "readonly", "serial"};
  auto kv = parse_key_values(text, keys, "--disk", "path");
  if (!kv) {
    return std::unexpected(kv.error());
  }
  DiskConfig disk;
  disk.path = (*kv)["path"];
  if (disk.path.empty()) {
    return std::unexpected(bad("--disk", text, "path=FILE is required"));
  }
  if (auto it = kv->find("readonly"); it != kv->end()) {
    auto on = parse_on_off("--disk", "readonly", it->second);
    if (!on) {
      return std::unexpected(on.error());
    }
    disk.readonly = *on;
  }
  if (auto it = kv->find("serial"); it != kv->end()) {
    if (it->second.size() > 20) {
      return std::unexpected(bad("--disk", "serial=" + it->second, "at most 20 bytes (VIRTIO_BLK_ID_BYTES)"));
    }
    disk.serial = it->second;
  }
  config.disks.push_back(std::move(disk));
  return {};
}

Result<void> apply_net(VmConfig& config, const std::string& text) {
  static const Keys keys{"tap", "mac", "ip", "mask"};
  auto kv = parse_key_values(text, keys, "--net");
  if (!kv) {
    return std::unexpected(kv.error());
  }
  NetConfig net;
  net.tap = (*kv)["tap"];
  if (net.tap.empty() || net.tap.size() > 15) {
    return std::unexpected(bad("--net", "tap=" + net.tap, "an interface name of 1 to 15 characters is required"));
  }
  if (auto it = kv->find("mac"); it != kv->end()) {
    if (auto rc = check_mac("--net", it->second); !rc) {
      return rc;
    }
    net.mac = it->second;
  }
  for (const auto& [key, field] : {std::pair{"ip", &net.ip}, std::pair{"mask", &net.mask}}) {
    if (auto it = kv->find(key); it != kv->end()) {
      if (auto rc = check_ipv4("--net", key, it->second); !rc) {
        return rc;
      }
      *field = it->second;
    }
  }
  if (net.mask && !net.ip) {
    return std::unexpected(bad("--net", "mask=" + *net.mask, "needs ip= as well"));
  }
  if (net.ip && !net.mask) {
    net.mask = "255.255.255.0";
  }
  config.nets.push_back(std::move(net));
  return {};
}

}  // namespace

Result<std::uint64_t> parse_size(std::string_view text) {
  if (text.empty()) {
    return logic_error("size", "empty");
  }
  std::uint64_t shift = 0;
  std::string_view digits = text;
  switch (text.back()) {
    case 'k':
    case 'K':
      shift = 10;
      break;
    case 'm':
    case 'M':
      shift = 20;
      break;
    case 'g':
    case 'G':
      shift = 30;
      break;
    default:
      break;
  }
  if (shift != 0) {
    digits.remove_suffix(1);
  }
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size() || digits.empty()) {
    return logic_error("size", fmt::format("{}: not a whole number with an optional K, M or G", text));
  }
  if (shift != 0 && value > (UINT64_MAX >> shift)) {
    return logic_error("size", fmt::format("{}: too large", text));
  }
  return value << shift;
}

Result<std::map<std::string, std::string>> parse_key_values(std::string_view text,
                                                            std::span<const std::string_view> allowed,
                                                            std::string_view option, std::string_view bare_key) {
  std::map<std::string, std::string> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view item = text.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) {
      return std::unexpected(bad(option, text, "empty item (two commas, or a trailing one?)"));
    }
    const auto eq = item.find('=');
    std::string key;
    std::string value;
    if (eq == std::string_view::npos) {
      if (bare_key.empty() || out.contains(std::string(bare_key))) {
        return std::unexpected(bad(option, item, "expected key=value"));
      }
      key = bare_key;
      value = item;
    } else {
      key = item.substr(0, eq);
      value = item.substr(eq + 1);
    }
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string keys;
      for (const auto& k : allowed) {
        keys += (keys.empty() ? "" : ", ") + std::string(k);
      }
      return std::unexpected(bad(option, item, fmt::format("unknown key '{}' (known: {})", key, keys)));
    }
    if (!out.emplace(key, value).second) {
      return std::unexpected(bad(option, item, fmt::format("'{}' given twice", key)));
    }
  }
  return out;
}

CliOutcome parse_command_line(int argc, const char* const* argv) {
  CLI::App app{
      "final-vmm: vmmlab's whole VMM. Boots a Linux kernel (bzImage or vmlinux) with a 16550 console, an i8042, PCI "
      "and virtio, vhost-user and VFIO devices. Options follow Cloud Hypervisor's key=value style.",
      "final-vmm"};
  app.footer(
      "Example:\n  final-vmm --kernel /boot/vmlinuz --initramfs initramfs.cpio.gz --cpus boot=2 --memory size=512M "
      "--rng --disk path=disk.img --cmdline \"console=ttyS0 reboot=k panic=1\"\n\nThe console is COM1 (ttyS0) on "
      "this terminal; Ctrl-A x quits. Exit status: 0 when the guest reboots or is stopped, 1 on a guest panic or a "
      "VMM error, 2 for a bad command line.");
  VmConfig config;
  std::string cpus;
  std::string memory;
  std::vector<std::string> disks;
  std::vector<std::string> nets;
  std::optional<std::string> rng;
  std::vector<std::string> vhost_blk;
  std::vector<std::string> vhost_rng;
  std::vector<std::string> devices;
  std::string serial = "tty";
  std::string dump;
  bool version = false;
  app.add_option("--kernel", config.kernel, "The kernel: a bzImage (/boot/vmlinuz-*) or an uncompressed ELF vmlinux")
      ->check(CLI::ExistingFile);
  app.add_option("--initramfs", config.initramfs, "A cpio archive (compressed or not) the kernel unpacks as /")
      ->check(CLI::ExistingFile);
  app.add_option("--cmdline", config.cmdline, "The kernel command line")->capture_default_str();
  app.add_option("--cpus", cpus, "boot=N: vCPUs, 1 to 32 (\"--cpus 2\" works too). Default: boot=1");
  app.add_option("--memory", memory,
                 "size=SIZE[,shared=on][,hugepages=on]: guest RAM (64M..64G; shared=on backs it with a memfd, which "
                 "vhost-user devices need). Default: size=512M");
  app.add_option("--disk", disks, "path=FILE[,readonly=on][,serial=ID]: a virtio-blk disk on a raw image; repeatable");
  app.add_option("--net", nets,
                 "tap=NAME[,mac=MAC][,ip=A.B.C.D][,mask=A.B.C.D]: a virtio-net on a tap interface (created if "
                 "missing; ip= configures the host's side); repeatable");
  app.add_option("--rng", rng, "[src=PATH]: a virtio-rng (entropy from getrandom, or from PATH)")
      ->expected(0, 1)
      ->default_str("");
  app.add_option("--vhost-user-blk", vhost_blk, "socket=PATH: a vhost-user-blk device served by PATH's backend");
  app.add_option("--vhost-user-rng", vhost_rng, "socket=PATH: a vhost-user-rng device served by PATH's backend");
  app.add_option("--device", devices,
                 "path=/sys/bus/pci/devices/BDF (or just the BDF): pass a host PCI device through with VFIO");
  app.add_option("--serial", serial, "tty | file=PATH | off: where the guest's console (COM1) goes")
      ->capture_default_str();
  app.add_flag("--trace", config.trace, "Print every KVM exit and the boot layout to stderr");
  app.add_flag("--stats", config.stats, "Print exit and device counters when the VM ends");
  app.add_option("--dump-topology", dump,
                 "FILE.dot: write the VM's topology (vCPUs, buses, PCI devices, BARs, MSI-X routes) as Graphviz, at "
                 "start and again at the end");
  app.add_flag("--version", version, "Print the version and exit");

  CliOutcome outcome;
  auto fail = [&](const Error& error) {
    outcome.exit_code = 2;
    outcome.output = fmt::format("final-vmm: {}\n", error.message());
    return outcome;
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    outcome.output = app.help();
    return outcome;
  } catch (const CLI::ParseError& e) {
    outcome.exit_code = 2;
    outcome.output = fmt::format("final-vmm: {}\nRun with --help for more information.\n", e.what());
    return outcome;
  }
  if (version) {
    outcome.output = "final-vmm (vmmlab) " VMMLAB_VERSION "\n";
    return outcome;
  }
  if (config.kernel.empty()) {
    return fail(bad("--kernel", "", "a kernel is required (e.g. --kernel /boot/vmlinuz-$(uname -r))"));
  }
  if (!cpus.empty()) {
    if (auto rc = apply_cpus(config, cpus); !rc) {
      return fail(rc.error());
    }
  }
  if (!memory.empty()) {
    if (auto rc = apply_memory(config, memory); !rc) {
      return fail(rc.error());
    }
  }
  for (const auto& disk : disks) {
    if (auto rc = apply_disk(config, disk); !rc) {
      return fail(rc.error());
    }
  }
  for (const auto& net : nets) {
    if (auto rc = apply_net(config, net); !rc) {
      return fail(rc.error());
    }
  }
  if (app.count("--rng") > 0) {
    config.rng = RngConfig{};
    if (rng && !rng->empty()) {
      static const Keys keys{"src"};
      auto kv = parse_key_values(*rng, keys, "--rng", "src");
      if (!kv) {
        return fail(kv.error());
      }
      config.rng->source = (*kv)["src"];
    }
  }
  for (const auto& [option, texts, out] : {std::tuple{"--vhost-user-blk", &vhost_blk, &config.vhost_user_blk},
                                           std::tuple{"--vhost-user-rng", &vhost_rng, &config.vhost_user_rng}}) {
    for (const auto& text : *texts) {
      static const Keys keys{"socket"};
      auto kv = parse_key_values(text, keys, option, "socket");
      if (!kv) {
        return fail(kv.error());
      }
      auto path = socket_path(option, *kv);
      if (!path) {
        return fail(path.error());
      }
      out->push_back({*path});
    }
  }
  if ((!config.vhost_user_blk.empty() || !config.vhost_user_rng.empty()) && !config.memory.shared) {
    return fail(bad(config.vhost_user_blk.empty() ? "--vhost-user-rng" : "--vhost-user-blk", "",
                    "needs --memory ...,shared=on (the backend maps guest RAM)"));
  }
  for (const auto& text : devices) {
    static const Keys keys{"path"};
    auto kv = parse_key_values(text, keys, "--device", "path");
    if (!kv) {
      return fail(kv.error());
    }
    std::string path = (*kv)["path"];
    if (path.find('/') == std::string::npos) {
      path = "/sys/bus/pci/devices/" + path;
    }
    config.vfio.push_back({path});
  }
  if (serial == "tty") {
    config.serial.mode = SerialConfig::Mode::Tty;
  } else if (serial == "off") {
    config.serial.mode = SerialConfig::Mode::Off;
  } else if (serial.starts_with("file=") && serial.size() > 5) {
    config.serial.mode = SerialConfig::Mode::File;
    config.serial.path = serial.substr(5);
  } else {
    return fail(bad("--serial", serial, "use tty, off or file=PATH"));
  }
  if (!dump.empty()) {
    config.dump_topology = dump;
  }
  outcome.config = std::move(config);
  return outcome;
}

}  // namespace vmm::machine
