#include "gdb_session.hpp"

#include <fmt/format.h>

namespace vmm::stage03 {

Result<std::unique_ptr<gdb::GdbStub>> attach_gdb_stub(SerialVm& vm, std::string_view endpoint,
                                                      std::string_view elf_path, std::function<void()> on_kill) {
  auto parsed = gdb::GdbEndpoint::parse(endpoint);
  if (!parsed) {
    return std::unexpected(parsed.error());
  }
  auto stub = gdb::GdbStub::listen(
      *parsed, {&vm.vm().vcpu()}, vm.vm().memory(),
      {.start_paused = true, .on_kill = std::move(on_kill), .log = nullptr, .support = std::nullopt});
  if (!stub) {
    return std::unexpected(stub.error());
  }
  vm.set_debug_hook(stub->get());
  fmt::print(stderr, "gdb stub: attach with: gdb -ex '{}' {}\n", (*stub)->target_remote_command(), elf_path);
  return stub;
}

Result<std::unique_ptr<gdb::GdbStub>> attach_gdb_stub(SerialVm& vm, std::string_view endpoint,
                                                      std::string_view elf_path, GuestOutcome& outcome) {
  if (endpoint.empty()) {
    return nullptr;
  }
  return attach_gdb_stub(vm, endpoint, elf_path, [&outcome] { outcome.ended("gdb killed the guest"); });
}

}  // namespace vmm::stage03
