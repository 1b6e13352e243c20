#pragma once
/// @file
/// @brief `ExitCounters`: how many times KVM_RUN came back to the VMM, by reason and by address, counted by the vCPU
/// loop. stage06 prints them next to KVM's own counters to show which exits ioeventfds and irqfds took away.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

#include "vmm/kvm/exit.hpp"

namespace vmm::machine {

/// @brief Why KVM_RUN returned to userspace, as the counters group it.
enum class ExitReason : std::uint8_t {
  IoIn,           ///< KVM_EXIT_IO, IN/INS.
  IoOut,          ///< KVM_EXIT_IO, OUT/OUTS.
  MmioRead,       ///< KVM_EXIT_MMIO, a read.
  MmioWrite,      ///< KVM_EXIT_MMIO, a write.
  Hlt,            ///< KVM_EXIT_HLT (only without an in-kernel irqchip).
  Shutdown,       ///< KVM_EXIT_SHUTDOWN.
  Interrupted,    ///< KVM_EXIT_INTR: a signal (a stop request) kicked the vCPU out.
  SystemEvent,    ///< KVM_EXIT_SYSTEM_EVENT.
  Debug,          ///< KVM_EXIT_DEBUG.
  InternalError,  ///< KVM_EXIT_INTERNAL_ERROR.
  FailEntry,      ///< KVM_EXIT_FAIL_ENTRY.
  Other,          ///< Any reason the VMM does not decode.
};

/// @brief Number of `ExitReason` values.
inline constexpr std::size_t kExitReasonCount = static_cast<std::size_t>(ExitReason::Other) + 1;

/// @brief "io in", "mmio write", ... (for tables).
[[nodiscard]] const char* to_string(ExitReason reason);

/// @brief The reason `exit` is counted under.
[[nodiscard]] ExitReason classify(const kvm::VcpuExit& exit);

/// @brief Exits at one address (an MMIO address or an I/O port), split by direction.
struct AccessCount {
  std::uint64_t reads = 0;   ///< MMIO reads or INs.
  std::uint64_t writes = 0;  ///< MMIO writes or OUTs.
  /// @brief reads + writes.
  [[nodiscard]] std::uint64_t total() const noexcept { return reads + writes; }
  /// @brief Equal when both counts are.
  bool operator==(const AccessCount&) const = default;
};

/// @brief A copy of `ExitCounters` at one moment: plain values to print or compare.
struct ExitCountersSnapshot {
  std::array<std::uint64_t, kExitReasonCount> by_reason{};  ///< Indexed by `ExitReason`.
  std::map<std::uint64_t, AccessCount> mmio;                ///< Per guest-physical address of an MMIO exit.
  std::map<std::uint16_t, AccessCount> pio;                 ///< Per I/O port of an I/O exit.

  /// @brief Exits counted under `reason`.
  [[nodiscard]] std::uint64_t count(ExitReason reason) const noexcept {
    return by_reason[static_cast<std::size_t>(reason)];
  }
  /// @brief Every exit counted.
  [[nodiscard]] std::uint64_t total() const noexcept;
};

/// @brief Userspace exits by reason and by address; shared by any number of vCPU loops (`VcpuLoopOptions::counters`).
///
/// A KVM_RUN return is counted once, whatever it carries: a string I/O exit of 16 items is one exit (KVM's
/// `io_exits` counts it once too). The per-reason counters are relaxed atomics: each is an independent tally, nothing
/// is ordered by it, and a snapshot taken while vCPUs run may be a few exits behind. The per-address maps sit behind a
/// mutex; taking it on every I/O or MMIO exit costs little next to the exit itself (microseconds of world switch and
/// dispatch), and it keeps the maps simple. A snapshot copies the maps under that mutex.
class ExitCounters {
 public:
  /// @brief Counts one exit: its reason, and its address for I/O and MMIO.
  void record(const kvm::VcpuExit& exit);
  /// @brief Counts `n` exits under `reason` without an address (tests, or exits counted elsewhere).
  void add(ExitReason reason, std::uint64_t n = 1) noexcept;
  /// @brief The current counts.
  [[nodiscard]] ExitCountersSnapshot snapshot() const;
  /// @brief Exits counted under `reason` so far.
  [[nodiscard]] std::uint64_t count(ExitReason reason) const noexcept {
    return by_reason_[static_cast<std::size_t>(reason)].load(std::memory_order_relaxed);
  }
  /// @brief Sets everything back to zero (e.g. after the guest booted, to count only what follows).
  void reset();

 private:
  std::array<std::atomic<std::uint64_t>, kExitReasonCount> by_reason_{};
  mutable std::mutex mutex_;
  std::map<std::uint64_t, AccessCount> mmio_;
  std::map<std::uint16_t, AccessCount> pio_;
};

}  // namespace vmm::machine
