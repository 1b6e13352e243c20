#pragma once
/// @file
/// @brief `VmConfig`: everything final-vmm's command line can ask for, as plain data. The CLI (`cli.hpp`) fills it;
///        the machine (`Vmm`) is built from it. Tests build one by hand.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vmm::machine {

/// @brief `--memory size=512M,shared=on,hugepages=on`.
struct MemoryConfig {
  std::uint64_t size = 512ull << 20;  ///< Guest RAM in bytes (a multiple of 4 KiB, at least 64 MiB).
  bool shared = false;                ///< Back RAM with a memfd (required by vhost-user devices).
  bool hugepages = false;             ///< Ask for huge pages (a hint; see memory::RegionOptions).
};

/// @brief `--disk path=disk.img,readonly=on`.
struct DiskConfig {
  std::string path;       ///< A raw image file (or block device).
  bool readonly = false;  ///< Offer VIRTIO_BLK_F_RO and refuse writes.
  std::string serial;     ///< The GET_ID answer; empty: "vmmlab-diskN".
};

/// @brief `--net tap=vmtap0,mac=52:54:00:12:34:56,ip=192.168.249.1,mask=255.255.255.0`.
struct NetConfig {
  std::string tap;                                 ///< The tap interface's name; created when it does not exist.
  std::optional<std::array<std::uint8_t, 6>> mac;  ///< The guest's MAC; default: a fixed locally administered one.
  std::optional<std::string> ip;    ///< The host side's IPv4 address, set on the tap (as Cloud Hypervisor does).
  std::optional<std::string> mask;  ///< Its netmask (default 255.255.255.0 when `ip` is given).
};

/// @brief `--rng src=/dev/urandom`.
struct RngConfig {
  std::string source = "/dev/urandom";  ///< Where the entropy comes from.
};

/// @brief `--vhost-user-blk socket=/tmp/blk.sock` and `--vhost-user-rng socket=/tmp/rng.sock`.
struct VhostUserConfig {
  std::string socket;  ///< The backend's unix socket.
};

/// @brief `--device path=/sys/bus/pci/devices/0000:00:05.0` (VFIO passthrough).
struct VfioConfig {
  std::string path;  ///< The device's sysfs directory (or just its BDF).
};

/// @brief Where the guest's 16550 console goes: `--serial tty|file=PATH|off`.
struct SerialConfig {
  /// @brief The three choices.
  enum class Mode {
    Tty,   ///< stdout, with stdin as the guest's keyboard (raw mode when it is a terminal).
    File,  ///< Appended to `path`; no input.
    Off,   ///< Discarded (the UART still exists: Linux probes it).
  };
  Mode mode = Mode::Tty;  ///< The choice.
  std::string path;       ///< For `Mode::File`.
};

/// @brief The whole machine.
struct VmConfig {
  std::string kernel;                    ///< bzImage or ELF vmlinux.
  std::optional<std::string> initramfs;  ///< A cpio archive (compressed or not) for the kernel to unpack.
  std::string cmdline = "console=ttyS0 reboot=k panic=1";  ///< The kernel command line.
  std::uint32_t cpus = 1;                                  ///< `--cpus boot=N`: vCPUs, all started at boot.
  MemoryConfig memory;                                     ///< `--memory`.
  std::vector<DiskConfig> disks;                           ///< `--disk`, repeatable: /dev/vda, /dev/vdb, ...
  std::vector<NetConfig> nets;                             ///< `--net`, repeatable.
  std::optional<RngConfig> rng;                            ///< `--rng`.
  std::vector<VhostUserConfig> vhost_user_blk;             ///< `--vhost-user-blk`, repeatable.
  std::vector<VhostUserConfig> vhost_user_rng;             ///< `--vhost-user-rng`, repeatable.
  std::vector<VfioConfig> vfio;                            ///< `--device`, repeatable.
  SerialConfig serial;                                     ///< `--serial`.
  bool trace = false;                                      ///< `--trace`: print every exit.
  bool stats = false;                                      ///< `--stats`: print exit and device statistics at the end.
  std::optional<std::string> dump_topology;                ///< `--dump-topology=FILE.dot`.
  /// `--gdb tcp:PORT|tcp:HOST:PORT|unix:PATH`: a gdb stub; every vCPU waits before its first instruction for gdb.
  std::optional<std::string> gdb;
};

}  // namespace vmm::machine
