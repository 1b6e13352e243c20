#include "vmm/devices/i8042/i8042.hpp"

#include <utility>

namespace vmm::devices {

using namespace i8042;

// One port of the controller on the I/O bus. Ports are one byte wide: wider accesses see the byte at offset 0 and
// 0xff above it (reads), or have their first byte taken (writes).
class I8042::Port final : public BusDevice {
 public:
  Port(I8042& controller, bool command) : controller_(controller), command_(command) {}
  void read(std::uint64_t offset, std::span<std::uint8_t> data) override {
    for (auto& byte : data) {
      byte = 0xff;
    }
    if (offset == 0 && !data.empty()) {
      data[0] = command_ ? controller_.read_status() : controller_.read_data();
    }
  }
  void write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
    if (offset != 0 || data.empty()) {
      return;
    }
    if (command_) {
      controller_.write_command(data[0]);
    } else {
      controller_.write_data(data[0]);
    }
  }

 private:
  I8042& controller_;
  bool command_;
};

I8042::I8042(IrqLine& irq, std::function<void()> on_reset)
    : irq_(irq),
      on_reset_(std::move(on_reset)),
      data_(std::make_shared<Port>(*this, false)),
      command_(std::make_shared<Port>(*this, true)) {}

void I8042::queue_locked(std::uint8_t byte, bool from_keyboard) {
  output_.push_back(byte);
  if (from_keyboard && (ctr_ & kCtrKeyboardIrq) != 0) {
    (void)irq_.pulse();  // an edge on ISA IRQ 1; a failure here cannot be reported to the guest anyway
  }
}

std::uint8_t I8042::read_data() {
  std::lock_guard lock(mutex_);
  if (!output_.empty()) {
    last_output_ = output_.front();
    output_.pop_front();
  }
  return last_output_;
}

std::uint8_t I8042::read_status() {
  std::lock_guard lock(mutex_);
  // The input buffer is never full: the controller takes every write at once, so Linux's kb_wait() before the
  // reset pulse never spins.
  return static_cast<std::uint8_t>(status_ | (output_.empty() ? 0 : kStatusOutputFull));
}

void I8042::write_command(std::uint8_t value) {
  bool reset = false;
  {
    std::lock_guard lock(mutex_);
    status_ |= kStatusCommand;
    pending_command_.reset();
    switch (value) {
      case kCmdReadCtr:
        queue_locked(ctr_, false);
        break;
      case kCmdWriteCtr:
      case kCmdWriteOutput:
      case kCmdWriteKeyboard:
        pending_command_ = value;
        break;
      case kCmdAuxDisable:
        ctr_ |= kCtrAuxDisable;
        break;
      case kCmdAuxEnable:
        ctr_ &= static_cast<std::uint8_t>(~kCtrAuxDisable);
        break;
      case kCmdSelfTest:
        queue_locked(kSelfTestPassed, false);
        break;
      case kCmdKeyboardTest:
        queue_locked(0x00, false);
        break;
      case kCmdKeyboardDisable:
        ctr_ |= kCtrKeyboardDisable;
        break;
      case kCmdKeyboardEnable:
        ctr_ &= static_cast<std::uint8_t>(~kCtrKeyboardDisable);
        break;
      case kCmdReadOutput:
        queue_locked(0x01, false);  // bit 0 = the reset line, not asserted
        break;
      default:
        // 0xF0-0xFF pulse output lines 0-3 for each clear bit; line 0 is the CPU reset.
        if (value >= 0xf0 && (value & 0x01) == 0) {
          reset = true;
        }
        break;  // other commands (aux, password, test inputs) are ignored: nothing answers them on this machine
    }
  }
  if (reset) {
    reset_cpu();
  }
}

void I8042::write_data(std::uint8_t value) {
  bool reset = false;
  {
    std::lock_guard lock(mutex_);
    status_ &= static_cast<std::uint8_t>(~kStatusCommand);
    const auto command = std::exchange(pending_command_, std::nullopt);
    if (command == kCmdWriteCtr) {
      ctr_ = value;
    } else if (command == kCmdWriteOutput) {
      reset = (value & 0x01) == 0;  // output port bit 0 low holds the CPU in reset
    } else if (command == kCmdWriteKeyboard) {
      queue_locked(value, true);
    } else {
      // A byte for the keyboard. There is none, but an acknowledgement lets the driver move on.
      queue_locked(kKeyboardAck, true);
    }
  }
  if (reset) {
    reset_cpu();
  }
}

void I8042::reset_cpu() {
  {
    std::lock_guard lock(mutex_);
    ++resets_;
  }
  if (on_reset_) {
    on_reset_();
  }
}

std::uint64_t I8042::resets() const {
  std::lock_guard lock(mutex_);
  return resets_;
}

std::uint8_t I8042::config_byte() const {
  std::lock_guard lock(mutex_);
  return ctr_;
}

}  // namespace vmm::devices
