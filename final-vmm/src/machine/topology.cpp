#include "vmm/machine/topology.hpp"

#include <fmt/format.h>

namespace vmm::machine {
namespace {

// Graphviz strings: quotes and backslashes escaped, newlines as \n line breaks in labels.
std::string quoted(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
    }
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

}  // namespace

std::string to_dot(const Topology& t) {
  std::string out;
  auto line = [&out](std::string_view text) {
    out.append(text);
    out.push_back('\n');
  };
  line("digraph vmm {");
  line("  rankdir=LR;");
  line("  node [shape=box, fontname=\"monospace\", fontsize=10];");
  line(fmt::format("  kvm [label={}, shape=box3d];", quoted(fmt::format("KVM VM\\n{} MiB RAM", t.ram_bytes >> 20))));
  line("  irqchip [label=\"in-kernel irqchip\\nPIC, IOAPIC, LAPICs\\nPIT\", shape=component];");
  line("  kvm -> irqchip;");
  for (std::uint32_t i = 0; i < t.vcpus; ++i) {
    line(fmt::format("  vcpu{} [label={}, shape=ellipse];", i, quoted(fmt::format("vCPU {}\\nAPIC ID {}", i, i))));
    line(fmt::format("  kvm -> vcpu{};", i));
    line(fmt::format("  irqchip -> vcpu{} [style=dotted];", i));
  }
  line("  io [label=\"I/O bus\", shape=cds];");
  line("  mmio [label=\"MMIO bus\", shape=cds];");
  line("  kvm -> io;");
  line("  kvm -> mmio;");
  for (std::size_t i = 0; i < t.bus_devices.size(); ++i) {
    const auto& d = t.bus_devices[i];
    line(fmt::format("  bus{} [label={}];", i,
                     quoted(fmt::format("{}\\n{:#x}-{:#x}", d.name, d.base, d.base + d.size - 1))));
    line(fmt::format("  {} -> bus{};", d.bus == "io" ? "io" : "mmio", i));
  }
  line("  subgraph cluster_pci {");
  line("    label=\"PCI bus 0\";");
  for (const auto& f : t.pci) {
    const auto id = fmt::format("pci{:02x}", f.slot);
    std::string label = fmt::format("00:{:02x}.0 {:04x}:{:04x}\\n{}", f.slot, f.vendor, f.device, f.name);
    if (!f.backend.empty()) {
      label += "\\n" + f.backend;
    }
    line(fmt::format("    {} [label={}, style=rounded];", id, quoted(label)));
  }
  line("  }");
  for (const auto& f : t.pci) {
    const auto id = fmt::format("pci{:02x}", f.slot);
    line(fmt::format("  io -> {} [label=\"conf1 0xcf8\", style=dashed];", id));
    for (const auto& bar : f.bars) {
      const auto bar_id = fmt::format("{}_bar{}", id, bar.index);
      line(fmt::format(
          "  {} [label={}, shape=note];", bar_id,
          quoted(fmt::format("BAR{} {}\\n{:#x} +{:#x}", bar.index, bar.io ? "I/O" : "MMIO", bar.base, bar.size))));
      line(fmt::format("  {} -> {};", bar.io ? "io" : "mmio", bar_id));
      line(fmt::format("  {} -> {};", bar_id, id));
    }
    for (const auto& v : f.vectors) {
      const auto vec_id = fmt::format("{}_msix{}", id, v.vector);
      std::string label = fmt::format("MSI-X {}", v.vector);
      if (v.gsi) {
        label += fmt::format("\\nGSI {}", *v.gsi);
      }
      if (v.address && v.data) {
        label += fmt::format("\\n{:#x}/{:#x}", *v.address, *v.data);
      }
      line(fmt::format("  {} [label={}, shape=cds];", vec_id, quoted(label)));
      line(fmt::format("  {} -> {};", id, vec_id));
      if (v.address) {
        line(fmt::format("  {} -> irqchip [style=dotted];", vec_id));
      }
    }
  }
  line("}");
  return out;
}

}  // namespace vmm::machine
