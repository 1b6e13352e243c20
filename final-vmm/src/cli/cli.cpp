#include "vmm/machine/cli.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <fmt/ranges.h>
#include <sys/stat.h>
#include <unistd.h>
#include "vmm/gdb/stub.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <concepts>
#include <sstream>
#include <utility>
#include <vector>

#include "vmm/boot/mptable.hpp"

namespace vmm::machine {
namespace {

constexpr std::string_view kProgram = "final-vmm";
constexpr std::uint64_t kPageSize = 4096;
// Below 64 MiB a distribution kernel does not get as far as its initramfs; above 64 GiB is far more than any lab
// needs, and the limit turns a typo such as size=512G into an error instead of a host under memory pressure.
constexpr std::uint64_t kMinMemory = 64ull << 20;
constexpr std::uint64_t kMaxMemory = 64ull << 30;
constexpr std::size_t kMaxDiskSerial = 20;   // VIRTIO_BLK_ID_BYTES: GET_ID answers with at most this many bytes.
constexpr std::size_t kMaxTapName = 15;      // IFNAMSIZ (16) with its NUL.
constexpr std::size_t kMaxSocketPath = 107;  // sockaddr_un.sun_path holds 108 bytes, NUL included.
constexpr std::string_view kDefaultNetmask = "255.255.255.0";  // a /24, as Cloud Hypervisor's default
constexpr std::string_view kPciSysfs = "/sys/bus/pci/devices/";

// The one error format of the command line, "OPTION: VALUE: why". An empty value is shown as "" so that the line
// still says what was given.
std::unexpected<Error> refuse(std::string_view option, std::string_view value, std::string_view why) {
  return logic_error(option, fmt::format("{}: {}", value.empty() ? "\"\"" : value, why));
}

// A whole decimal (or hex) number and nothing else: from_chars takes no sign, space or fraction for unsigned types,
// and reports overflow rather than wrapping.
template <std::unsigned_integral T>
std::expected<T, std::errc> whole_number(std::string_view text, int base = 10) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (ec != std::errc()) {
    return std::unexpected(ec);
  }
  if (end != text.data() + text.size() || text.empty()) {
    return std::unexpected(std::errc::invalid_argument);
  }
  return value;
}

// One option's key=value list, with the checks several options share. Its errors name the option and the item as
// the user typed it ("size=12Q"), which is what they need to find and fix.
class Fields {
 public:
  // `bare_key`: the key a value without any '=' belongs to ("--cpus 2" means boot=2), as the option allows.
  static Result<Fields> parse(std::string_view option, std::string_view text, std::span<const std::string_view> keys,
                              std::string_view bare_key = {}) {
    const bool bare = !bare_key.empty() && text.find('=') == std::string_view::npos;
    auto values = parse_key_values(bare ? fmt::format("{}={}", bare_key, text) : std::string(text), keys, option);
    if (!values) {
      return std::unexpected(values.error());
    }
    return Fields(option, text, std::move(*values));
  }

  [[nodiscard]] const std::string* find(std::string_view key) const {
    const auto it = values_.find(std::string(key));
    return it == values_.end() ? nullptr : &it->second;
  }

  // An error about `key`'s value, shown as key=value.
  [[nodiscard]] std::unexpected<Error> refuse_value(std::string_view key, std::string_view why) const {
    const auto* value = find(key);
    return refuse(option_, fmt::format("{}={}", key, value != nullptr ? *value : ""), why);
  }

  // A key the option cannot do without: missing or empty is an error about the whole text.
  [[nodiscard]] Result<std::string> required(std::string_view key, std::string_view what) const {
    const auto* value = find(key);
    if (value == nullptr || value->empty()) {
      return refuse(option_, text_, fmt::format("{}={} is required", key, what));
    }
    return *value;
  }

  // on|off, or true|false as Cloud Hypervisor also takes; nullopt when the key was not given.
  [[nodiscard]] Result<std::optional<bool>> toggle(std::string_view key) const {
    const auto* value = find(key);
    if (value == nullptr) {
      return std::nullopt;
    }
    if (*value == "on" || *value == "true") {
      return true;
    }
    if (*value == "off" || *value == "false") {
      return false;
    }
    return refuse_value(key, "use on or off");
  }

  // Sets `field` when `key` was given as on or off.
  [[nodiscard]] Result<void> toggle_into(std::string_view key, bool& field) const {
    auto on = toggle(key);
    if (!on) {
      return std::unexpected(on.error());
    }
    field = on->value_or(field);
    return {};
  }

 private:
  Fields(std::string_view option, std::string_view text, std::map<std::string, std::string> values)
      : option_(option), text_(text), values_(std::move(values)) {}

  std::string option_;
  std::string text_;
  std::map<std::string, std::string> values_;
};

// Parses `text` and insists on `key`, the one the option is about (--disk's path, --net's tap).
Result<std::pair<Fields, std::string>> parse_requiring(std::string_view option, std::string_view text,
                                                       std::span<const std::string_view> keys, std::string_view key,
                                                       std::string_view what) {
  auto fields = Fields::parse(option, text, keys);
  if (!fields) {
    return std::unexpected(fields.error());
  }
  auto value = fields->required(key, what);
  if (!value) {
    return std::unexpected(value.error());
  }
  return std::pair{std::move(*fields), std::move(*value)};
}

// For an option whose one key is required (--rng src=, --vhost-user-* socket=, --serial file=): sets `out` to its
// value.
Result<void> read_sole_value(std::string_view option, std::string_view text, std::string_view key,
                             std::string_view what, std::string& out) {
  const std::array<std::string_view, 1> keys{key};
  auto parsed = parse_requiring(option, text, keys, key, what);
  if (!parsed) {
    return std::unexpected(parsed.error());
  }
  out = std::move(parsed->second);
  return {};
}

// --- The options, each from its text into the config. Same signature for all, so that one loop applies them. ---

using Apply = Result<void> (*)(std::string_view text, VmConfig& config);

// The kernel and the initramfs are read before anything else happens: a path that does not lead to a readable file
// is a mistake on the command line (status 2), not a VMM failure.
Result<void> check_readable_file(std::string_view option, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || ::access(path.c_str(), R_OK) != 0) {
    return refuse(option, path, fmt::format("cannot read it ({})", errno_name(errno)));
  }
  if (S_ISDIR(st.st_mode)) {
    return refuse(option, path, "a directory, not a file");
  }
  return {};
}

Result<void> apply_initramfs(std::string_view text, VmConfig& config) {
  config.initramfs = std::string(text);
  return check_readable_file("--initramfs", *config.initramfs);
}

Result<void> apply_cpus(std::string_view text, VmConfig& config) {
  static constexpr std::array<std::string_view, 1> kKeys{"boot"};
  auto fields = Fields::parse("--cpus", text, kKeys, "boot");
  if (!fields) {
    return std::unexpected(fields.error());
  }
  const auto* count = fields->find("boot");
  const auto cpus = whole_number<std::uint32_t>(count != nullptr ? *count : "");
  if (!cpus || *cpus == 0 || *cpus > boot::kMaxCpus) {
    return fields->refuse_value("boot", fmt::format("not a number of vCPUs from 1 to {}", boot::kMaxCpus));
  }
  config.cpus = *cpus;
  return {};
}

Result<void> apply_memory(std::string_view text, VmConfig& config) {
  static constexpr std::array<std::string_view, 3> kKeys{"size", "shared", "hugepages"};
  auto fields = Fields::parse("--memory", text, kKeys, "size");
  if (!fields) {
    return std::unexpected(fields.error());
  }
  if (const auto* size_text = fields->find("size")) {
    const auto size = parse_size(*size_text);
    if (!size) {
      return fields->refuse_value("size", size.error().context);
    }
    if (*size < kMinMemory || *size > kMaxMemory) {
      return fields->refuse_value("size", "out of range (64M to 64G)");
    }
    if (*size % kPageSize != 0) {
      return fields->refuse_value("size", "not a whole number of 4 KiB pages");
    }
    config.memory.size = *size;
  }
  if (auto rc = fields->toggle_into("shared", config.memory.shared); !rc) {
    return rc;
  }
  return fields->toggle_into("hugepages", config.memory.hugepages);
}

Result<void> apply_disk(std::string_view text, VmConfig& config) {
  static constexpr std::array<std::string_view, 3> kKeys{"path", "readonly", "serial"};
  auto parsed = parse_requiring("--disk", text, kKeys, "path", "FILE");
  if (!parsed) {
    return std::unexpected(parsed.error());
  }
  auto& [fields, path] = *parsed;
  DiskConfig disk;
  disk.path = std::move(path);
  if (auto rc = fields.toggle_into("readonly", disk.readonly); !rc) {
    return rc;
  }
  if (const auto* serial = fields.find("serial")) {
    if (serial->size() > kMaxDiskSerial) {
      return fields.refuse_value("serial", fmt::format("longer than {} bytes (VIRTIO_BLK_ID_BYTES)", kMaxDiskSerial));
    }
    disk.serial = *serial;
  }
  config.disks.push_back(std::move(disk));
  return {};
}

// Linux's dev_valid_name(): what SIOCSIFNAME and TUNSETIFF would refuse later, refused here with the reason.
bool valid_interface_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxTapName && name != "." && name != ".." &&
         std::ranges::none_of(
             name, [](char c) { return c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c)); });
}

// Six hex octets with colons. The guest's NIC must have a unicast address (bit 0 of the first octet clear) that is
// not all zeros: Linux's is_valid_ether_addr() refuses the others and the interface would not come up.
std::optional<std::string_view> mac_problem(std::string_view mac) {
  constexpr std::string_view kUse = "not a MAC address (use e.g. 52:54:00:12:34:56)";
  if (mac.size() != 17) {
    return kUse;
  }
  bool all_zero = true;
  for (std::size_t i = 0; i < 6; ++i) {
    const auto octet = mac.substr(i * 3, 2);
    if ((i < 5 && mac[i * 3 + 2] != ':') ||
        !std::ranges::all_of(octet, [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; })) {
      return kUse;
    }
    const auto value = *whole_number<std::uint8_t>(octet, 16);
    if (i == 0 && (value & 1) != 0) {
      return "a multicast address (bit 0 of the first octet is set); a NIC needs a unicast one";
    }
    all_zero = all_zero && value == 0;
  }
  if (all_zero) {
    return "all zeros is not a NIC's address";
  }
  return std::nullopt;
}

std::optional<in_addr> ipv4(const std::string& text) {
  in_addr address{};
  if (::inet_pton(AF_INET, text.c_str(), &address) != 1) {
    return std::nullopt;
  }
  return address;
}

Result<void> apply_net(std::string_view text, VmConfig& config) {
  static constexpr std::array<std::string_view, 4> kKeys{"tap", "mac", "ip", "mask"};
  auto parsed = parse_requiring("--net", text, kKeys, "tap", "NAME");
  if (!parsed) {
    return std::unexpected(parsed.error());
  }
  auto& [fields, tap] = *parsed;
  if (!valid_interface_name(tap)) {
    return fields.refuse_value("tap", "not an interface name (1 to 15 characters, no '/', ':' or spaces)");
  }
  NetConfig net;
  net.tap = std::move(tap);
  if (const auto* mac = fields.find("mac")) {
    if (auto problem = mac_problem(*mac)) {
      return fields.refuse_value("mac", *problem);
    }
    std::array<std::uint8_t, 6> bytes{};
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      bytes[i] = *whole_number<std::uint8_t>(std::string_view(*mac).substr(i * 3, 2), 16);  // checked just above
    }
    net.mac = bytes;
  }
  if (const auto* ip = fields.find("ip")) {
    if (!ipv4(*ip)) {
      return fields.refuse_value("ip", "not an IPv4 address (use e.g. 192.168.249.1)");
    }
    net.ip = *ip;
  }
  if (const auto* mask = fields.find("mask")) {
    const auto address = ipv4(*mask);
    // SIOCSIFNETMASK refuses a mask whose ones are not contiguous from the top: its complement must be 2^n - 1.
    const std::uint32_t host_bits = address ? ~ntohl(address->s_addr) : 1;
    if (!address || (host_bits & (host_bits + 1)) != 0) {
      return fields.refuse_value("mask", "not a netmask (use e.g. 255.255.255.0)");
    }
    if (!net.ip) {
      return fields.refuse_value("mask", "needs ip= too (the mask belongs to the host side's address)");
    }
    net.mask = *mask;
  } else if (net.ip) {
    net.mask = std::string(kDefaultNetmask);  // written out, so that the config says what the tap will get
  }
  config.nets.push_back(std::move(net));
  return {};
}

// CLI11 gives a bare --rng the empty text: the device with its default source.
Result<void> apply_rng(std::string_view text, VmConfig& config) {
  config.rng = RngConfig{};
  if (text.empty()) {
    return {};
  }
  return read_sole_value("--rng", text, "src", "PATH", config.rng->source);
}

Result<void> add_vhost_user(std::string_view option, std::string_view text, std::vector<VhostUserConfig>& devices) {
  std::string socket;
  if (auto rc = read_sole_value(option, text, "socket", "PATH", socket); !rc) {
    return rc;
  }
  if (socket.size() > kMaxSocketPath) {
    return refuse(option, fmt::format("socket={}", socket),
                  fmt::format("longer than the {} bytes a unix socket's path can have", kMaxSocketPath));
  }
  devices.push_back({std::move(socket)});
  return {};
}

// "[DDDD:]BB:DD.F" in lower case with the domain, as sysfs names devices; nullopt when it is not a PCI address.
std::optional<std::string> canonical_bdf(std::string_view text) {
  std::string bdf(text);
  std::ranges::transform(bdf, bdf.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (bdf.size() == 7) {
    bdf.insert(0, "0000:");
  }
  if (bdf.size() != 12 || bdf[4] != ':' || bdf[7] != ':' || bdf[10] != '.') {
    return std::nullopt;
  }
  const auto domain = whole_number<std::uint16_t>(std::string_view(bdf).substr(0, 4), 16);
  const auto bus = whole_number<std::uint8_t>(std::string_view(bdf).substr(5, 2), 16);
  const auto device = whole_number<std::uint8_t>(std::string_view(bdf).substr(8, 2), 16);
  const auto function = whole_number<std::uint8_t>(std::string_view(bdf).substr(11, 1), 8);
  if (!domain || !bus || !device || *device > 0x1f || !function) {
    return std::nullopt;
  }
  return bdf;
}

// A sysfs directory is taken as given (the VMM finds the device by its last component, the address); a bare address
// becomes /sys/bus/pci/devices/ADDRESS.
Result<void> apply_device(std::string_view text, VmConfig& config) {
  static constexpr std::array<std::string_view, 1> kKeys{"path"};
  auto fields = Fields::parse("--device", text, kKeys, "path");
  if (!fields) {
    return std::unexpected(fields.error());
  }
  const std::string& path = *fields->find("path");
  const auto slash = path.find_last_of('/');
  const auto bdf = canonical_bdf(slash == std::string::npos ? path : path.substr(slash + 1));
  if (!bdf) {
    return fields->refuse_value("path", "not a PCI address (use e.g. 0000:00:05.0) or a device's sysfs directory");
  }
  config.vfio.push_back({slash == std::string::npos ? fmt::format("{}{}", kPciSysfs, *bdf) : path});
  return {};
}

Result<void> apply_serial(std::string_view text, VmConfig& config) {
  if (text == "tty" || text == "off") {
    config.serial = SerialConfig{};
    config.serial.mode = text == "tty" ? SerialConfig::Mode::Tty : SerialConfig::Mode::Off;
    return {};
  }
  if (text.find('=') == std::string_view::npos) {
    return refuse("--serial", text, "use tty, off or file=PATH");
  }
  auto rc = read_sole_value("--serial", text, "file", "PATH", config.serial.path);
  if (rc) {
    config.serial.mode = SerialConfig::Mode::File;
  }
  return rc;
}

Result<void> apply_dump_topology(std::string_view text, VmConfig& config) {
  if (text.empty()) {
    return refuse("--dump-topology", text, "needs a file name (e.g. --dump-topology vm.dot)");
  }
  config.dump_topology = std::string(text);
  return {};
}

Result<void> apply_gdb(std::string_view text, VmConfig& config) {
  if (auto endpoint = gdb::GdbEndpoint::parse(text); !endpoint) {
    return refuse("--gdb", text, "use tcp:PORT, tcp:HOST:PORT or unix:PATH (e.g. --gdb tcp:1234)");
  }
  config.gdb = std::string(text);
  return {};
}

// What CLI11 collects: each option's text as typed. The texts are checked afterwards, so that every error has the
// one format above (CLI11's validators would each word theirs differently).
struct RawOptions {
  std::optional<std::string> initramfs;
  std::optional<std::string> cpus;
  std::optional<std::string> memory;
  std::vector<std::string> disks;
  std::vector<std::string> nets;
  std::optional<std::string> rng;
  std::vector<std::string> vhost_user_blk;
  std::vector<std::string> vhost_user_rng;
  std::vector<std::string> devices;
  std::optional<std::string> serial;
  std::optional<std::string> dump_topology;
  std::optional<std::string> gdb;
};

std::span<const std::string> given(const std::optional<std::string>& text) {
  return text ? std::span(&*text, 1) : std::span<const std::string>();
}

// Cloud Hypervisor refuses this too rather than sharing the memory silently: shared=on changes how RAM is backed
// (a memfd), and the user should see that a vhost-user device costs it.
Result<void> check_vhost_user_memory(const VmConfig& config) {
  if (config.memory.shared) {
    return {};
  }
  for (const auto& [option, devices] :
       {std::pair{"--vhost-user-blk", &config.vhost_user_blk}, std::pair{"--vhost-user-rng", &config.vhost_user_rng}}) {
    if (!devices->empty()) {
      return refuse(option, fmt::format("socket={}", devices->front().socket),
                    "needs --memory ...,shared=on (the backend maps guest RAM)");
    }
  }
  return {};
}

Result<void> apply_all(const std::string& kernel, const RawOptions& raw, VmConfig& config) {
  if (kernel.empty()) {
    return logic_error("--kernel", "a kernel is required (e.g. --kernel /boot/vmlinuz-$(uname -r))");
  }
  if (auto rc = check_readable_file("--kernel", kernel); !rc) {
    return rc;
  }
  const std::array<std::pair<std::span<const std::string>, Apply>, 12> steps{{
      {given(raw.initramfs), apply_initramfs},
      {given(raw.cpus), apply_cpus},
      {given(raw.memory), apply_memory},
      {raw.disks, apply_disk},
      {raw.nets, apply_net},
      {given(raw.rng), apply_rng},
      {raw.vhost_user_blk,
       [](std::string_view text, VmConfig& c) { return add_vhost_user("--vhost-user-blk", text, c.vhost_user_blk); }},
      {raw.vhost_user_rng,
       [](std::string_view text, VmConfig& c) { return add_vhost_user("--vhost-user-rng", text, c.vhost_user_rng); }},
      {raw.devices, apply_device},
      {given(raw.serial), apply_serial},
      {given(raw.dump_topology), apply_dump_topology},
      {given(raw.gdb), apply_gdb},
  }};
  for (const auto& [texts, apply] : steps) {
    for (const auto& text : texts) {
      if (auto rc = apply(text, config); !rc) {
        return rc;
      }
    }
  }
  return check_vhost_user_memory(config);
}

// CLI11 indents the lines of a description but does not wrap them: wrap at `width`, keeping the '\n's given.
std::string wrap(std::string_view text, std::size_t width = 80) {
  std::string out;
  std::size_t column = 0;
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t end = std::min(text.find_first_of(" \n", start), text.size());
    const std::string_view word = text.substr(start, end - start);
    if (column > 0) {
      const bool fits = column + 1 + word.size() <= width;
      out += fits ? ' ' : '\n';
      column = fits ? column + 1 : 0;
    }
    out += word;
    column += word.size();
    if (end < text.size() && text[end] == '\n') {
      out += '\n';
      column = 0;
    }
    start = end + 1;
  }
  return out;
}

// The options as CLI11 sees them: the syntax in the help's first column, what it does and an example in the second.
void describe_options(CLI::App& app, VmConfig& config, RawOptions& raw) {
  // Short syntaxes share a line with their description; longer ones get a line of their own above it.
  app.get_formatter()->column_width(30);
  const auto add = [&app](const std::string& name, auto& storage, const std::string& syntax,
                          std::string_view description) {
    return app.add_option(name, storage, wrap(description))->type_name(syntax);
  };
  add("--kernel", config.kernel, "PATH",
      "The guest kernel: a bzImage (/boot/vmlinuz-*) or an uncompressed ELF vmlinux. Required.\n"
      "e.g. --kernel /boot/vmlinuz-$(uname -r)");
  add("--initramfs", raw.initramfs, "PATH",
      "A cpio archive (compressed or not) the kernel unpacks as its first root file system.\n"
      "e.g. --initramfs initramfs.cpio.gz");
  add("--cmdline", config.cmdline, "TEXT",
      fmt::format("The kernel command line (the console is ttyS0). Default: \"{}\".\n"
                  "e.g. --cmdline \"console=ttyS0 quiet\"",
                  config.cmdline));
  add("--cpus", raw.cpus, "boot=N",
      fmt::format("vCPUs, all started at boot: 1 to {} (a bare N works too). Default: boot=1.\ne.g. --cpus boot=2",
                  boot::kMaxCpus));
  add("--memory", raw.memory, "size=SIZE[,shared=on|off][,hugepages=on|off]",
      "Guest RAM, 64M to 64G in whole 4 KiB pages, with a K, M or G suffix (a bare SIZE works too). shared=on backs "
      "it with a memfd, which vhost-user backends map; hugepages=on asks for huge pages. Default: size=512M.\n"
      "e.g. --memory size=1G,shared=on");
  add("--disk", raw.disks, "path=FILE[,readonly=on|off][,serial=ID]",
      "A virtio-blk disk on a raw image: /dev/vda, /dev/vdb, ... in order. readonly=on refuses writes; serial is the "
      "ID the guest reads (at most 20 bytes). Repeatable.\ne.g. --disk path=disk.img,readonly=on");
  add("--net", raw.nets, "tap=NAME[,mac=MAC][,ip=A.B.C.D][,mask=A.B.C.D]",
      "A virtio-net on a tap interface, created if missing (needs CAP_NET_ADMIN). mac is the guest's address; ip and "
      "mask (default 255.255.255.0) configure the host's side of the tap. Repeatable.\n"
      "e.g. --net tap=vmtap0,mac=52:54:00:12:34:56,ip=192.168.249.1,mask=255.255.255.0");
  add("--rng", raw.rng, "[src=PATH]",
      "A virtio-rng whose entropy comes from PATH (default /dev/urandom).\ne.g. --rng, or --rng src=/dev/hwrng")
      ->expected(0, 1);
  for (const auto& [kind, sockets] : {std::pair{"blk", &raw.vhost_user_blk}, std::pair{"rng", &raw.vhost_user_rng}}) {
    add(fmt::format("--vhost-user-{}", kind), *sockets, "socket=PATH",
        fmt::format("A virtio-{0} served by a vhost-user backend on the unix socket PATH (needs --memory "
                    "...,shared=on). Repeatable.\ne.g. --vhost-user-{0} socket=/tmp/{0}.sock",
                    kind));
  }
  add("--device", raw.devices, "path=SYSFS-DIR|BDF",
      "Pass a host PCI device bound to vfio-pci through with VFIO: its sysfs directory, or just its address. "
      "Repeatable.\ne.g. --device path=/sys/bus/pci/devices/0000:00:05.0, or --device 0000:00:05.0");
  add("--serial", raw.serial, "tty|off|file=PATH",
      "Where the guest's console (COM1, ttyS0) goes: this terminal (Ctrl-A x quits), nowhere, or appended to a file. "
      "Default: tty.\ne.g. --serial file=console.log");
  app.add_flag("--trace", config.trace, wrap("Print every KVM exit and the boot layout to stderr.\ne.g. --trace"));
  app.add_flag("--stats", config.stats,
               wrap("Print exit and device counters to stderr when the VM ends.\ne.g. --stats"));
  add("--dump-topology", raw.dump_topology, "FILE",
      "Write the VM's topology (vCPUs, buses, PCI devices, BARs, MSI-X routes) as Graphviz dot, at start and again "
      "at the end.\ne.g. --dump-topology vm.dot, then dot -Tsvg vm.dot -o vm.svg");
  add("--gdb", raw.gdb, "tcp:PORT|unix:PATH",
      "Serve gdb's remote protocol there (tcp:PORT listens on 127.0.0.1). The guest waits before its first "
      "instruction until gdb continues; gdb's threads are the vCPUs.\ne.g. --gdb tcp:1234, then gdb -ex 'target "
      "remote :1234' vmlinux");
  app.set_version_flag("--version", fmt::format("{} (vmmlab) {}", kProgram, VMMLAB_VERSION),
                       "Print final-vmm's version and exit");
  app.footer(
      "Example:\n  final-vmm --kernel bzImage --initramfs initramfs.cpio.gz --cpus boot=2 --memory size=512M --rng "
      "\\\n            --disk path=disk.img --cmdline \"console=ttyS0 reboot=k panic=1\"\n\n"
      "Exit status: 0 when the guest reboots or the host stops it (SIGINT, SIGTERM, Ctrl-A x),\n1 on a guest panic or "
      "a VMM error, 2 for a bad command line.");
}

}  // namespace

Result<std::uint64_t> parse_size(std::string_view text) {
  constexpr std::string_view kSuffixes = "kmg";  // 2^10, 2^20, 2^30
  std::string_view digits = text;
  unsigned shift = 0;
  if (const auto suffix =
          text.empty() ? std::string_view::npos
                       : kSuffixes.find(static_cast<char>(std::tolower(static_cast<unsigned char>(text.back()))));
      suffix != std::string_view::npos) {
    shift = 10 * static_cast<unsigned>(suffix + 1);
    digits.remove_suffix(1);
  }
  const auto value = whole_number<std::uint64_t>(digits);
  if (!value && value.error() != std::errc::result_out_of_range) {
    return logic_error(text, "not a size (use e.g. 512M or 2G)");
  }
  if (!value || *value > (UINT64_MAX >> shift)) {
    return logic_error(text, "too large (more than 64 bits of bytes)");
  }
  return *value << shift;
}

Result<std::map<std::string, std::string>> parse_key_values(std::string_view text,
                                                            std::span<const std::string_view> allowed_keys,
                                                            std::string_view option) {
  std::map<std::string, std::string> values;
  for (std::size_t start = 0; start <= text.size();) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view item = text.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) {
      return refuse(option, text, "an empty item (expected key=value[,key=value...])");
    }
    const auto equals = item.find('=');
    if (equals == std::string_view::npos) {
      return refuse(option, item, "expected key=value");
    }
    const std::string key(item.substr(0, equals));
    if (std::ranges::find(allowed_keys, key) == allowed_keys.end()) {
      return refuse(option, item, fmt::format("unknown key '{}' (known: {})", key, fmt::join(allowed_keys, ", ")));
    }
    if (!values.emplace(key, item.substr(equals + 1)).second) {
      return refuse(option, item, fmt::format("'{}' given twice", key));
    }
  }
  return values;
}

CliOutcome parse_command_line(int argc, const char* const* argv) {
  CLI::App app{
      wrap("final-vmm: vmmlab's whole VMM. Boots a Linux kernel (bzImage or vmlinux) on KVM with a 16550 console, PCI, "
           "virtio, vhost-user and VFIO devices. Options follow Cloud Hypervisor's key=value[,key=value...] style.",
           100),
      std::string(kProgram)};
  VmConfig config;
  RawOptions raw;
  describe_options(app, config, raw);
  // One line for CLI11's own errors too, in final-vmm's voice; app.exit() writes it instead of printing.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return fmt::format("{}: {} (final-vmm --help lists the options)\n", kProgram, e.what());
  });

  CliOutcome outcome;
  try {
    // CLI11 wants the arguments without the program's name, last first.
    std::vector<std::string> args;
    for (int i = argc - 1; i > 0; --i) {
      args.emplace_back(argv[i]);
    }
    app.parse(std::move(args));
  } catch (const CLI::ParseError& e) {
    std::ostringstream out;
    std::ostringstream err;
    const bool fine = app.exit(e, out, err) == 0;  // --help and --version "fail" with status 0
    outcome.exit_code = fine ? 0 : kCliUsageError;
    outcome.output = fine ? out.str() : err.str();
    return outcome;
  }
  if (auto rc = apply_all(config.kernel, raw, config); !rc) {
    outcome.exit_code = kCliUsageError;
    outcome.output = fmt::format("{}: {}\n", kProgram, rc.error().message());
    return outcome;
  }
  outcome.config = std::move(config);
  return outcome;
}

}  // namespace vmm::machine
