#include "vmm/gdb/stub.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstring>

namespace vmm::gdb {

namespace {

constexpr int kSigint = 2;
constexpr int kSigtrap = 5;
constexpr std::uint8_t kInt3 = 0xcc;
// OUT DX,AL: one byte, like int3, and a port write exits to the VMM on every KVM, nested or emulated. The stub's
// breakpoint where KVM traps neither int3 nor debug registers (the rig), or once the debug registers are taken.
constexpr std::uint8_t kOutDxAl = 0xee;

// The part of `text` before the first `separator`, and `text` advanced past it.
std::string_view take_until(std::string_view& text, char separator) {
  const auto at = text.find(separator);
  auto head = text.substr(0, at);
  text = at == std::string_view::npos ? std::string_view{} : text.substr(at + 1);
  return head;
}

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

std::string hex_text(std::string_view text) {
  return to_hex(std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

void write_wake(const Fd& fd) {
  const std::uint64_t one = 1;
  // The counter cannot overflow in practice (2^64 - 2 wakes); a failed write only delays a wake-up.
  (void)!::write(fd.get(), &one, sizeof(one));
}

void drain_wake(const Fd& fd) {
  std::uint64_t value = 0;
  (void)!::read(fd.get(), &value, sizeof(value));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------------
// Endpoint and listening socket

Result<GdbEndpoint> GdbEndpoint::parse(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return logic_error("--gdb", fmt::format("'{}': {} (use tcp:PORT, tcp:HOST:PORT or unix:PATH)", text, why));
  };
  GdbEndpoint endpoint;
  if (starts_with(text, "unix:")) {
    endpoint.kind = Kind::Unix;
    endpoint.path = std::string(text.substr(5));
    if (endpoint.path.empty()) {
      return bad("no path");
    }
    if (endpoint.path.size() >= sizeof(sockaddr_un::sun_path)) {
      return bad(fmt::format("the path is {} bytes; a Unix socket path holds at most {}", endpoint.path.size(),
                             sizeof(sockaddr_un::sun_path) - 1));
    }
    return endpoint;
  }
  if (!starts_with(text, "tcp:")) {
    return bad("unknown transport");
  }
  std::string_view rest = text.substr(4);
  const auto colon = rest.rfind(':');
  std::string_view port_text = rest;
  if (colon != std::string_view::npos) {
    endpoint.host = std::string(rest.substr(0, colon));
    port_text = rest.substr(colon + 1);
    in_addr parsed{};
    if (::inet_pton(AF_INET, endpoint.host.c_str(), &parsed) != 1) {
      return bad(fmt::format("'{}' is not an IPv4 address", endpoint.host));
    }
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || end != port_text.data() + port_text.size() || port > 65535 || port_text.empty()) {
    return bad(fmt::format("'{}' is not a port number", port_text));
  }
  endpoint.port = static_cast<std::uint16_t>(port);
  return endpoint;
}

namespace {

struct Bound {
  Fd socket;
  std::string where;
};

Result<Bound> bind_endpoint(const GdbEndpoint& endpoint) {
  if (endpoint.kind == GdbEndpoint::Kind::Unix) {
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
      return sys_error("socket(AF_UNIX)", errno);
    }
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, endpoint.path.data(), endpoint.path.size());
    // A socket file left by an earlier run would make bind fail; only a socket is ever removed.
    struct stat info {};
    if (::lstat(endpoint.path.c_str(), &info) == 0 && S_ISSOCK(info.st_mode)) {
      ::unlink(endpoint.path.c_str());
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
      return sys_error("bind", errno, endpoint.path);
    }
    if (::listen(fd.get(), 1) != 0) {
      return sys_error("listen", errno, endpoint.path);
    }
    return Bound{std::move(fd), "unix:" + endpoint.path};
  }
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    return sys_error("socket(AF_INET)", errno);
  }
  const int one = 1;
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(endpoint.port);
  (void)::inet_pton(AF_INET, endpoint.host.c_str(), &address.sin_addr);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return sys_error("bind", errno, fmt::format("{}:{}", endpoint.host, endpoint.port));
  }
  if (::listen(fd.get(), 1) != 0) {
    return sys_error("listen", errno);
  }
  socklen_t length = sizeof(address);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return sys_error("getsockname", errno);
  }
  return Bound{std::move(fd), fmt::format("tcp:{}:{}", endpoint.host, ntohs(address.sin_port))};
}

}  // namespace

Result<std::unique_ptr<GdbStub>> GdbStub::listen(const GdbEndpoint& endpoint, std::vector<kvm::Vcpu*> vcpus,
                                                 const memory::GuestMemory& memory, GdbStubOptions options) {
  if (vcpus.empty()) {
    return logic_error("gdb stub", "no vCPUs to debug");
  }
  auto bound = bind_endpoint(endpoint);
  if (!bound) {
    return std::unexpected(bound.error().with_context("gdb stub: cannot listen"));
  }
  Fd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) {
    return sys_error("eventfd", errno, "gdb stub");
  }
  if (!options.support) {
    auto support = probe_guest_debug();
    if (!support) {
      return std::unexpected(support.error());
    }
    options.support = *support;
  }
  const bool paused = options.start_paused;
  std::unique_ptr<GdbStub> stub(new GdbStub(std::move(bound->socket), bound->where,
                                            endpoint.kind == GdbEndpoint::Kind::Unix ? endpoint.path : "",
                                            std::move(vcpus), memory, std::move(options), std::move(wake)));
  for (auto& slot : stub->slots_) {
    slot.may_run = !paused;
  }
  const auto& support = stub->support_;
  auto yes = [](bool value) { return value ? "yes" : "no"; };
  stub->say(fmt::format("this KVM traps: single-step {}, int3 {}, debug-register breakpoints {}, watchpoints {}{}",
                        yes(support.single_step), yes(support.software_breakpoint), yes(support.hardware_breakpoint),
                        yes(support.hardware_watchpoint),
                        support.software_breakpoint && support.hardware_breakpoint && support.hardware_watchpoint
                            ? ""
                            : " (the rest is emulated by single-stepping)"));
  stub->stopped_ = paused;
  stub->say(paused ? fmt::format("waiting for gdb on {}; the guest starts when gdb continues ({})", stub->where_,
                                 stub->target_remote_command())
                   : fmt::format("listening for gdb on {} ({})", stub->where_, stub->target_remote_command()));
  stub->thread_ = std::thread([self = stub.get()] {
    ::pthread_setname_np(::pthread_self(), "gdb-stub");
    self->serve();
  });
  return stub;
}

GdbStub::GdbStub(Fd listener, std::string where, std::string unix_path, std::vector<kvm::Vcpu*> vcpus,
                 const memory::GuestMemory& memory, GdbStubOptions options, Fd wake)
    : listener_(std::move(listener)),
      where_(std::move(where)),
      unix_path_(std::move(unix_path)),
      memory_(memory),
      options_(std::move(options)),
      wake_(std::move(wake)),
      support_(options_.support.value_or(GuestDebugSupport{})) {
  for (auto* vcpu : vcpus) {
    VcpuSlot slot;
    slot.vcpu = vcpu;
    slots_.push_back(slot);
  }
}

GdbStub::~GdbStub() {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
  }
  write_wake(wake_);
  changed_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
  if (!unix_path_.empty()) {
    ::unlink(unix_path_.c_str());
  }
}

std::string GdbStub::target_remote_command() const {
  if (starts_with(where_, "unix:")) {
    return fmt::format("target remote {}", where_.substr(5));
  }
  return fmt::format("target remote {}", where_.substr(4));
}

void GdbStub::say(std::string_view line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    fmt::print(stderr, "gdb stub: {}\n", line);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// The vCPU side (called on vCPU threads)

std::size_t GdbStub::slot_of(const kvm::Vcpu& vcpu) const {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].vcpu == &vcpu) {
      return i;
    }
  }
  assert(false && "a vCPU the stub was not given");
  return 0;
}

void GdbStub::before_run(kvm::Vcpu& vcpu, const std::atomic<bool>& stop) {
  std::unique_lock lock(mutex_);
  auto& slot = slots_[slot_of(vcpu)];
  slot.thread = ::pthread_self();
  while (!slot.may_run && !closing_ && !stop.load()) {
    slot.parked = true;
    changed_.notify_all();
    // The timeout only bounds how late a VMM shutdown (`stop`, which does not notify us) is noticed.
    changed_.wait_for(lock, std::chrono::milliseconds(50));
  }
  slot.parked = false;
  if (slot.kicked) {
    __atomic_store_n(&vcpu.run_page().immediate_exit, 0, __ATOMIC_SEQ_CST);
    slot.kicked = false;
  }
}

namespace {

Result<void> set_guest_debug(const kvm::Vcpu& vcpu, std::uint32_t control,
                             const std::array<std::uint64_t, 4>& addresses, std::uint64_t dr7) {
  kvm_guest_debug debug{};
  debug.control = control;
  std::copy(addresses.begin(), addresses.end(), debug.arch.debugreg);
  debug.arch.debugreg[7] = dr7;
  if (auto rc = VMM_IOCTL(vcpu.fd(), KVM_SET_GUEST_DEBUG, &debug); !rc) {
    return std::unexpected(rc.error().with_context(fmt::format("vCPU {}", vcpu.id())));
  }
  return {};
}

}  // namespace

Result<void> GdbStub::rearm(const VcpuSlot& slot, std::uint32_t extra) {
  return set_guest_debug(*slot.vcpu, slot.control | extra, slot.debug_addresses, slot.dr7);
}

void GdbStub::on_debug_exit(kvm::Vcpu& vcpu, const kvm::DebugExit& exit) {
  std::unique_lock lock(mutex_);
  auto& slot = slots_[slot_of(vcpu)];
  StopEvent event{.signal = kSigtrap, .reason = {}, .pc = exit.pc};
  if (exit.exception == 3) {
    if (!software_.contains(exit.pc)) {
      // The guest's own int3 (Linux patches code with them): KVM_GUESTDBG_USE_SW_BP caught it for us, so hand it
      // back as the #BP the guest expected. KVM queues it and resumes after the int3 as the CPU would have.
      if (auto rc = rearm(slot, KVM_GUESTDBG_INJECT_BP); !rc) {
        say(fmt::format("vCPU {}: re-injecting the guest's #BP at {:#x}: {}", vcpu.id(), exit.pc, rc.error()));
      }
      return;
    }
    event.reason = "swbreak:;";
  } else if (auto hit = hardware_.hit(exit.dr6)) {
    switch (hit->kind) {
      case HardwareKind::Execution:
        event.reason = std::ranges::find(z0_in_debug_registers_, hit->address) != z0_in_debug_registers_.end()
                           ? "swbreak:;"
                           : "hwbreak:;";
        break;
      case HardwareKind::Write:
        event.reason = fmt::format("watch:{:x};", hit->address);
        break;
      case HardwareKind::Read:
        event.reason = fmt::format("rwatch:{:x};", hit->address);
        break;
      case HardwareKind::Access:
        event.reason = fmt::format("awatch:{:x};", hit->address);
        break;
    }
  } else if (slot.emulating && !slot.stepping) {
    // A 'continue' run one instruction at a time: stop only where an emulated breakpoint or watchpoint says so.
    auto stepped = check_stepped(slot_of(vcpu), exit);
    if (!stepped && stepped_.empty()) {
      // The last emulated breakpoint became an OUT patch (its page is mapped now): run free again.
      slot.emulating = false;
      slot.control &= ~static_cast<std::uint32_t>(KVM_GUESTDBG_SINGLESTEP);
      if (auto rc = rearm(slot); !rc) {
        say(fmt::format("vCPU {}: {}", vcpu.id(), rc.error()));
      }
      return;
    }
    if (!stepped) {
      // KVM steps with RFLAGS.TF, which a POPF in the guest clears (Linux's startup_64 does "pushq $0; popfq"): the
      // guest would then run free past every emulated breakpoint. KVM_SET_GUEST_DEBUG sets TF again at each step.
      if (auto rc = rearm(slot); !rc) {
        say(fmt::format("vCPU {}: {}", vcpu.id(), rc.error()));
      }
      return;
    }
    event = std::move(*stepped);
  } else if (!slot.stepping) {
    // A #DB that is none of ours: the guest's own debug registers or TF. Give it back. (While we step, a #DB is
    // our step: DR6.BS says so on Intel, but KVM on AMD does not always set it.)
    if (auto rc = rearm(slot, KVM_GUESTDBG_INJECT_DB); !rc) {
      say(fmt::format("vCPU {}: re-injecting the guest's #DB at {:#x}: {}", vcpu.id(), exit.pc, rc.error()));
    }
    return;
  }
  hold_with_stop(lock, slot, std::move(event));
}

void GdbStub::hold_with_stop(std::unique_lock<std::mutex>& lock, VcpuSlot& slot, StopEvent event) {
  slot.pending = std::move(event);
  slot.may_run = false;
  lock.unlock();
  write_wake(wake_);
}

bool GdbStub::on_port_write(kvm::Vcpu& vcpu, const kvm::IoExit& io) {
  if (io.size != 1 || io.count != 1) {
    return false;
  }
  {
    std::lock_guard lock(mutex_);
    if (std::ranges::none_of(software_, [](const auto& entry) { return entry.second.opcode == kOutDxAl; })) {
      return false;
    }
  }
  // Finish the OUT first: KVM moves RIP past it inside the next KVM_RUN (some KVMs before the exit already), and
  // with immediate_exit that KVM_RUN does only this and returns. Either way RIP then points after the instruction,
  // and a real port write from the guest is still dispatched afterwards, its byte unchanged in the kvm_run page.
  auto& run = vcpu.run_page();
  __atomic_store_n(&run.immediate_exit, 1, __ATOMIC_SEQ_CST);
  auto completed = vcpu.run();
  __atomic_store_n(&run.immediate_exit, 0, __ATOMIC_SEQ_CST);
  auto regs = vcpu.get_regs();
  auto sregs = vcpu.get_sregs();
  if (!completed || !regs || !sregs) {
    say(fmt::format("vCPU {}: completing a port write: {}", vcpu.id(),
                    !completed ? completed.error() : (!regs ? regs.error() : sregs.error())));
    return false;
  }
  const std::uint64_t at = sregs->cs.base + regs->rip - 1;
  std::unique_lock lock(mutex_);
  auto found = software_.find(at);
  if (found == software_.end() || found->second.opcode != kOutDxAl) {
    return false;  // the guest's own OUT
  }
  regs->rip -= 1;  // back onto the breakpoint, as after an int3 trap
  if (auto rc = vcpu.set_regs(*regs); !rc) {
    say(fmt::format("vCPU {}: {}", vcpu.id(), rc.error()));
  }
  hold_with_stop(lock, slots_[slot_of(vcpu)], StopEvent{.signal = kSigtrap, .reason = "swbreak:;", .pc = at});
  return true;
}

void GdbStub::on_loop_end(kvm::Vcpu& vcpu, bool normal) {
  {
    std::lock_guard lock(mutex_);
    auto& slot = slots_[slot_of(vcpu)];
    slot.ended = true;
    slot.failed = !normal;
    slot.parked = false;
  }
  changed_.notify_all();
  write_wake(wake_);
}

// ---------------------------------------------------------------------------------------------------------------------
// Holding and releasing vCPUs (the stub's thread)

void GdbStub::pause_all(std::unique_lock<std::mutex>& lock) {
  stopped_ = true;
  for (auto& slot : slots_) {
    slot.may_run = false;
    if (slot.thread && !slot.parked && !slot.ended && !slot.kicked) {
      slot.kicked = true;
      machine::kick_vcpu(*slot.vcpu, *slot.thread);
    }
  }
  // A vCPU whose thread has not reached its loop yet cannot be inside KVM_RUN: only started ones are waited for.
  const bool all = changed_.wait_for(lock, std::chrono::seconds(5), [&] {
    return std::all_of(slots_.begin(), slots_.end(),
                       [](const VcpuSlot& slot) { return !slot.thread || slot.parked || slot.ended; });
  });
  if (!all) {
    say("a vCPU did not stop within 5 s (busy in a device?); registers of it may be stale");
  }
}

Result<void> GdbStub::apply_guest_debug(VcpuSlot& slot, bool stepping, bool emulating) {
  std::uint32_t control = 0;
  const bool attached = connection_.valid();
  if (attached && (!software_.empty() || !hardware_.empty() || stepping || emulating)) {
    control = KVM_GUESTDBG_ENABLE;
    if (std::ranges::any_of(software_, [](const auto& entry) { return entry.second.opcode == kInt3; })) {
      control |= KVM_GUESTDBG_USE_SW_BP;
    }
    if (!hardware_.empty()) {
      control |= KVM_GUESTDBG_USE_HW_BP;
    }
    if (stepping) {
      // BLOCKIRQ: a step executes the next instruction of the program, not the first one of a timer interrupt's
      // handler. Older kernels (before 5.16) refuse the flag; then steps may land in handlers.
      control |= KVM_GUESTDBG_SINGLESTEP | (block_irq_supported_ ? KVM_GUESTDBG_BLOCKIRQ : 0u);
    } else if (emulating) {
      control |= KVM_GUESTDBG_SINGLESTEP;  // interrupts stay on: the guest runs as it would, only slower
    }
  }
  const auto addresses = hardware_.addresses();
  const std::uint64_t dr7 = hardware_.dr7();
  if (control == slot.control && addresses == slot.debug_addresses && dr7 == slot.dr7) {
    return {};
  }
  auto rc = set_guest_debug(*slot.vcpu, control, addresses, dr7);
  if (!rc && rc.error().errno_value == EINVAL && (control & KVM_GUESTDBG_BLOCKIRQ) != 0) {
    block_irq_supported_ = false;
    control &= ~static_cast<std::uint32_t>(KVM_GUESTDBG_BLOCKIRQ);
    rc = set_guest_debug(*slot.vcpu, control, addresses, dr7);
  }
  if (!rc) {
    return rc;
  }
  slot.control = control;
  slot.debug_addresses = addresses;
  slot.dr7 = dr7;
  return {};
}

std::optional<GdbStub::StopEvent> GdbStub::check_stepped(std::size_t index, const kvm::DebugExit& exit) {
  // Z0s waiting for their page: once this vCPU's tables map it, the OUT patch takes over from stepping.
  std::erase_if(stepped_, [&](const SteppedBreakpoint& b) {
    if (!b.plant_when_mapped || exit.pc == b.address) {
      return false;
    }
    auto where = translate_for(index, b.address);
    return where && plant(b.address, where->physical, kOutDxAl);
  });
  for (auto& breakpoint : stepped_) {
    if (breakpoint.type == '0' || breakpoint.type == '1') {
      if (exit.pc == breakpoint.address) {
        return StopEvent{
            .signal = kSigtrap, .reason = breakpoint.type == '0' ? "swbreak:;" : "hwbreak:;", .pc = exit.pc};
      }
      continue;
    }
    std::vector<std::uint8_t> now(breakpoint.value.size());
    if (!breakpoint.physical || !memory_.read(*breakpoint.physical, std::as_writable_bytes(std::span(now)))) {
      continue;
    }
    if (now != breakpoint.value) {
      breakpoint.value = std::move(now);
      return StopEvent{.signal = kSigtrap, .reason = fmt::format("watch:{:x};", breakpoint.address), .pc = exit.pc};
    }
  }
  return std::nullopt;
}

bool GdbStub::plant(std::uint64_t linear, memory::GuestAddress physical, std::uint8_t opcode) {
  std::byte original{};
  const std::byte patch{opcode};
  if (!memory_.read(physical, std::span(&original, 1)) || !memory_.write(physical, std::span(&patch, 1))) {
    return false;
  }
  software_[linear] = {.physical = physical, .original = static_cast<std::uint8_t>(original), .opcode = opcode};
  return true;
}

bool GdbStub::has_z0(std::uint64_t address) const {
  return software_.contains(address) ||
         std::ranges::find(z0_in_debug_registers_, address) != z0_in_debug_registers_.end() ||
         std::ranges::any_of(stepped_,
                             [&](const SteppedBreakpoint& b) { return b.type == '0' && b.address == address; });
}

std::optional<std::size_t> GdbStub::take_pending_locked() {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    auto& pending = slots_[i].pending;
    // A breakpoint hit by a second vCPU while the first one's was reported may have been removed by gdb since:
    // the hit is stale, and gdb would not recognise it.
    if (pending && starts_with(pending->reason, "swbreak") && !has_z0(pending->pc)) {
      pending.reset();
    }
    if (pending) {
      return i;
    }
  }
  return std::nullopt;
}

bool GdbStub::resume(const std::vector<Action>& actions) {
  std::unique_lock lock(mutex_);
  if (auto index = take_pending_locked()) {
    // Another vCPU stopped before gdb heard of it: report that instead of running (as gdbserver does).
    auto event = *std::exchange(slots_[*index].pending, std::nullopt);
    lock.unlock();
    report_stop(*index, event);
    return true;
  }
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    auto& slot = slots_[i];
    const bool stepping = actions[i] == Action::Step;
    const bool emulating = actions[i] == Action::Continue && !stepped_.empty();
    if (auto rc = apply_guest_debug(slot, stepping, emulating); !rc) {
      lock.unlock();
      say(rc.error().message());
      send_packet("E05");
      return false;
    }
    slot.stepping = stepping;
    slot.emulating = emulating;
  }
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    slots_[i].may_run = actions[i] != Action::Stay;
  }
  stopped_ = false;
  running_ = true;
  lock.unlock();
  changed_.notify_all();
  return true;
}

void GdbStub::release_guest(bool resume_vcpus) {
  std::unique_lock lock(mutex_);
  if (!stopped_) {
    pause_all(lock);
  }
  for (auto& [address, breakpoint] : software_) {
    const std::byte original{breakpoint.original};
    if (auto rc = memory_.write(breakpoint.physical, std::span(&original, 1)); !rc) {
      say(fmt::format("restoring the byte under the breakpoint at {:#x}: {}", address, rc.error()));
    }
  }
  software_.clear();
  hardware_.clear();
  z0_in_debug_registers_.clear();
  stepped_.clear();
  for (auto& slot : slots_) {
    slot.pending.reset();
    slot.stepping = false;
    slot.emulating = false;
    if (!slot.ended) {
      if (auto rc = apply_guest_debug(slot, false, false); !rc) {
        say(rc.error().message());
      }
    }
    slot.may_run = resume_vcpus;
  }
  stopped_ = !resume_vcpus;
  running_ = false;
  lock.unlock();
  changed_.notify_all();
}

// ---------------------------------------------------------------------------------------------------------------------
// The connection

void GdbStub::serve() {
  while (true) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      say(fmt::format("poll: {}", std::strerror(errno)));
      return;
    }
    {
      std::lock_guard lock(mutex_);
      if (closing_) {
        return;
      }
    }
    if ((fds[1].revents & POLLIN) != 0) {
      drain_wake(wake_);  // a vCPU event with nobody attached: nothing to report
    }
    if ((fds[0].revents & POLLIN) == 0) {
      continue;
    }
    Fd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!connection) {
      continue;
    }
    const int one = 1;
    (void)::setsockopt(connection.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    connection_ = std::move(connection);
    decoder_ = PacketDecoder{};
    ack_mode_ = true;
    running_ = false;
    last_sent_.clear();
    {
      // gdb expects a stopped target when it attaches.
      std::unique_lock lock(mutex_);
      if (!stopped_) {
        pause_all(lock);
        last_stop_ = StopEvent{.signal = kSigint, .reason = {}, .pc = 0};
      } else {
        last_stop_ = StopEvent{.signal = kSigtrap, .reason = {}, .pc = 0};
      }
    }
    general_thread_ = step_thread_ = last_stop_thread_ = 0;
    say("gdb connected");
    serve_connection();
    if (killed_) {
      connection_.reset();
      say("gdb killed the guest");
      return;
    }
    // However it ended (detach, EOF, a broken socket), the guest runs on without breakpoints.
    connection_.reset();
    release_guest(true);
    say(fmt::format("gdb detached; the guest runs on (waiting for gdb on {})", where_));
  }
}

void GdbStub::serve_connection() {
  std::uint8_t buffer[4096];
  while (true) {
    pollfd fds[2] = {{connection_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      return;
    }
    {
      std::lock_guard lock(mutex_);
      if (closing_) {
        return;
      }
    }
    if ((fds[1].revents & POLLIN) != 0) {
      drain_wake(wake_);
      std::unique_lock lock(mutex_);
      if (running_) {
        auto index = take_pending_locked();
        const bool all_ended = std::all_of(slots_.begin(), slots_.end(), [](auto& s) { return s.ended; });
        if (index) {
          pause_all(lock);
          auto event = *std::exchange(slots_[*index].pending, std::nullopt);
          lock.unlock();
          report_stop(*index, event);
        } else if (all_ended) {
          // The guest is gone: it exited or the VMM stopped it ("exited normally"), or a vCPU died on an error such
          // as an emulation failure (gdb says "terminated with signal SIGSEGV"; the VMM prints the registers).
          const bool failed = std::any_of(slots_.begin(), slots_.end(), [](auto& s) { return s.failed; });
          running_ = false;
          lock.unlock();
          say(failed ? "a vCPU stopped on an error: the guest is gone" : "the guest is gone");
          send_packet(failed ? "X0b" : "W00");
          return;
        }
      }
    }
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
      continue;
    }
    const ssize_t n = ::read(connection_.get(), buffer, sizeof(buffer));
    if (n <= 0) {
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        continue;
      }
      return;  // gdb went away
    }
    for (auto& event : decoder_.feed(std::span(buffer, static_cast<std::size_t>(n)))) {
      switch (event.kind) {
        case RspEvent::Kind::Ack:
          break;
        case RspEvent::Kind::Nak:
          if (!last_sent_.empty()) {
            send_raw(last_sent_);
          }
          break;
        case RspEvent::Kind::BadChecksum:
        case RspEvent::Kind::Overflow:
          if (ack_mode_) {
            send_raw("-");
          }
          break;
        case RspEvent::Kind::Interrupt:
          if (running_) {
            std::unique_lock lock(mutex_);
            pause_all(lock);
            lock.unlock();
            report_stop(general_thread_, StopEvent{.signal = kSigint, .reason = {}, .pc = 0});
          }
          break;
        case RspEvent::Kind::Packet:
          if (ack_mode_) {
            send_raw("+");
          }
          if (!handle_packet(event.payload)) {
            return;
          }
          break;
      }
    }
  }
}

void GdbStub::send_raw(std::string_view bytes) {
  while (!bytes.empty() && connection_) {
    // MSG_NOSIGNAL: a gdb that vanished must not kill the VMM with SIGPIPE.
    const ssize_t n = ::send(connection_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return;  // the read side sees the end of the connection
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

void GdbStub::send_packet(std::string_view payload) {
  last_sent_ = frame(payload);
  send_raw(last_sent_);
}

void GdbStub::report_stop(std::size_t index, const StopEvent& event) {
  running_ = false;
  last_stop_thread_ = general_thread_ = step_thread_ = index;
  last_stop_ = event;
  send_packet(fmt::format("T{:02x}thread:{:x};{}", event.signal, index + 1, event.reason));
}

std::optional<std::size_t> GdbStub::thread_index(std::string_view id) const {
  // Thread ids are vCPU index + 1 (gdb reserves 0 for "any" and -1 for "all").
  if (id == "0" || id == "-1") {
    return general_thread_;
  }
  auto value = parse_hex_number(id);
  if (!value || *value == 0 || *value > slots_.size()) {
    return std::nullopt;
  }
  return static_cast<std::size_t>(*value - 1);
}

// ---------------------------------------------------------------------------------------------------------------------
// Packets

bool GdbStub::handle_packet(std::string_view packet) {
  if (packet.empty()) {
    send_packet("");
    return true;
  }
  if (running_ && packet[0] != 'q' && packet != "?") {
    // In all-stop mode gdb sends nothing but Ctrl-C while the target runs; anything touching a vCPU would wait for
    // KVM_RUN to return.
    send_packet("E10");
    return true;
  }
  const char command = packet[0];
  std::string_view args = packet.substr(1);
  switch (command) {
    case '?':
      send_packet(fmt::format("T{:02x}thread:{:x};{}", last_stop_.signal, last_stop_thread_ + 1, last_stop_.reason));
      return true;
    case 'q':
    case 'Q':
      if (packet == "QStartNoAckMode") {
        send_packet("OK");
        ack_mode_ = false;
        return true;
      }
      send_packet(handle_query(packet));
      return true;
    case 'H': {
      if (args.empty()) {
        send_packet("E01");
        return true;
      }
      auto index = thread_index(args.substr(1));
      if (!index) {
        send_packet("E02");
        return true;
      }
      (args[0] == 'g' ? general_thread_ : step_thread_) = *index;
      send_packet("OK");
      return true;
    }
    case 'T':
      send_packet(thread_index(args) ? "OK" : "E02");
      return true;
    case 'g':
      send_packet(registers_reply(true, args));
      return true;
    case 'p':
      send_packet(registers_reply(false, args));
      return true;
    case 'G':
      send_packet(write_registers(true, args));
      return true;
    case 'P':
      send_packet(write_registers(false, args));
      return true;
    case 'm':
      send_packet(read_memory(args));
      return true;
    case 'M':
      send_packet(write_memory(args));
      return true;
    case 'Z':
    case 'z':
      send_packet(breakpoint(packet, command == 'Z'));
      return true;
    case 'c':
    case 's':
    case 'C':
    case 'S': {
      // "c[ADDR]", "Csig[;ADDR]": resuming at another address is not supported (gdb sets RIP with 'P' instead).
      if ((command == 'c' || command == 's') ? !args.empty() : args.find(';') != std::string_view::npos) {
        send_packet("E01");
        return true;
      }
      std::vector<Action> actions(slots_.size(), Action::Continue);
      if (command == 's' || command == 'S') {
        std::fill(actions.begin(), actions.end(), Action::Stay);
        actions[step_thread_] = Action::Step;
      }
      (void)resume(actions);
      return true;
    }
    case 'v':
      if (packet == "vCont?") {
        send_packet("vCont;c;C;s;S");
      } else if (starts_with(packet, "vCont;")) {
        bool ok = true;
        auto actions = parse_vcont(packet.substr(6), ok);
        if (!ok) {
          send_packet("E01");
        } else {
          (void)resume(actions);
        }
      } else if (starts_with(packet, "vKill")) {
        send_packet("OK");
        kill();
        return false;
      } else {
        send_packet("");  // vMustReplyEmpty, vFile, vRun...: not supported
      }
      return true;
    case 'D':
      send_packet("OK");
      return false;
    case 'k':
      kill();  // no reply: gdb does not wait for one
      return false;
    case 'X':
      send_packet("");  // binary writes: gdb falls back to 'M'
      return true;
    default:
      send_packet("");
      return true;
  }
}

void GdbStub::kill() {
  // Without a way to end the VMM, a kill is a detach.
  killed_ = options_.on_kill != nullptr;
  if (killed_) {
    options_.on_kill();
  }
}

std::vector<GdbStub::Action> GdbStub::parse_vcont(std::string_view text, bool& ok) const {
  // "ACTION[:THREAD];ACTION[:THREAD]...": the first action that names a thread (or names none) decides for it.
  std::vector<std::optional<Action>> chosen(slots_.size());
  while (!text.empty()) {
    std::string_view item = take_until(text, ';');
    std::string_view action = take_until(item, ':');
    Action what = Action::Continue;
    if (action == "c" || (action.size() == 3 && action[0] == 'C')) {
      what = Action::Continue;
    } else if (action == "s" || (action.size() == 3 && action[0] == 'S')) {
      what = Action::Step;
    } else {
      ok = false;
      return {};
    }
    if (item.empty() || item == "-1") {
      for (auto& choice : chosen) {
        if (!choice) {
          choice = what;
        }
      }
      continue;
    }
    auto index = thread_index(item);
    if (!index || item == "0") {
      ok = false;
      return {};
    }
    if (!chosen[*index]) {
      chosen[*index] = what;
    }
  }
  std::vector<Action> actions;
  for (auto& choice : chosen) {
    actions.push_back(choice.value_or(Action::Stay));
  }
  return actions;
}

std::string GdbStub::handle_query(std::string_view packet) {
  if (starts_with(packet, "qSupported")) {
    return fmt::format("PacketSize={:x};qXfer:features:read+;QStartNoAckMode+;swbreak+;hwbreak+;vContSupported+",
                       kMaxPacketBytes);
  }
  if (starts_with(packet, "qXfer:features:read:")) {
    std::string_view rest = packet.substr(20);
    const std::string_view annex = take_until(rest, ':');
    if (annex != "target.xml") {
      return "E00";
    }
    const std::string_view offset_text = take_until(rest, ',');
    auto offset = parse_hex_number(offset_text);
    auto length = parse_hex_number(rest);
    if (!offset || !length) {
      return "E01";
    }
    static const std::string xml = x86_64_target_xml();
    if (*offset >= xml.size()) {
      return "l";
    }
    const std::size_t count = std::min<std::uint64_t>({*length, xml.size() - *offset, kMaxPacketBytes / 2});
    const bool last = *offset + count >= xml.size();
    return (last ? "l" : "m") + xml.substr(*offset, count);
  }
  if (packet == "qAttached" || starts_with(packet, "qAttached:")) {
    return "1";  // gdb's "quit" then detaches instead of killing the VM
  }
  if (packet == "qC") {
    return fmt::format("QC{:x}", general_thread_ + 1);
  }
  if (packet == "qfThreadInfo") {
    std::string reply = "m";
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      reply += fmt::format("{}{:x}", i == 0 ? "" : ",", i + 1);
    }
    return reply;
  }
  if (packet == "qsThreadInfo") {
    return "l";
  }
  if (starts_with(packet, "qThreadExtraInfo,")) {
    auto index = thread_index(packet.substr(17));
    if (!index) {
      return "E02";
    }
    return hex_text(fmt::format("vCPU {}", slots_[*index].vcpu->id()));
  }
  if (starts_with(packet, "qSymbol")) {
    return "OK";
  }
  return "";
}

// ---------------------------------------------------------------------------------------------------------------------
// Registers and memory

Result<X86Registers> GdbStub::get_registers(std::size_t index) const {
  X86Registers state;
  const auto& vcpu = *slots_[index].vcpu;
  auto regs = vcpu.get_regs();
  if (!regs) {
    return std::unexpected(regs.error());
  }
  auto sregs = vcpu.get_sregs();
  if (!sregs) {
    return std::unexpected(sregs.error());
  }
  state.regs = *regs;
  state.sregs = *sregs;
  if (auto rc = VMM_IOCTL(vcpu.fd(), KVM_GET_FPU, &state.fpu); !rc) {
    return std::unexpected(rc.error());
  }
  return state;
}

std::string GdbStub::registers_reply(bool all, std::string_view args) {
  auto state = get_registers(general_thread_);
  if (!state) {
    say(state.error().message());
    return "E05";
  }
  if (all) {
    return to_hex(encode_registers(*state));
  }
  auto number = parse_hex_number(args);
  if (!number) {
    return "E01";
  }
  auto bytes = read_register(*state, *number);
  return bytes ? to_hex(*bytes) : "E02";
}

std::string GdbStub::write_registers(bool all, std::string_view args) {
  auto state = get_registers(general_thread_);
  if (!state) {
    say(state.error().message());
    return "E05";
  }
  const X86Registers before = *state;
  if (all) {
    auto bytes = from_hex(args);
    if (!bytes || !decode_registers(*state, *bytes)) {
      return "E01";
    }
  } else {
    std::string_view number_text = take_until(args, '=');
    auto number = parse_hex_number(number_text);
    auto bytes = from_hex(args);
    if (!number || !bytes || !write_register(*state, *number, *bytes)) {
      return "E01";
    }
  }
  // Only what changed goes back: KVM_SET_SREGS with unchanged values still resets some hidden state.
  auto& vcpu = *slots_[general_thread_].vcpu;
  if (std::memcmp(&before.regs, &state->regs, sizeof(kvm_regs)) != 0 && !vcpu.set_regs(state->regs)) {
    return "E05";
  }
  if (std::memcmp(&before.sregs, &state->sregs, sizeof(kvm_sregs)) != 0 && !vcpu.set_sregs(state->sregs)) {
    return "E05";
  }
  if (std::memcmp(&before.fpu, &state->fpu, sizeof(kvm_fpu)) != 0 && !VMM_IOCTL(vcpu.fd(), KVM_SET_FPU, &state->fpu)) {
    return "E05";
  }
  return "OK";
}

Result<PagingState> GdbStub::paging_of(std::size_t index) const {
  auto sregs = slots_[index].vcpu->get_sregs();
  if (!sregs) {
    return std::unexpected(sregs.error());
  }
  return PagingState::from(*sregs);
}

Result<Translation> GdbStub::translate_for(std::size_t index, std::uint64_t linear) const {
  auto paging = paging_of(index);
  if (!paging) {
    return std::unexpected(paging.error());
  }
  return translate(memory_, *paging, linear);
}

std::uint64_t GdbStub::for_each_page(
    std::uint64_t linear, std::uint64_t length,
    const std::function<bool(memory::GuestAddress, std::uint64_t, std::uint64_t)>& visit) const {
  // One KVM_GET_SREGS per request: the vCPU is held, so its paging registers cannot change in between.
  auto paging = paging_of(general_thread_);
  if (!paging) {
    return 0;
  }
  std::uint64_t done = 0;
  while (done < length) {
    const std::uint64_t address = linear + done;
    auto where = translate(memory_, *paging, address);
    if (!where) {
      break;
    }
    // Up to the end of the page (or all of it without paging).
    std::uint64_t chunk = length - done;
    if (where->page_size != 0) {
      chunk = std::min(chunk, where->page_size - (address & (where->page_size - 1)));
    }
    if (!visit(where->physical, done, chunk)) {
      break;
    }
    done += chunk;
  }
  return done;
}

namespace {

struct AddressLength {
  std::uint64_t address = 0;
  std::uint64_t length = 0;
};

std::optional<AddressLength> parse_address_length(std::string_view text) {
  std::string_view address_text = take_until(text, ',');
  auto address = parse_hex_number(address_text);
  auto length = parse_hex_number(text);
  if (!address || !length) {
    return std::nullopt;
  }
  return AddressLength{*address, *length};
}

}  // namespace

std::string GdbStub::read_memory(std::string_view args) {
  auto request = parse_address_length(args);
  if (!request || request->length > kMaxPacketBytes / 2) {
    return "E01";
  }
  std::vector<std::uint8_t> bytes(request->length);
  const std::uint64_t read = for_each_page(
      request->address, request->length, [&](memory::GuestAddress physical, std::uint64_t offset, std::uint64_t chunk) {
        auto into = std::as_writable_bytes(std::span(bytes).subspan(offset, chunk));
        return memory_.read(physical, into).has_value();
      });
  bytes.resize(read);  // a partial reply when the range runs into unmapped memory, as gdb expects
  if (bytes.empty() && request->length > 0) {
    return "E14";  // EFAULT: nothing readable there
  }
  // gdb sees the program, not the int3 bytes standing in for its breakpoints.
  std::lock_guard lock(mutex_);
  for (const auto& [at, breakpoint] : software_) {
    if (at >= request->address && at - request->address < bytes.size()) {
      bytes[at - request->address] = breakpoint.original;
    }
  }
  return to_hex(bytes);
}

std::string GdbStub::write_memory(std::string_view args) {
  std::string_view head = take_until(args, ':');
  auto request = parse_address_length(head);
  auto bytes = from_hex(args);
  if (!request || !bytes || bytes->size() != request->length) {
    return "E01";
  }
  const std::uint64_t written = for_each_page(
      request->address, request->length, [&](memory::GuestAddress physical, std::uint64_t offset, std::uint64_t chunk) {
        return memory_.write(physical, std::as_bytes(std::span(*bytes).subspan(offset, chunk))).has_value();
      });
  return written == request->length ? "OK" : "E14";
}

std::string GdbStub::breakpoint(std::string_view packet, bool insert) {
  // "Z<type>,<addr>,<kind>": kind is the breakpoint's length for x86 (1) or the watched length.
  std::string_view args = packet.substr(1);
  std::string_view type_text = take_until(args, ',');
  auto request = parse_address_length(args);
  if (type_text.size() != 1 || type_text[0] < '0' || type_text[0] > '4' || !request) {
    return "E01";
  }
  const char type = type_text[0];
  std::lock_guard lock(mutex_);

  // An emulated one (checked after each single step) of this type and address?
  auto stepped = std::ranges::find_if(stepped_, [&](const SteppedBreakpoint& b) {
    return b.type == type && b.address == request->address && (type <= '1' || b.length == request->length);
  });
  if (!insert) {
    if (stepped != stepped_.end()) {
      stepped_.erase(stepped);
      return "OK";
    }
    if (type == '0') {
      if (auto found = software_.find(request->address); found != software_.end()) {
        const std::byte original{found->second.original};
        if (!memory_.write(found->second.physical, std::span(&original, 1))) {
          return "E14";
        }
        software_.erase(found);
        return "OK";
      }
      auto in_dr = std::ranges::find(z0_in_debug_registers_, request->address);
      if (in_dr == z0_in_debug_registers_.end() || !hardware_.remove(HardwareKind::Execution, request->address, 1)) {
        return "E02";
      }
      z0_in_debug_registers_.erase(in_dr);
      return "OK";
    }
    const auto length = type == '1' ? 1 : request->length;
    return hardware_.remove(static_cast<HardwareKind>(type - '0'), request->address, length) ? "OK" : "E02";
  }
  if (stepped != stepped_.end() || (type == '0' && has_z0(request->address))) {
    return "OK";  // already there (gdb re-inserts after a stop)
  }

  // Z0: int3 in guest memory where KVM traps it; else a debug register; else emulated.
  if (type == '0' && support_.software_breakpoint) {
    auto where = translate_for(general_thread_, request->address);
    if (!where || !plant(request->address, where->physical, kInt3)) {
      return "E14";
    }
    return "OK";
  }
  const bool trapped = (type <= '1' && support_.hardware_breakpoint) || (type >= '2' && support_.hardware_watchpoint);
  if (trapped) {
    const auto kind = type == '0' ? HardwareKind::Execution : static_cast<HardwareKind>(type - '0');
    const auto length = type <= '1' ? 1 : request->length;
    if (hardware_.insert(kind, request->address, length)) {
      if (type == '0') {
        z0_in_debug_registers_.push_back(request->address);
      }
      return "OK";
    }
    if (type >= '2') {
      return "E28";  // out of debug registers; gdb then says it cannot insert the watchpoint
    }
  }
  if (type == '3' || type == '4') {
    return "E22";  // reads leave no trace to compare after a step: not emulated
  }
  // Z0 with nothing trapped but port I/O: an OUT in place of the instruction's first byte. Where the address is not
  // mapped yet (Linux's start_kernel before the kernel's page tables), single-step until it is, then patch.
  if (type == '0') {
    if (auto where = translate_for(general_thread_, request->address); where) {
      return plant(request->address, where->physical, kOutDxAl) ? "OK" : "E14";
    }
  }
  SteppedBreakpoint emulated{.type = type,
                             .address = request->address,
                             .length = request->length,
                             .physical = std::nullopt,
                             .value = {},
                             .plant_when_mapped = type == '0'};
  if (type == '2') {
    if (request->length == 0 || request->length > 64) {
      return "E22";
    }
    auto where = translate_for(general_thread_, request->address);
    emulated.value.resize(request->length);
    // The watched bytes must sit in one page to be checked through one physical address.
    if (!where ||
        (where->page_size != 0 && (request->address & (where->page_size - 1)) + request->length > where->page_size) ||
        !memory_.read(where->physical, std::as_writable_bytes(std::span(emulated.value)))) {
      return "E14";
    }
    emulated.physical = where->physical;
  }
  stepped_.push_back(std::move(emulated));
  return "OK";
}

}  // namespace vmm::gdb
