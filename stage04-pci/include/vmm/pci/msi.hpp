#pragma once
/// @file
/// @brief `MsiMessage`, `MsiSink` (how a device's message-signalled interrupt reaches the guest) and `KvmSignalMsi`.

#include <cstdint>

#include "vmm/error.hpp"
#include "vmm/kvm/vm.hpp"

namespace vmm::pci {

/// @brief One message-signalled interrupt: the guest-physical address the device writes and the 32-bit data.
///
/// On x86 the address is in the LAPIC window (0xFEEx_xxxx: destination APIC ID in bits 19:12) and the data carries
/// the vector (bits 7:0) and delivery mode; the device does not interpret either, it writes what the guest programmed.
struct MsiMessage {
  std::uint64_t address = 0;  ///< Message Address (upper and lower dwords).
  std::uint32_t data = 0;     ///< Message Data.
  /// @brief Equal when both fields are.
  bool operator==(const MsiMessage&) const = default;
};

/// @brief Where a device's MSI/MSI-X messages go: the interrupt side, kept away from the device model.
///
/// stage04 implements it with KVM_SIGNAL_MSI (`KvmSignalMsi`); stage06 with irqfds and GSI routes, one per vector
/// (hence `vector_index`); tests with a fake that records the messages. Called from vCPU threads (a guest write that
/// triggers or unmasks a vector) and from device threads, never with the device's MSI-X lock held.
class MsiSink {
 public:
  MsiSink() = default;
  MsiSink(const MsiSink&) = delete;
  MsiSink& operator=(const MsiSink&) = delete;
  MsiSink(MsiSink&&) = delete;
  MsiSink& operator=(MsiSink&&) = delete;
  virtual ~MsiSink() = default;

  /// @brief Delivers `message`, which the device's vector `vector_index` (its MSI-X table entry) holds.
  virtual Result<void> signal(const MsiMessage& message, std::uint16_t vector_index) = 0;
};

/// @brief An `MsiSink` that injects each message with KVM_SIGNAL_MSI on the VM descriptor.
///
/// Needs the in-kernel irqchip (`devices::create_irqchip`); without it KVM answers EINVAL. KVM interprets the address
/// and data as the x86 LAPIC would (it does not check the 0xFEE prefix) and answers with the number of LAPICs that
/// accepted the interrupt: > 0 delivered, 0 when none did (the destination's LAPIC is still software-disabled, or no
/// LAPIC has the destination ID, as for an address outside the 0xFEE window: not an error).
class KvmSignalMsi final : public MsiSink {
 public:
  /// @brief Signals into `vm`, which must outlive it.
  explicit KvmSignalMsi(const kvm::Vm& vm) : vm_(vm) {}
  /// @brief `send`, dropping the count. Errors name KVM_SIGNAL_MSI, the vector, the address and the data.
  Result<void> signal(const MsiMessage& message, std::uint16_t vector_index) override;
  /// @brief One KVM_SIGNAL_MSI; returns KVM's non-negative answer (LAPICs that accepted the interrupt, or 0).
  [[nodiscard]] Result<int> send(const MsiMessage& message) const;

 private:
  const kvm::Vm& vm_;
};

}  // namespace vmm::pci
