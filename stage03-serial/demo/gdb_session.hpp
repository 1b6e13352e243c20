#pragma once
/// @file
/// @brief `--gdb` for the stage demos: a gdb stub on a `SerialVm`'s vCPU, and the command that attaches gdb.

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "guest_outcome.hpp"
#include "serial_vm.hpp"
#include "vmm/gdb/stub.hpp"

namespace vmm::stage03 {

/// @brief The `--gdb` option's help text, shared by every demo that offers it.
inline constexpr const char* kGdbOptionHelp =
    "Wait for gdb before the guest's first instruction: tcp:PORT (127.0.0.1), tcp:HOST:PORT or unix:PATH";

/// @brief Listens for gdb on `endpoint`, makes the stub `vm`'s debug hook (call before `vm.start`) and prints on
///        stderr how to attach gdb with the guest's symbols (`elf_path`). `on_kill` ends the demo (gdb's `kill`).
[[nodiscard]] Result<std::unique_ptr<gdb::GdbStub>> attach_gdb_stub(SerialVm& vm, std::string_view endpoint,
                                                                    std::string_view elf_path,
                                                                    std::function<void()> on_kill);

/// @brief `--gdb` in a demo that waits through `GuestOutcome` (stage04 on): no stub when `endpoint` is empty,
///        else `attach_gdb_stub` with gdb's `kill` ending the run through `outcome` (status 0).
[[nodiscard]] Result<std::unique_ptr<gdb::GdbStub>> attach_gdb_stub(SerialVm& vm, std::string_view endpoint,
                                                                    std::string_view elf_path, GuestOutcome& outcome);

}  // namespace vmm::stage03
