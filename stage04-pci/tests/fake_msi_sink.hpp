#pragma once
// A test MsiSink: records every message it is given, or fails when told to.

#include <cstdint>
#include <mutex>
#include <vector>

#include "vmm/pci/msi.hpp"

namespace vmm::pci::testing {

class FakeMsiSink final : public MsiSink {
 public:
  struct Signal {
    MsiMessage message;
    std::uint16_t vector = 0;
    bool operator==(const Signal&) const = default;
  };

  Result<void> signal(const MsiMessage& message, std::uint16_t vector_index) override {
    std::lock_guard lock(mutex_);
    if (fail_) {
      return logic_error("fake MSI", "told to fail");
    }
    signals_.push_back({message, vector_index});
    return {};
  }
  std::vector<Signal> signals() const {
    std::lock_guard lock(mutex_);
    return signals_;
  }
  void clear() {
    std::lock_guard lock(mutex_);
    signals_.clear();
  }
  void set_fail(bool fail) {
    std::lock_guard lock(mutex_);
    fail_ = fail;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<Signal> signals_;
  bool fail_ = false;
};

}  // namespace vmm::pci::testing
