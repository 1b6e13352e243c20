#pragma once
/// @file
/// @brief `GdbStub`: the VMM side of gdb's remote serial protocol. gdb connects over TCP or a Unix socket and stops,
///        steps and inspects the guest's vCPUs, which the stub holds through `machine::VcpuDebugHook`.

#include <pthread.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "vmm/error.hpp"
#include "vmm/fd.hpp"
#include "vmm/gdb/debug_registers.hpp"
#include "vmm/gdb/guest_debug_probe.hpp"
#include "vmm/gdb/page_walk.hpp"
#include "vmm/gdb/rsp.hpp"
#include "vmm/gdb/x86_registers.hpp"
#include "vmm/kvm/vcpu.hpp"
#include "vmm/machine/vcpu_loop.hpp"
#include "vmm/memory/guest_memory.hpp"

namespace vmm::gdb {

/// @brief Where the stub listens: `tcp:PORT` (127.0.0.1), `tcp:HOST:PORT` or `unix:PATH`.
struct GdbEndpoint {
  /// @brief The two transports.
  enum class Kind { Tcp, Unix };
  Kind kind = Kind::Tcp;           ///< Which transport.
  std::string host = "127.0.0.1";  ///< TCP: the address to bind (a numeric IPv4 address). Loopback unless asked:
                                   ///< whoever connects owns the guest.
  std::uint16_t port = 0;          ///< TCP: the port (0: the kernel picks one; `GdbStub::where` says which).
  std::string path;                ///< Unix: the socket's path (at most 107 bytes).

  /// @brief Parses the `--gdb` argument; the error says what is accepted.
  [[nodiscard]] static Result<GdbEndpoint> parse(std::string_view text);
};

/// @brief How the stub behaves.
struct GdbStubOptions {
  /// Hold every vCPU before its first instruction until gdb continues (the `--gdb` default), or let the guest run
  /// until gdb connects (then it stops it).
  bool start_paused = true;
  /// gdb's `kill` (the 'k' packet): end the VMM. Called on the stub's thread. Null: treated as a detach.
  std::function<void()> on_kill;
  /// Status lines ("gdb connected", "gdb detached"). Null: stderr, prefixed "gdb stub: ".
  std::function<void(std::string_view)> log;
  /// What this KVM can trap; null: `probe_guest_debug()` finds out when the stub starts.
  std::optional<GuestDebugSupport> support;
};

/// @brief A gdb stub for one VM: all-stop, one gdb at a time, vCPUs as threads 1..N.
///
/// Threads: the stub runs its own thread, which accepts gdb, reads packets and answers them. vCPU threads meet the
/// stub in `before_run` (where a stopped vCPU waits) and `on_debug_exit`. gdb's commands that touch a vCPU (registers,
/// guest debug settings) run on the stub's thread while every vCPU waits in `before_run`, never inside KVM_RUN.
///
/// What it serves: qSupported and the x86-64 target description (qXfer:features:read), '?', 'g'/'G', 'p'/'P',
/// 'm'/'M' on guest-virtual addresses (walked through the selected vCPU's page tables; physical before paging),
/// Z0/z0 (int3 written into guest memory, KVM_GUESTDBG_USE_SW_BP), Z1-Z4 (DR0-DR3, KVM_GUESTDBG_USE_HW_BP), 's' and
/// 'c' (KVM_GUESTDBG_SINGLESTEP), vCont, Ctrl-C, qfThreadInfo/qsThreadInfo/qC/qThreadExtraInfo/T/H, qAttached,
/// QStartNoAckMode, 'D' and 'k'. Anything else gets the empty reply ("not supported").
///
/// Where KVM cannot trap an event (see `probe_guest_debug`), the stub emulates it: int3 breakpoints become debug
/// registers when those work, else an OUT DX,AL patched over the instruction (a port write exits on every KVM;
/// `on_port_write` tells it from the guest's own), single-stepping until the guest maps the address if it is not
/// mapped yet. Write watchpoints nothing traps are checked after every single step (one instruction per exit).
///
/// A debugger is a peer, not a trusted part of the VMM: bad checksums are NAKed, malformed packets get an error
/// reply, oversized ones are dropped, and a gdb that disappears (even mid-step) is treated as a detach: breakpoints
/// come out of guest memory and the guest runs on. Another gdb may then connect.
class GdbStub final : public machine::VcpuDebugHook {
 public:
  /// @brief Binds `endpoint` and starts the stub's thread. `vcpus` (in vCPU id order) and `memory` must outlive the
  ///        stub, and the stub must outlive the vCPU loops it is the hook of.
  [[nodiscard]] static Result<std::unique_ptr<GdbStub>> listen(const GdbEndpoint& endpoint,
                                                               std::vector<kvm::Vcpu*> vcpus,
                                                               const memory::GuestMemory& memory,
                                                               GdbStubOptions options = {});
  GdbStub(const GdbStub&) = delete;
  GdbStub& operator=(const GdbStub&) = delete;
  GdbStub(GdbStub&&) = delete;
  GdbStub& operator=(GdbStub&&) = delete;
  /// @brief Takes breakpoints out of guest memory, lets every vCPU go and joins the stub's thread.
  ~GdbStub() override;

  /// @brief Where gdb connects: "tcp:127.0.0.1:1234" or "unix:/path" (with the port the kernel chose).
  [[nodiscard]] const std::string& where() const noexcept { return where_; }
  /// @brief The command that attaches gdb to this stub ("target remote 127.0.0.1:1234").
  [[nodiscard]] std::string target_remote_command() const;

  void before_run(kvm::Vcpu& vcpu, const std::atomic<bool>& stop) override;
  void on_debug_exit(kvm::Vcpu& vcpu, const kvm::DebugExit& exit) override;
  bool on_port_write(kvm::Vcpu& vcpu, const kvm::IoExit& io) override;
  void on_loop_end(kvm::Vcpu& vcpu, bool normal) override;

 private:
  // Why a vCPU stopped, as a stop reply tells gdb.
  struct StopEvent {
    int signal = 5;      // SIGTRAP; SIGINT for Ctrl-C
    std::string reason;  // "swbreak:;", "hwbreak:;", "watch:ADDR;", ... or empty (a step, the initial stop)
    std::uint64_t pc = 0;
  };
  struct VcpuSlot {
    kvm::Vcpu* vcpu = nullptr;
    std::optional<pthread_t> thread;  // known once its loop first calls before_run
    bool may_run = false;             // false: before_run holds it
    bool parked = false;              // waiting in before_run
    bool ended = false;               // its loop returned
    bool failed = false;              // ... on an error or a fatal exit
    bool kicked = false;              // we set immediate_exit and must clear it
    bool stepping = false;            // resumed with 's'
    bool emulating = false;           // resumed with 'c' but single-stepped to check emulated breakpoints
    std::uint32_t control = 0;        // the KVM_SET_GUEST_DEBUG flags it has now
    std::array<std::uint64_t, 4> debug_addresses{};
    std::uint64_t dr7 = 0;
    std::optional<StopEvent> pending;  // a debug exit gdb has not heard about yet
  };
  // A byte of guest code replaced: int3 where KVM traps it, else OUT DX,AL (every port write exits to the VMM).
  struct SoftwareBreakpoint {
    memory::GuestAddress physical;
    std::uint8_t original = 0;
    std::uint8_t opcode = 0;
  };
  // A breakpoint or write watchpoint checked after each single step, where KVM cannot trap it.
  struct SteppedBreakpoint {
    char type = '0';  // the Z packet's type digit
    std::uint64_t address = 0;
    std::uint64_t length = 0;
    std::optional<memory::GuestAddress> physical;  // watchpoints: the watched bytes...
    std::vector<std::uint8_t> value;               // ...and their value when last checked
    bool plant_when_mapped = false;                // Z0 on an unmapped address: patched once the guest maps it
  };
  // One resume request per vCPU: from 'c', 's' or a vCont action.
  enum class Action { Stay, Continue, Step };

  GdbStub(Fd listener, std::string where, std::string unix_path, std::vector<kvm::Vcpu*> vcpus,
          const memory::GuestMemory& memory, GdbStubOptions options, Fd wake);
  void say(std::string_view line) const;
  void serve();
  void serve_connection();
  bool handle_packet(std::string_view packet);  // false: close the connection
  void send_packet(std::string_view payload);
  void send_raw(std::string_view bytes);
  [[nodiscard]] std::string handle_query(std::string_view packet);
  [[nodiscard]] std::string read_memory(std::string_view args);
  [[nodiscard]] std::string write_memory(std::string_view args);
  [[nodiscard]] std::string breakpoint(std::string_view packet, bool insert);
  [[nodiscard]] std::string registers_reply(bool all, std::string_view args);
  [[nodiscard]] std::string write_registers(bool all, std::string_view args);
  [[nodiscard]] bool resume(const std::vector<Action>& actions);  // false: an error was sent
  [[nodiscard]] std::vector<Action> parse_vcont(std::string_view actions, bool& ok) const;
  [[nodiscard]] Result<X86Registers> get_registers(std::size_t index) const;
  [[nodiscard]] Result<PagingState> paging_of(std::size_t index) const;
  [[nodiscard]] Result<Translation> translate_for(std::size_t index, std::uint64_t linear) const;
  // Walks [linear, linear + length) page by page through the 'Hg' vCPU's tables, calling `visit(physical, offset,
  // chunk)` per piece; stops at an unmapped page or when `visit` returns false. Returns the bytes visited.
  std::uint64_t for_each_page(
      std::uint64_t linear, std::uint64_t length,
      const std::function<bool(memory::GuestAddress, std::uint64_t, std::uint64_t)>& visit) const;
  [[nodiscard]] bool has_z0(std::uint64_t address) const;  // a Z0 breakpoint, however it is served
  void kill();
  void pause_all(std::unique_lock<std::mutex>& lock);
  void report_stop(std::size_t index, const StopEvent& event);
  // On a vCPU's thread: records why it stopped, holds it at its next before_run and wakes the stub's thread.
  void hold_with_stop(std::unique_lock<std::mutex>& lock, VcpuSlot& slot, StopEvent event);
  std::optional<std::size_t> take_pending_locked();
  void release_guest(bool resume_vcpus);
  [[nodiscard]] Result<void> apply_guest_debug(VcpuSlot& slot, bool stepping, bool emulating);
  [[nodiscard]] std::optional<StopEvent> check_stepped(std::size_t index, const kvm::DebugExit& exit);
  // Replaces the byte at `physical` with `opcode` and records it as Z0 at `linear`; false if memory refuses.
  [[nodiscard]] bool plant(std::uint64_t linear, memory::GuestAddress physical, std::uint8_t opcode);
  // KVM_SET_GUEST_DEBUG again with the slot's settings plus `extra` (INJECT_BP/INJECT_DB): on the vCPU's thread.
  [[nodiscard]] static Result<void> rearm(const VcpuSlot& slot, std::uint32_t extra = 0);
  [[nodiscard]] std::optional<std::size_t> thread_index(std::string_view id) const;
  [[nodiscard]] std::size_t slot_of(const kvm::Vcpu& vcpu) const;

  Fd listener_;
  std::string where_;
  std::string unix_path_;  // unlinked on destruction
  const memory::GuestMemory& memory_;
  GdbStubOptions options_;
  Fd wake_;  // eventfd: a vCPU stopped or ended, or the stub is closing

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<VcpuSlot> slots_;
  bool closing_ = false;
  bool stopped_ = false;  // gdb sees the target stopped (every vCPU held)
  std::map<std::uint64_t, SoftwareBreakpoint> software_;
  DebugRegisters hardware_;
  std::vector<std::uint64_t> z0_in_debug_registers_;  // Z0 breakpoints served by DR0-DR3 (int3 cannot be trapped)
  std::vector<SteppedBreakpoint> stepped_;
  GuestDebugSupport support_;
  bool block_irq_supported_ = true;

  // Touched by the stub's thread only.
  Fd connection_;
  PacketDecoder decoder_;
  bool ack_mode_ = true;
  bool running_ = false;  // gdb waits for a stop reply
  std::string last_sent_;
  std::size_t general_thread_ = 0;  // 'Hg': whose registers and page tables
  std::size_t step_thread_ = 0;     // 'Hc': whom 's' steps
  std::size_t last_stop_thread_ = 0;
  StopEvent last_stop_;
  bool killed_ = false;

  std::thread thread_;
};

}  // namespace vmm::gdb
