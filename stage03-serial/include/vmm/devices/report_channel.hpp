#pragma once
/// @file
/// @brief `ReportChannel`: the guest runtime's report and exit ports (0xf0 and 0xf4) as a bus device.

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

#include "vmm/devices/bus_device.hpp"

namespace vmm::devices {

/// @brief Ports [0xf0, 0xf8) of the vmmlab guest runtime (vmmlab/boot_info.h): a 32-bit write at offset 0 reports a
///        value, at offset 4 the exit status. Reads return all-ones.
///
/// stage02 decoded these ports inside its run loop; from stage03 on they are a device like any other.
class ReportChannel final : public BusDevice {
 public:
  /// @brief The first port (VMMLAB_PORT_REPORT).
  static constexpr std::uint16_t kBase = 0xf0;
  /// @brief Ports covered: report at +0, exit at +4.
  static constexpr std::uint16_t kSize = 8;

  /// @brief `on_exit` runs (on the vCPU thread) when the guest writes its exit status.
  explicit ReportChannel(std::function<void(std::uint32_t status)> on_exit = {}) : on_exit_(std::move(on_exit)) {}

  void read(std::uint64_t offset, std::span<std::uint8_t> data) override;
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

  /// @brief The values reported so far, in order.
  [[nodiscard]] std::vector<std::uint32_t> values() const;
  /// @brief The exit status, once written.
  [[nodiscard]] std::optional<std::uint32_t> exit_status() const;

 private:
  mutable std::mutex mutex_;
  std::vector<std::uint32_t> values_;
  std::optional<std::uint32_t> exit_status_;
  std::function<void(std::uint32_t)> on_exit_;
};

}  // namespace vmm::devices
