// final-vmm's command line: every option into its VmConfig field, the bare forms, the defaults, and each kind of
// mistake refused with status 2 and one line that names the option and what was typed.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/machine/cli.hpp"
#include "vmm/testing/result.hpp"

namespace {

using ::testing::AllOf;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;
using namespace vmm::machine;  // the API under test and VmConfig
using vmm::testing::error_of;

// --kernel must name a readable file; the test binary itself is one on every host and in the rig.
constexpr std::string_view kKernel = "/proc/self/exe";

CliOutcome run(std::vector<std::string> args) {
  args.insert(args.begin(), "final-vmm");
  std::vector<const char*> argv;
  for (const auto& arg : args) {
    argv.push_back(arg.c_str());
  }
  return parse_command_line(static_cast<int>(argv.size()), argv.data());
}

// `args` after --kernel and a readable file.
std::vector<std::string> kernel_and(std::vector<std::string> args) {
  args.insert(args.begin(), {"--kernel", std::string(kKernel)});
  return args;
}

CliOutcome run_with_kernel(std::vector<std::string> args) {
  return run(kernel_and(std::move(args)));
}

TEST(FinalCli, OnlyAKernelGivesTheDefaults) {
  const auto outcome = run_with_kernel({});
  ASSERT_TRUE(outcome.config) << outcome.output;
  EXPECT_EQ(outcome.exit_code, 0);
  EXPECT_EQ(outcome.output, "");
  const VmConfig& config = *outcome.config;
  const VmConfig defaults;
  EXPECT_EQ(config.kernel, kKernel);
  EXPECT_FALSE(config.initramfs);
  EXPECT_EQ(config.cmdline, defaults.cmdline);
  EXPECT_EQ(config.cpus, 1u);
  EXPECT_EQ(config.memory.size, 512ull << 20);
  EXPECT_FALSE(config.memory.shared);
  EXPECT_FALSE(config.memory.hugepages);
  EXPECT_TRUE(config.disks.empty());
  EXPECT_TRUE(config.nets.empty());
  EXPECT_FALSE(config.rng);
  EXPECT_TRUE(config.vhost_user_blk.empty());
  EXPECT_TRUE(config.vhost_user_rng.empty());
  EXPECT_TRUE(config.vfio.empty());
  EXPECT_EQ(config.serial.mode, SerialConfig::Mode::Tty);
  EXPECT_FALSE(config.trace);
  EXPECT_FALSE(config.stats);
  EXPECT_FALSE(config.dump_topology);
}

// --- Accepted command lines: each row's arguments (after --kernel) and what the config must then hold. -------------

struct Accepted {
  std::string name;
  std::vector<std::string> args;
  std::function<void(const VmConfig&)> check;
};

const Accepted accepted_command_lines[] = {
    {"initramfs", {"--initramfs", std::string(kKernel)}, [](const VmConfig& c) { EXPECT_EQ(c.initramfs, kKernel); }},
    {"cmdline",
     {"--cmdline", "console=ttyS0 quiet"},
     [](const VmConfig& c) { EXPECT_EQ(c.cmdline, "console=ttyS0 quiet"); }},
    {"cpus boot=N", {"--cpus", "boot=4"}, [](const VmConfig& c) { EXPECT_EQ(c.cpus, 4u); }},
    {"cpus bare N", {"--cpus", "3"}, [](const VmConfig& c) { EXPECT_EQ(c.cpus, 3u); }},
    {"cpus the most", {"--cpus=boot=32"}, [](const VmConfig& c) { EXPECT_EQ(c.cpus, 32u); }},
    {"memory size", {"--memory", "size=1G"}, [](const VmConfig& c) { EXPECT_EQ(c.memory.size, 1ull << 30); }},
    {"memory bare size", {"--memory", "2048M"}, [](const VmConfig& c) { EXPECT_EQ(c.memory.size, 2ull << 30); }},
    {"memory in K, the least",
     {"--memory", "size=65536k"},
     [](const VmConfig& c) { EXPECT_EQ(c.memory.size, 64ull << 20); }},
    {"memory the most", {"--memory", "size=64G"}, [](const VmConfig& c) { EXPECT_EQ(c.memory.size, 64ull << 30); }},
    {"memory shared and hugepages",
     {"--memory", "size=1G,shared=on,hugepages=on"},
     [](const VmConfig& c) {
       EXPECT_EQ(c.memory.size, 1ull << 30);
       EXPECT_TRUE(c.memory.shared);
       EXPECT_TRUE(c.memory.hugepages);
     }},
    {"memory shared only keeps the default size",
     {"--memory", "shared=true,hugepages=off"},
     [](const VmConfig& c) {
       EXPECT_EQ(c.memory.size, 512ull << 20);
       EXPECT_TRUE(c.memory.shared);
       EXPECT_FALSE(c.memory.hugepages);
     }},
    {"disk",
     {"--disk", "path=a.img"},
     [](const VmConfig& c) {
       ASSERT_EQ(c.disks.size(), 1u);
       EXPECT_EQ(c.disks[0].path, "a.img");
       EXPECT_FALSE(c.disks[0].readonly);
       EXPECT_EQ(c.disks[0].serial, "");
     }},
    {"disks in order, readonly and a 20-byte serial",
     {"--disk", "path=a.img", "--disk", "path=b.img,readonly=on,serial=12345678901234567890", "path=c.img"},
     [](const VmConfig& c) {
       ASSERT_EQ(c.disks.size(), 3u);
       EXPECT_EQ(c.disks[0].path, "a.img");
       EXPECT_EQ(c.disks[1].path, "b.img");
       EXPECT_TRUE(c.disks[1].readonly);
       EXPECT_EQ(c.disks[1].serial, "12345678901234567890");
       EXPECT_EQ(c.disks[2].path, "c.img");
     }},
    {"net tap only",
     {"--net", "tap=vmtap0"},
     [](const VmConfig& c) {
       ASSERT_EQ(c.nets.size(), 1u);
       EXPECT_EQ(c.nets[0].tap, "vmtap0");
       EXPECT_FALSE(c.nets[0].mac);
       EXPECT_FALSE(c.nets[0].ip);
       EXPECT_FALSE(c.nets[0].mask);
     }},
    {"net every key, and a second net",
     {"--net", "tap=abcdefghijklmno,mac=52:54:00:AB:cd:EF,ip=192.168.249.1,mask=255.255.255.0", "--net",
      "tap=t1,ip=10.0.0.1"},
     [](const VmConfig& c) {
       ASSERT_EQ(c.nets.size(), 2u);
       EXPECT_EQ(c.nets[0].tap, "abcdefghijklmno");
       EXPECT_EQ(c.nets[0].mac, (std::array<std::uint8_t, 6>{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}));
       EXPECT_EQ(c.nets[0].ip, "192.168.249.1");
       EXPECT_EQ(c.nets[0].mask, "255.255.255.0");
       EXPECT_EQ(c.nets[1].ip, "10.0.0.1");
       EXPECT_EQ(c.nets[1].mask, "255.255.255.0");  // the default, written out with ip
     }},
    {"rng bare, not swallowing the next option",
     {"--rng", "--cpus", "2"},
     [](const VmConfig& c) {
       ASSERT_TRUE(c.rng);
       EXPECT_EQ(c.rng->source, "/dev/urandom");
       EXPECT_EQ(c.cpus, 2u);
     }},
    {"rng src",
     {"--rng", "src=/dev/hwrng"},
     [](const VmConfig& c) { EXPECT_EQ(c.rng.value_or(RngConfig{}).source, "/dev/hwrng"); }},
    {"vhost-user devices with shared memory",
     {"--memory", "size=512M,shared=on", "--vhost-user-blk", "socket=/tmp/blk.sock", "--vhost-user-blk",
      "socket=/" + std::string(106, 's'), "--vhost-user-rng", "socket=/tmp/rng.sock"},
     [](const VmConfig& c) {
       ASSERT_EQ(c.vhost_user_blk.size(), 2u);
       EXPECT_EQ(c.vhost_user_blk[0].socket, "/tmp/blk.sock");
       EXPECT_EQ(c.vhost_user_blk[1].socket.size(), 107u);
       ASSERT_EQ(c.vhost_user_rng.size(), 1u);
       EXPECT_EQ(c.vhost_user_rng[0].socket, "/tmp/rng.sock");
     }},
    {"device: sysfs paths kept, bare addresses completed and lower-cased",
     {"--device", "path=/sys/bus/pci/devices/0000:00:05.0", "--device", "0000:0A:1F.7", "--device", "00:03.0",
      "--device", "path=/sys/devices/pci0000:00/0000:00:04.1"},
     [](const VmConfig& c) {
       ASSERT_EQ(c.vfio.size(), 4u);
       EXPECT_EQ(c.vfio[0].path, "/sys/bus/pci/devices/0000:00:05.0");
       EXPECT_EQ(c.vfio[1].path, "/sys/bus/pci/devices/0000:0a:1f.7");
       EXPECT_EQ(c.vfio[2].path, "/sys/bus/pci/devices/0000:00:03.0");
       EXPECT_EQ(c.vfio[3].path, "/sys/devices/pci0000:00/0000:00:04.1");
     }},
    {"serial off", {"--serial", "off"}, [](const VmConfig& c) { EXPECT_EQ(c.serial.mode, SerialConfig::Mode::Off); }},
    {"serial tty", {"--serial", "tty"}, [](const VmConfig& c) { EXPECT_EQ(c.serial.mode, SerialConfig::Mode::Tty); }},
    {"serial file",
     {"--serial", "file=console.log"},
     [](const VmConfig& c) {
       EXPECT_EQ(c.serial.mode, SerialConfig::Mode::File);
       EXPECT_EQ(c.serial.path, "console.log");
     }},
    {"trace and stats",
     {"--trace", "--stats"},
     [](const VmConfig& c) {
       EXPECT_TRUE(c.trace);
       EXPECT_TRUE(c.stats);
     }},
    {"dump-topology FILE",
     {"--dump-topology", "vm.dot"},
     [](const VmConfig& c) { EXPECT_EQ(c.dump_topology, "vm.dot"); }},
    {"dump-topology=FILE",
     {"--dump-topology=vm2.dot"},
     [](const VmConfig& c) { EXPECT_EQ(c.dump_topology, "vm2.dot"); }},
};

TEST(FinalCli, EveryOptionReachesItsField) {
  for (const auto& row : accepted_command_lines) {
    SCOPED_TRACE(row.name);
    const auto outcome = run_with_kernel(row.args);
    ASSERT_TRUE(outcome.config) << outcome.output;
    EXPECT_EQ(outcome.exit_code, 0);
    EXPECT_EQ(outcome.config->kernel, kKernel);
    row.check(*outcome.config);
  }
}

// --- Refused command lines: status 2, no config, one line naming the option and the text at fault. ---------------

struct Refused {
  std::vector<std::string> args;  // the whole command line after the program's name
  std::string option;             // the option the line must name
  std::string offending;          // the text it must quote
  std::string why;                // and a part of the reason
};

const Refused refused_command_lines[] = {
    // The kernel and the initramfs.
    {{"--cpus", "2"}, "--kernel", "", "a kernel is required"},
    {{"--kernel", "/nonexistent/vmlinuz"}, "--kernel", "/nonexistent/vmlinuz", "cannot read it (ENOENT)"},
    {{"--kernel", "/"}, "--kernel", "/", "a directory"},
    {kernel_and({"--initramfs", "/nonexistent/initrd"}), "--initramfs", "/nonexistent/initrd", "ENOENT"},
    // CLI11's own refusals.
    {kernel_and({"--bogus"}), "--bogus", "--bogus", "not expected"},
    {kernel_and({"stray"}), "stray", "stray", "not expected"},
    {kernel_and({"--cpus"}), "--cpus", "--cpus", "missing"},
    {kernel_and({"--cpus", "2", "--cpus", "4"}), "--cpus", "--cpus", "received 2"},
    // key=value syntax, shown through --cpus, --memory and --disk.
    {kernel_and({"--cpus", "boot=2,max=4"}), "--cpus", "max=4", "unknown key 'max' (known: boot)"},
    {kernel_and({"--cpus", "boot=1,boot=2"}), "--cpus", "boot=2", "'boot' given twice"},
    {kernel_and({"--memory", "size=1G,,shared=on"}), "--memory", "size=1G,,shared=on", "an empty item"},
    {kernel_and({"--memory", "size=1G,"}), "--memory", "size=1G,", "an empty item"},
    {kernel_and({"--memory", "size=1G,shared"}), "--memory", "shared", "expected key=value"},
    {kernel_and({"--disk", "disk.img"}), "--disk", "disk.img", "expected key=value"},
    {kernel_and({"--disk", "path=a,speed=9"}), "--disk", "speed=9",
     "unknown key 'speed' (known: path, readonly, serial)"},
    // Numbers and sizes.
    {kernel_and({"--cpus", "boot=0"}), "--cpus", "boot=0", "from 1 to 32"},
    {kernel_and({"--cpus", "33"}), "--cpus", "boot=33", "from 1 to 32"},
    {kernel_and({"--cpus", "boot=two"}), "--cpus", "boot=two", "from 1 to 32"},
    {kernel_and({"--cpus", "boot=-1"}), "--cpus", "boot=-1", "from 1 to 32"},
    {kernel_and({"--memory", "size=12Q"}), "--memory", "size=12Q", "not a size (use e.g. 512M or 2G)"},
    {kernel_and({"--memory", "1.5G"}), "--memory", "size=1.5G", "not a size"},
    {kernel_and({"--memory", "size="}), "--memory", "size=", "not a size"},
    {kernel_and({"--memory", "size=99999999999999999999G"}), "--memory", "size=99999999999999999999G", "too large"},
    {kernel_and({"--memory", "size=32M"}), "--memory", "size=32M", "out of range (64M to 64G)"},
    {kernel_and({"--memory", "0"}), "--memory", "size=0", "out of range"},
    {kernel_and({"--memory", "size=65G"}), "--memory", "size=65G", "out of range"},
    {kernel_and({"--memory", "size=65537K"}), "--memory", "size=65537K", "4 KiB pages"},
    {kernel_and({"--memory", "size=1G,shared=yes"}), "--memory", "shared=yes", "use on or off"},
    // --disk.
    {kernel_and({"--disk", "readonly=on"}), "--disk", "readonly=on", "path=FILE is required"},
    {kernel_and({"--disk", "path="}), "--disk", "path=", "path=FILE is required"},
    {kernel_and({"--disk", "path=a,readonly=maybe"}), "--disk", "readonly=maybe", "use on or off"},
    {kernel_and({"--disk", "path=a,serial=123456789012345678901"}), "--disk", "serial=123456789012345678901",
     "20 bytes"},
    // --net.
    {kernel_and({"--net", "mac=52:54:00:12:34:56"}), "--net", "mac=52:54:00:12:34:56", "tap=NAME is required"},
    {kernel_and({"--net", "tap=abcdefghijklmnop"}), "--net", "tap=abcdefghijklmnop", "not an interface name"},
    {kernel_and({"--net", "tap=a/b"}), "--net", "tap=a/b", "not an interface name"},
    {kernel_and({"--net", "tap=t0,mac=01:00:5e:00:00:01"}), "--net", "mac=01:00:5e:00:00:01", "multicast"},
    {kernel_and({"--net", "tap=t0,mac=00:00:00:00:00:00"}), "--net", "mac=00:00:00:00:00:00", "all zeros"},
    {kernel_and({"--net", "tap=t0,mac=52:54:00:12:34"}), "--net", "mac=52:54:00:12:34", "not a MAC address"},
    {kernel_and({"--net", "tap=t0,mac=52-54-00-12-34-56"}), "--net", "mac=52-54-00-12-34-56", "not a MAC address"},
    {kernel_and({"--net", "tap=t0,mac=52:54:00:12:34:5g"}), "--net", "mac=52:54:00:12:34:5g", "not a MAC address"},
    {kernel_and({"--net", "tap=t0,mac=52:54:00:12:+3:56"}), "--net", "mac=52:54:00:12:+3:56", "not a MAC address"},
    {kernel_and({"--net", "tap=t0,ip=192.168.1.256"}), "--net", "ip=192.168.1.256", "not an IPv4 address"},
    {kernel_and({"--net", "tap=t0,ip=10.0.1"}), "--net", "ip=10.0.1", "not an IPv4 address"},
    {kernel_and({"--net", "tap=t0,ip=10.0.0.1,mask=255.0.255.0"}), "--net", "mask=255.0.255.0", "not a netmask"},
    {kernel_and({"--net", "tap=t0,ip=10.0.0.1,mask=24"}), "--net", "mask=24", "not a netmask"},
    {kernel_and({"--net", "tap=t0,mask=255.255.255.0"}), "--net", "mask=255.255.255.0", "needs ip="},
    // --rng.
    {kernel_and({"--rng", "src="}), "--rng", "src=", "src=PATH is required"},
    {kernel_and({"--rng", "/dev/random"}), "--rng", "/dev/random", "expected key=value"},
    {kernel_and({"--rng", "source=/dev/random"}), "--rng", "source=/dev/random", "unknown key 'source' (known: src)"},
    // vhost-user.
    {kernel_and({"--vhost-user-blk", "socket=/tmp/blk.sock"}), "--vhost-user-blk", "socket=/tmp/blk.sock",
     "needs --memory ...,shared=on (the backend maps guest RAM)"},
    {kernel_and({"--memory", "shared=off", "--vhost-user-rng", "socket=/tmp/rng.sock"}), "--vhost-user-rng",
     "socket=/tmp/rng.sock", "shared=on"},
    {kernel_and({"--memory", "shared=on", "--vhost-user-blk", "socket=/" + std::string(107, 'x')}), "--vhost-user-blk",
     "socket=/" + std::string(107, 'x'), "107 bytes"},
    {kernel_and({"--memory", "shared=on", "--vhost-user-rng", "socket="}), "--vhost-user-rng",
     "socket=", "is required"},
    {kernel_and({"--memory", "shared=on", "--vhost-user-blk", "path=/tmp/x"}), "--vhost-user-blk", "path=/tmp/x",
     "unknown key 'path' (known: socket)"},
    // --device.
    {kernel_and({"--device", "0000:00:20.0"}), "--device", "path=0000:00:20.0", "not a PCI address"},
    {kernel_and({"--device", "0000:00:05.8"}), "--device", "path=0000:00:05.8", "not a PCI address"},
    {kernel_and({"--device", "eth0"}), "--device", "path=eth0", "not a PCI address"},
    {kernel_and({"--device", "path=/sys/bus/pci/devices/"}), "--device", "path=/sys/bus/pci/devices/",
     "not a PCI address"},
    {kernel_and({"--device", "bdf=0000:00:05.0"}), "--device", "bdf=0000:00:05.0", "unknown key 'bdf' (known: path)"},
    // --serial and --dump-topology.
    {kernel_and({"--serial", "pty"}), "--serial", "pty", "use tty, off or file=PATH"},
    {kernel_and({"--serial", "file="}), "--serial", "file=", "file=PATH is required"},
    {kernel_and({"--serial", "pipe=x"}), "--serial", "pipe=x", "unknown key 'pipe' (known: file)"},
    {kernel_and({"--dump-topology", ""}), "--dump-topology", "\"\"", "needs a file name"},
    {kernel_and({"--dump-topology="}), "--dump-topology", "--dump-topology", "missing"},
};

TEST(FinalCli, EveryMistakeIsOneLineNamingTheOptionAndTheValue) {
  for (const auto& row : refused_command_lines) {
    SCOPED_TRACE(::testing::PrintToString(row.args));
    const auto outcome = run(row.args);
    EXPECT_FALSE(outcome.config);
    EXPECT_EQ(outcome.exit_code, kCliUsageError);
    EXPECT_THAT(outcome.output, AllOf(StartsWith("final-vmm: "), HasSubstr(row.option), HasSubstr(row.offending),
                                      HasSubstr(row.why), EndsWith("\n")));
    EXPECT_EQ(outcome.output.find('\n'), outcome.output.size() - 1) << outcome.output;
  }
}

TEST(FinalCli, TheLineHasTheOptionValueWhyFormat) {
  EXPECT_EQ(run_with_kernel({"--memory", "size=12Q"}).output,
            "final-vmm: --memory: size=12Q: not a size (use e.g. 512M or 2G)\n");
  EXPECT_EQ(run_with_kernel({"--disk", "path=a,speed=9"}).output,
            "final-vmm: --disk: speed=9: unknown key 'speed' (known: path, readonly, serial)\n");
}

TEST(FinalCli, NoArgumentsAtAllAsksForAKernel) {
  const char* const argv[] = {"final-vmm"};
  const auto outcome = parse_command_line(1, argv);
  EXPECT_EQ(outcome.exit_code, kCliUsageError);
  EXPECT_THAT(outcome.output, HasSubstr("--kernel"));
  EXPECT_EQ(parse_command_line(0, argv).exit_code, kCliUsageError);  // not even argv[0]: the same, no crash
}

TEST(FinalCli, HelpExplainsEveryOptionWithAnExample) {
  const auto outcome = run({"--help"});  // no --kernel needed
  EXPECT_FALSE(outcome.config);
  EXPECT_EQ(outcome.exit_code, 0);
  for (const std::string option :
       {"--kernel", "--initramfs", "--cmdline", "--cpus", "--memory", "--disk", "--net", "--rng", "--vhost-user-blk",
        "--vhost-user-rng", "--device", "--serial", "--trace", "--stats", "--dump-topology", "--version", "--help"}) {
    EXPECT_THAT(outcome.output, HasSubstr(option + " ")) << option;
    if (option != "--version" && option != "--help") {
      EXPECT_THAT(outcome.output, HasSubstr("e.g. " + option)) << option;
    }
  }
  EXPECT_THAT(outcome.output, HasSubstr("size=SIZE[,shared=on|off][,hugepages=on|off]"));
  EXPECT_THAT(outcome.output, HasSubstr("Exit status"));
  EXPECT_EQ(run({"--kernel", std::string(kKernel), "--memory", "size=12Q", "--help"}).exit_code, 0);  // help wins
}

TEST(FinalCli, VersionNamesTheProgramAndTheProjectVersion) {
  const auto outcome = run({"--version"});
  EXPECT_FALSE(outcome.config);
  EXPECT_EQ(outcome.exit_code, 0);
  EXPECT_THAT(outcome.output, MatchesRegex("final-vmm \\(vmmlab\\) [0-9]+\\.[0-9]+\\.[0-9]+\n"));
}

// --- parse_size and parse_key_values on their own. ------------------------------------------------------------------

TEST(FinalCliParseSize, AcceptsWholeNumbersWithBinarySuffixes) {
  const std::pair<std::string_view, std::uint64_t> cases[] = {
      {"0", 0},
      {"65536", 65536},
      {"2048K", 2048ull << 10},
      {"4k", 4096},
      {"512M", 512ull << 20},
      {"512m", 512ull << 20},
      {"1G", 1ull << 30},
      {"1g", 1ull << 30},
      {"0G", 0},
      {"17179869183G", 17179869183ull << 30},  // the largest number of GiB that fits 64 bits
      {"18446744073709551615", UINT64_MAX},
  };
  for (const auto& [text, bytes] : cases) {
    auto size = parse_size(text);
    ASSERT_TRUE(size) << text << ": " << size.error().message();
    EXPECT_EQ(*size, bytes) << text;
  }
}

TEST(FinalCliParseSize, RefusesWhatIsNotAWholeSize) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"", "not a size"},
      {"G", "not a size"},
      {"1.5G", "not a size"},
      {"12Q", "not a size"},
      {"-1", "not a size"},
      {"+1", "not a size"},
      {" 1", "not a size"},
      {"1 G", "not a size"},
      {"1GB", "not a size"},
      {"1T", "not a size"},
      {"0x10", "not a size"},
      {"99999999999999999999G", "too large"},
      {"17179869184G", "too large"},  // fits before the shift, not after
      {"18446744073709551616", "too large"},
  };
  for (const auto& [text, why] : cases) {
    const auto message = error_of(parse_size(text));
    EXPECT_THAT(message, HasSubstr(why)) << "'" << text << "'";
    EXPECT_THAT(message, StartsWith(std::string(text) + ": ")) << "'" << text << "'";
  }
}

TEST(FinalCliKeyValues, SplitsItemsAtCommasAndKeysAtTheFirstEquals) {
  constexpr std::array<std::string_view, 3> kKeys{"path", "serial", "readonly"};
  auto values = parse_key_values("path=a=b.img,serial=,readonly=on", kKeys, "--disk");
  ASSERT_TRUE(values) << values.error().message();
  EXPECT_EQ(values->size(), 3u);
  EXPECT_EQ(values->at("path"), "a=b.img");
  EXPECT_EQ(values->at("serial"), "");
  EXPECT_EQ(values->at("readonly"), "on");
}

TEST(FinalCliKeyValues, EachErrorNamesTheOptionAndTheItem) {
  constexpr std::array<std::string_view, 2> kKeys{"tap", "mac"};
  EXPECT_EQ(error_of(parse_key_values("tap=a,ip=1", kKeys, "--net")),
            "--net: ip=1: unknown key 'ip' (known: tap, mac)");
  EXPECT_EQ(error_of(parse_key_values("tap=a,tap=b", kKeys, "--net")), "--net: tap=b: 'tap' given twice");
  EXPECT_EQ(error_of(parse_key_values("tap", kKeys, "--net")), "--net: tap: expected key=value");
  EXPECT_THAT(error_of(parse_key_values("", kKeys, "--net")), StartsWith("--net: \"\": an empty item"));
  EXPECT_THAT(error_of(parse_key_values("=x", kKeys, "--net")), HasSubstr("unknown key ''"));
}

}  // namespace
