#include "vmm/machine/exit_counters.hpp"

#include <numeric>
#include <type_traits>
#include <variant>

namespace vmm::machine {

const char* to_string(ExitReason reason) {
  switch (reason) {
    case ExitReason::IoIn:
      return "io in";
    case ExitReason::IoOut:
      return "io out";
    case ExitReason::MmioRead:
      return "mmio read";
    case ExitReason::MmioWrite:
      return "mmio write";
    case ExitReason::Hlt:
      return "hlt";
    case ExitReason::Shutdown:
      return "shutdown";
    case ExitReason::Interrupted:
      return "interrupted";
    case ExitReason::SystemEvent:
      return "system event";
    case ExitReason::Debug:
      return "debug";
    case ExitReason::InternalError:
      return "internal error";
    case ExitReason::FailEntry:
      return "failed entry";
    case ExitReason::Other:
      return "other";
  }
  return "?";
}

ExitReason classify(const kvm::VcpuExit& exit) {
  return std::visit(
      [](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, kvm::IoExit>) {
          return e.direction == kvm::IoDirection::In ? ExitReason::IoIn : ExitReason::IoOut;
        } else if constexpr (std::is_same_v<T, kvm::MmioExit>) {
          return e.is_write ? ExitReason::MmioWrite : ExitReason::MmioRead;
        } else if constexpr (std::is_same_v<T, kvm::HltExit>) {
          return ExitReason::Hlt;
        } else if constexpr (std::is_same_v<T, kvm::ShutdownExit>) {
          return ExitReason::Shutdown;
        } else if constexpr (std::is_same_v<T, kvm::InterruptedExit>) {
          return ExitReason::Interrupted;
        } else if constexpr (std::is_same_v<T, kvm::SystemEventExit>) {
          return ExitReason::SystemEvent;
        } else if constexpr (std::is_same_v<T, kvm::DebugExit>) {
          return ExitReason::Debug;
        } else if constexpr (std::is_same_v<T, kvm::InternalErrorExit>) {
          return ExitReason::InternalError;
        } else if constexpr (std::is_same_v<T, kvm::FailEntryExit>) {
          return ExitReason::FailEntry;
        } else {
          return ExitReason::Other;
        }
      },
      exit);
}

std::uint64_t ExitCountersSnapshot::total() const noexcept {
  return std::accumulate(by_reason.begin(), by_reason.end(), std::uint64_t{0});
}

void ExitCounters::add(ExitReason reason, std::uint64_t n) noexcept {
  by_reason_[static_cast<std::size_t>(reason)].fetch_add(n, std::memory_order_relaxed);
}

void ExitCounters::record(const kvm::VcpuExit& exit) {
  add(classify(exit));
  if (const auto* io = std::get_if<kvm::IoExit>(&exit)) {
    std::lock_guard lock(mutex_);
    auto& count = pio_[io->port];
    ++(io->direction == kvm::IoDirection::In ? count.reads : count.writes);
  } else if (const auto* mmio = std::get_if<kvm::MmioExit>(&exit)) {
    std::lock_guard lock(mutex_);
    auto& count = mmio_[mmio->address];
    ++(mmio->is_write ? count.writes : count.reads);
  }
}

ExitCountersSnapshot ExitCounters::snapshot() const {
  ExitCountersSnapshot out;
  for (std::size_t i = 0; i < kExitReasonCount; ++i) {
    out.by_reason[i] = by_reason_[i].load(std::memory_order_relaxed);
  }
  std::lock_guard lock(mutex_);
  out.mmio = mmio_;
  out.pio = pio_;
  return out;
}

void ExitCounters::reset() {
  for (auto& counter : by_reason_) {
    counter.store(0, std::memory_order_relaxed);
  }
  std::lock_guard lock(mutex_);
  mmio_.clear();
  pio_.clear();
}

}  // namespace vmm::machine
