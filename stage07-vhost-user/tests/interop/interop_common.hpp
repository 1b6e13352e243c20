#pragma once
// Test support for the interop tests: private temporary directories, the boot disk built from mbr.bin, the real peers
// (QEMU, qemu-storage-daemon, vmmlab's daemons) started as children with their stderr captured and stopped with
// timeouts, and lookups that fail (never skip) when a Debian package is missing.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "child_process.hpp"
#include "vmm/error.hpp"

namespace vmm::stage07::interop {

/// The status QEMU exits with when mbr.S ends well: it writes 0x31 to isa-debug-exit, QEMU exits with (C << 1) | 1.
inline constexpr int kQemuStatusMbrOk = (0x31 << 1) | 1;
/// ... and when its INT 13h read of sector 1 or write of sector 2 failed (0x22, 0x23 in mbr.S).
inline constexpr int kQemuStatusMbrReadFailed = (0x22 << 1) | 1;
inline constexpr int kQemuStatusMbrWriteFailed = (0x23 << 1) | 1;
/// What `timeout` exits with when the time ran out (QEMU hung: typically a vhost-user handshake that never ends).
inline constexpr int kTimeoutExpired = 124;

/// The disk images: 1 MiB of raw sectors.
inline constexpr std::size_t kSectorBytes = 512;
inline constexpr std::size_t kDiskBytes = 1 << 20;

/// How long a peer gets to start, to finish its work, and to stop after SIGTERM. Generous: the CI machine has two
/// loaded cores; nothing here measures time.
inline constexpr std::chrono::seconds kStartTimeout{20};
inline constexpr std::chrono::seconds kRunTimeout{90};
inline constexpr std::chrono::seconds kStopTimeout{20};
/// The limit QEMU itself runs under (`timeout -k 5 60`): QEMU can hang in a handshake and ignore SIGTERM.
inline constexpr std::string_view kQemuTimeLimit = "60";

/// A private directory under /tmp (short: unix socket paths must stay under 108 bytes), removed with its contents.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/vmmlab-io-XXXXXX";
    if (::mkdtemp(pattern) != nullptr) {
      path_ = pattern;
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  /// Empty when mkdtemp failed.
  [[nodiscard]] const std::string& path() const { return path_; }
  /// `name` inside the directory.
  [[nodiscard]] std::string file(std::string_view name) const { return fmt::format("{}/{}", path_, name); }

 private:
  std::string path_;
};

/// `name` looked up in PATH the way posix_spawnp does; nullopt if it is not there.
inline std::optional<std::string> find_in_path(std::string_view name) {
  const char* path = ::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const auto candidate = fmt::format("{}/{}", dir.empty() ? "." : dir, name);
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return std::nullopt;
}

/// The path of a program from a Debian package, or a test failure that says which package to install. Use with
/// ASSERT_TRUE: these tests run in CI, where a missing peer must fail, not skip.
inline ::testing::AssertionResult find_peer(std::string_view name, std::string_view package, std::string& path) {
  auto found = find_in_path(name);
  if (!found) {
    return ::testing::AssertionFailure() << name << " is not in PATH: the interop tests need Debian's " << package
                                         << " package (tools/install-deps installs it)";
  }
  path = *found;
  return ::testing::AssertionSuccess();
}

/// A peer process: a `ChildProcess` whose stderr goes into the same pipe as its stdout (`sh -c 'exec "$@" 2>&1'`),
/// so the tests see the daemons' --trace-vhost-user lines and QEMU's errors. Stopped with SIGTERM (SIGKILL after
/// `kStopTimeout`) when it goes away: SIGKILL alone would orphan the QEMU that `timeout` runs.
class Peer {
 public:
  Peer() = default;
  Peer(Peer&&) noexcept = default;
  Peer& operator=(Peer&&) noexcept = default;
  ~Peer() { stop(); }

  /// Starts `argv`. The test fails if it cannot be spawned.
  [[nodiscard]] static Result<Peer> start(const std::vector<std::string>& argv) {
    std::vector<std::string> wrapped{"/bin/sh", "-c", "exec \"$@\" 2>&1", "sh"};
    wrapped.insert(wrapped.end(), argv.begin(), argv.end());
    auto child = ChildProcess::spawn(wrapped);
    if (!child) {
      return std::unexpected(child.error());
    }
    Peer peer;
    peer.process_.emplace(std::move(*child));
    peer.command_ = fmt::format("{}", fmt::join(argv, " "));
    return peer;
  }

  /// The process (its output, wait, terminate...).
  [[nodiscard]] ChildProcess& process() { return *process_; }
  /// Everything it wrote to stdout and stderr so far.
  [[nodiscard]] const std::string& output() { return process_->output(); }
  /// The command line, for messages.
  [[nodiscard]] const std::string& command() const { return command_; }
  /// Waits up to `timeout` for it to exit.
  [[nodiscard]] Result<ExitStatus> wait(std::chrono::milliseconds timeout) { return process_->wait(timeout); }
  /// SIGTERM, then SIGKILL after kStopTimeout (idempotent: an exited peer just reports its status).
  Result<ExitStatus> stop() {
    if (!process_ || process_->pid() == 0) {
      return logic_error("Peer::stop", "no process");
    }
    return process_->terminate(kStopTimeout);
  }

 private:
  std::optional<ChildProcess> process_;
  std::string command_;
};

/// Reads a whole file (empty if it cannot be read: the assertions on the content then say what is missing).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// A fresh marker line for sector 1, different for every run, so that finding it in the guest's output proves the
/// sector was read during this run.
inline std::string fresh_marker(std::string_view what) {
  std::random_device random;
  return fmt::format("vmmlab-sector1: {} {:08x}{:08x}\n", what, random(), random());
}

/// Writes the 1 MiB boot disk: mbr.bin in sector 0, `marker` and a NUL in sector 1, zeros elsewhere.
inline ::testing::AssertionResult write_boot_disk(const std::string& path, std::string_view marker) {
  const auto mbr = read_file(VMMLAB_INTEROP_MBR);
  if (mbr.size() != kSectorBytes || static_cast<std::uint8_t>(mbr[510]) != 0x55 ||
      static_cast<std::uint8_t>(mbr[511]) != 0xaa) {
    return ::testing::AssertionFailure() << VMMLAB_INTEROP_MBR << " is not a 512-byte boot sector (" << mbr.size()
                                         << " bytes)";
  }
  if (marker.size() >= kSectorBytes) {
    return ::testing::AssertionFailure() << "the marker does not fit in a sector";
  }
  std::string image(kDiskBytes, '\0');
  image.replace(0, kSectorBytes, mbr);
  image.replace(kSectorBytes, marker.size(), marker);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(image.data(), static_cast<std::streamsize>(image.size()));
  out.close();
  if (!out) {
    return ::testing::AssertionFailure() << "cannot write " << path;
  }
  return ::testing::AssertionSuccess();
}

/// Sector `index` of the image at `path` (pread; empty if it cannot be read).
inline std::string read_sector(const std::string& path, std::uint64_t index) {
  std::string sector(kSectorBytes, '\0');
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return {};
  }
  const auto n = ::pread(fd, sector.data(), sector.size(), static_cast<off_t>(index * kSectorBytes));
  ::close(fd);
  return n == static_cast<ssize_t>(sector.size()) ? sector : std::string{};
}

/// Waits until `path` exists (a pid file, a socket): true, or false after `timeout`, or as soon as `peer` exits.
inline bool wait_for_file(const std::string& path, Peer& peer, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      return true;
    }
    if (peer.wait(std::chrono::milliseconds(20))) {
      return false;  // it exited: it will never create the file
    }
  }
  return false;
}

/// Prints `trace` when VMMLAB_INTEROP_SHOW_TRACE is set: the message sequences the peers exchanged, for the docs.
inline void show_trace(std::string_view title, std::string_view trace) {
  if (::getenv("VMMLAB_INTEROP_SHOW_TRACE") != nullptr) {
    std::cout << "----- " << title << " -----\n" << trace << (trace.ends_with('\n') ? "" : "\n");
  }
}

/// True when `text` contains `needle`.
inline bool contains(std::string_view text, std::string_view needle) {
  return text.find(needle) != std::string::npos;
}

}  // namespace vmm::stage07::interop
