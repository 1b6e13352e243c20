#include "vmm/irq/irqfd.hpp"

#include <linux/kvm.h>
#include <poll.h>

#include <array>
#include <cerrno>
#include <utility>

#include <fmt/format.h>

namespace vmm::irq {

namespace {

// KVM_IRQFD takes the fields as unsigned; descriptors are never negative once created.
Result<void> irqfd_ioctl(const kvm::Vm& vm, kvm_irqfd request, const char* what) {
  if (auto rc = VMM_IOCTL(vm.fd(), KVM_IRQFD, &request); !rc) {
    return std::unexpected(
        rc.error().with_context(fmt::format("{} eventfd {} on GSI {}", what, request.fd, request.gsi)));
  }
  return {};
}

}  // namespace

Result<void> assign_irqfd(const kvm::Vm& vm, const event::EventFd& event, std::uint32_t gsi,
                          const event::EventFd* resample) {
  kvm_irqfd request{};
  request.fd = static_cast<std::uint32_t>(event.fd());
  request.gsi = gsi;
  if (resample != nullptr) {
    request.flags = KVM_IRQFD_FLAG_RESAMPLE;
    request.resamplefd = static_cast<std::uint32_t>(resample->fd());
  }
  return irqfd_ioctl(vm, request, resample != nullptr ? "assign resampling" : "assign");
}

Result<void> deassign_irqfd(const kvm::Vm& vm, const event::EventFd& event, std::uint32_t gsi) {
  // KVM finds the irqfd by (eventfd, GSI); the resample eventfd need not be named.
  kvm_irqfd request{};
  request.fd = static_cast<std::uint32_t>(event.fd());
  request.gsi = gsi;
  request.flags = KVM_IRQFD_FLAG_DEASSIGN;
  return irqfd_ioctl(vm, request, "deassign");
}

Result<Irqfd> Irqfd::assign(const kvm::Vm& vm, std::uint32_t gsi, Mode mode) {
  auto event = event::EventFd::create();
  if (!event) {
    return std::unexpected(event.error());
  }
  std::optional<event::EventFd> resample;
  if (mode == Mode::Resample) {
    auto created = event::EventFd::create();
    if (!created) {
      return std::unexpected(created.error());
    }
    resample.emplace(std::move(*created));
  }
  if (auto rc = assign_irqfd(vm, *event, gsi, resample ? &*resample : nullptr); !rc) {
    return std::unexpected(rc.error());
  }
  return Irqfd(vm, gsi, std::move(*event), std::move(resample));
}

Irqfd::Irqfd(Irqfd&& other) noexcept
    : vm_(std::exchange(other.vm_, nullptr)),
      gsi_(other.gsi_),
      event_(std::move(other.event_)),
      resample_(std::move(other.resample_)) {}

Irqfd& Irqfd::operator=(Irqfd&& other) noexcept {
  if (this != &other) {
    (void)deassign();
    vm_ = std::exchange(other.vm_, nullptr);
    gsi_ = other.gsi_;
    event_ = std::move(other.event_);
    resample_ = std::move(other.resample_);
  }
  return *this;
}

Irqfd::~Irqfd() {
  // Nothing to report to: the VM being torn down also drops every irqfd, so a failure here leaks nothing.
  (void)deassign();
}

Result<void> Irqfd::deassign() {
  if (vm_ == nullptr) {
    return {};
  }
  const kvm::Vm& vm = *std::exchange(vm_, nullptr);
  return deassign_irqfd(vm, event_, gsi_);
}

Result<std::unique_ptr<IrqfdLine>> IrqfdLine::create(const kvm::Vm& vm, std::uint32_t gsi, Resampler resampler) {
  auto irqfd = Irqfd::assign(vm, gsi, Irqfd::Mode::Resample);
  if (!irqfd) {
    return std::unexpected(irqfd.error().with_context("level-triggered line"));
  }
  std::optional<event::EventFd> stop;
  if (resampler == Resampler::Thread) {
    auto created = event::EventFd::create();
    if (!created) {
      return std::unexpected(created.error());
    }
    stop.emplace(std::move(*created));
  }
  return std::unique_ptr<IrqfdLine>(new IrqfdLine(std::move(*irqfd), std::move(stop)));
}

IrqfdLine::IrqfdLine(Irqfd irqfd, std::optional<event::EventFd> stop)
    : irqfd_(std::move(irqfd)), stop_(std::move(stop)) {
  if (stop_) {
    thread_ = std::jthread([this] { resample_loop(); });
  }
}

IrqfdLine::~IrqfdLine() {
  if (thread_.joinable()) {
    if (auto rc = stop_->write(1); rc) {
      thread_.join();
    } else {
      thread_.detach();  // cannot happen with a fresh counter; never block the destructor forever
    }
  }
}

Result<void> IrqfdLine::raise() {
  std::lock_guard lock(mutex_);
  const bool was_high = std::exchange(level_, true);
  if (was_high) {
    return {};  // KVM still holds the line asserted, or the resample handler re-asserts it after the EOI
  }
  auto rc = assert_locked();
  if (!rc) {
    level_ = false;  // not asserted: the device's next raise() (the UART retries) must try again
  }
  return rc;
}

Result<void> IrqfdLine::lower() {
  std::lock_guard lock(mutex_);
  level_ = false;
  return {};
}

Result<bool> IrqfdLine::handle_resample() {
  // Consume first, then decide: a raise() racing with us either sees the line low and asserts itself, or set the
  // level before we look at it under the lock. Re-asserting an asserted line is harmless.
  auto signal = irqfd_.resample_event()->read();
  if (!signal) {
    return std::unexpected(signal.error());
  }
  if (!*signal) {
    return false;
  }
  std::lock_guard lock(mutex_);
  ++resamples_;
  if (level_) {
    if (auto rc = assert_locked(); !rc) {
      return std::unexpected(rc.error());
    }
  }
  return true;
}

Result<void> IrqfdLine::assert_locked() {
  if (auto rc = irqfd_.trigger(); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("asserting GSI {}", irqfd_.gsi())));
  }
  ++asserts_;
  return {};
}

void IrqfdLine::resample_loop() {
  std::array<pollfd, 2> fds{pollfd{.fd = resample_fd(), .events = POLLIN, .revents = 0},
                            pollfd{.fd = stop_->fd(), .events = POLLIN, .revents = 0}};
  for (;;) {
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      std::lock_guard lock(mutex_);
      last_error_ = Error{"poll", errno, fmt::format("resample thread of GSI {} stops", irqfd_.gsi())};
      return;
    }
    if (fds[1].revents != 0) {
      return;
    }
    if (fds[0].revents != 0) {
      if (auto rc = handle_resample(); !rc) {
        // Stop rather than spin on a descriptor that stays readable; the error says why the line went quiet.
        std::lock_guard lock(mutex_);
        last_error_ = rc.error().with_context(fmt::format("resample thread of GSI {} stops", irqfd_.gsi()));
        return;
      }
    }
  }
}

bool IrqfdLine::level() const {
  std::lock_guard lock(mutex_);
  return level_;
}

std::uint64_t IrqfdLine::asserts() const {
  std::lock_guard lock(mutex_);
  return asserts_;
}

std::uint64_t IrqfdLine::resamples() const {
  std::lock_guard lock(mutex_);
  return resamples_;
}

std::optional<Error> IrqfdLine::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

}  // namespace vmm::irq
