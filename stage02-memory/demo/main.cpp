// stage02-memory: a 64-bit guest on memory the VMM laid out.
//
// The VMM builds guest RAM (x86 layout), registers it as KVM slots with dirty logging, fills a buffer, writes the
// boot info, GDT and page tables, and starts the vCPU directly in long mode. The guest checksums the buffer and
// writes the result and a message where it was told. The VMM prints both, and the pages the guest dirtied.
//
//   stage02-memory [--trace] [--memfd] [--hugepages] [--ram MiB] [--input-size BYTES]
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>

#include <cstring>
#include <guest/checksum.hpp>
#include <string>
#include <vector>

#include "long_mode_vm.hpp"

int main(int argc, char** argv) {
  using namespace vmm;
  CLI::App app{"stage02-memory: a 64-bit guest checksums a buffer the VMM placed in guest memory"};
  stage02::LongModeVmConfig config;
  std::uint64_t ram_mib = 16;
  std::size_t input_size = 4096;
  app.add_flag("--trace", config.trace, "Print every KVM exit to stderr as it happens");
  app.add_flag("--memfd", config.memfd, "Back guest RAM with a memfd instead of anonymous memory");
  app.add_flag("--hugepages", config.hugepages, "Ask for huge pages (hugetlbfs, else transparent)");
  app.add_option("--ram", ram_mib, "Guest RAM in MiB, from 0")
      ->check(CLI::Range(std::uint64_t{4}, stage02::layout::kMaxRam >> 20))
      ->capture_default_str();
  app.add_option("--input-size", input_size, "Bytes for the guest to checksum")
      ->check(CLI::Range(std::size_t{1}, static_cast<std::size_t>(stage02::layout::kMaxInput)))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  config.ram_size = ram_mib << 20;

  auto vm = stage02::LongModeVm::create(guest::checksum(), config);
  if (!vm) {
    fmt::print(stderr, "stage02-memory: {}\n", vm.error());
    return 1;
  }
  const std::vector<std::byte> input = stage02::input_pattern(input_size, 7);
  if (auto rc = vm->set_input(input); !rc) {
    fmt::print(stderr, "stage02-memory: {}\n", rc.error());
    return 1;
  }
  for (const auto& region : vm->memory().regions()) {
    fmt::print("region     {} -> host {} ({})\n", region.range(), static_cast<void*>(region.host_address()),
               region.fd().valid() ? "memfd" : "anonymous");
  }

  auto outcome = vm->run();
  if (!outcome) {
    fmt::print(stderr, "stage02-memory: {}\n", outcome.error());
    return 1;
  }
  fmt::print("guest said {}", outcome->serial_output);
  if (outcome->reason != stage01::StopReason::Halted) {
    fmt::print(stderr, "stage02-memory: guest stopped: {}\n{}", stage01::to_string(outcome->reason), outcome->detail);
    return 1;
  }

  auto result = vm->memory().read_obj<std::uint64_t>(memory::GuestAddress(stage02::layout::kResult));
  std::string message(stage02::layout::kMessageSize, '\0');
  auto read =
      vm->memory().read(memory::GuestAddress(stage02::layout::kMessage), std::as_writable_bytes(std::span(message)));
  if (!result || !read) {
    fmt::print(stderr, "stage02-memory: {}\n", !result ? result.error() : read.error());
    return 1;
  }
  message.resize(std::strlen(message.c_str()));
  const std::uint64_t expected = stage02::fnv1a64(input);
  fmt::print("checksum   {:#018x} (the VMM computes {:#018x}: {})\n", *result, expected,
             *result == expected ? "match" : "MISMATCH");
  fmt::print("message    \"{}\"\n", message);

  auto dirty = vm->dirty_pages();
  if (!dirty) {
    fmt::print(stderr, "stage02-memory: {}\n", dirty.error());
    return 1;
  }
  std::vector<std::string> pages;
  for (auto page : dirty->dirty_pages()) {
    pages.push_back(fmt::format("{}", page));
  }
  fmt::print("dirtied    {} page(s): {}\n", pages.size(), fmt::join(pages, " "));

  const auto status = vm->report().exit_status;
  fmt::print("exit       {}\n", status ? (*status == 0 ? "PASS" : fmt::format("FAIL ({})", *status)) : "none");
  return status == 0u && *result == expected ? 0 : 1;
}
