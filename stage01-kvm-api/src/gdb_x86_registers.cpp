#include <fmt/format.h>

#include <array>
#include <cstring>

#include "vmm/gdb/x86_registers.hpp"

namespace vmm::gdb {
namespace {

constexpr std::string_view kCore = "org.gnu.gdb.i386.core";
constexpr std::string_view kSse = "org.gnu.gdb.i386.sse";
constexpr std::string_view kSegments = "org.gnu.gdb.i386.segments";
constexpr std::string_view kSystem = "org.vmmlab.x86.system";

// The table in 'g' order; offsets are filled in by `table()`.
std::vector<RegisterInfo> make_table() {
  std::vector<RegisterInfo> t;
  auto add = [&t](std::string_view name, std::size_t bits, std::string_view type, std::string_view feature) {
    t.push_back({name, bits, type, feature, 0});
  };
  for (const auto name : {"rax", "rbx", "rcx", "rdx", "rsi", "rdi"}) {
    add(name, 64, "int64", kCore);
  }
  add("rbp", 64, "data_ptr", kCore);
  add("rsp", 64, "data_ptr", kCore);
  for (const auto name : {"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}) {
    add(name, 64, "int64", kCore);
  }
  add("rip", 64, "code_ptr", kCore);
  add("eflags", 32, "int32", kCore);
  for (const auto name : {"cs", "ss", "ds", "es", "fs", "gs"}) {
    add(name, 32, "int32", kCore);
  }
  for (const auto name : {"st0", "st1", "st2", "st3", "st4", "st5", "st6", "st7"}) {
    add(name, 80, "i387_ext", kCore);
  }
  for (const auto name : {"fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"}) {
    add(name, 32, "int", kCore);
  }
  for (const auto name : {"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                          "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"}) {
    add(name, 128, "vec128", kSse);
  }
  add("mxcsr", 32, "int", kSse);
  add("fs_base", 64, "int64", kSegments);
  add("gs_base", 64, "int64", kSegments);
  for (const auto name : {"cr0", "cr2", "cr3", "cr4", "cr8", "efer"}) {
    add(name, 64, "int64", kSystem);
  }
  std::size_t offset = 0;
  for (auto& r : t) {
    r.offset = offset;
    offset += r.bits / 8;
  }
  return t;
}

const std::vector<RegisterInfo>& table() {
  static const std::vector<RegisterInfo> t = make_table();
  return t;
}

// Where each register's value lives in KVM's structs. Indexes follow the table.
enum Index : std::size_t {
  kRax = 0,
  kRip = 16,
  kEflags = 17,
  kCs = 18,
  kSt0 = 24,
  kFctrl = 32,
  kFstat,
  kFtag,
  kFiseg,
  kFioff,
  kFoseg,
  kFooff,
  kFop,
  kXmm0 = 40,
  kMxcsr = 56,
  kFsBase = 57,
  kGsBase,
  kCr0,
  kCr2,
  kCr3,
  kCr4,
  kCr8,
  kEfer,
  kCount
};

kvm_segment* segment(kvm_sregs& s, std::size_t i) {
  std::array<kvm_segment*, 6> order = {&s.cs, &s.ss, &s.ds, &s.es, &s.fs, &s.gs};
  return order[i];
}

__u64* gpr(kvm_regs& r, std::size_t i) {
  std::array<__u64*, 16> order = {&r.rax, &r.rbx, &r.rcx, &r.rdx, &r.rsi, &r.rdi, &r.rbp, &r.rsp,
                                  &r.r8,  &r.r9,  &r.r10, &r.r11, &r.r12, &r.r13, &r.r14, &r.r15};
  return order[i];
}

__u64* system(kvm_sregs& s, std::size_t i) {
  std::array<__u64*, 6> order = {&s.cr0, &s.cr2, &s.cr3, &s.cr4, &s.cr8, &s.efer};
  return order[i];
}

// The full x87 tag word from FXSAVE's abridged one: 11 (empty) for a clear bit, 00 (valid) otherwise.
std::uint32_t full_tag(std::uint8_t abridged) {
  std::uint32_t tag = 0;
  for (int i = 0; i < 8; ++i) {
    if ((abridged & (1u << i)) == 0) {
      tag |= 3u << (2 * i);
    }
  }
  return tag;
}

std::uint8_t abridged_tag(std::uint32_t full) {
  std::uint8_t tag = 0;
  for (int i = 0; i < 8; ++i) {
    if (((full >> (2 * i)) & 3u) != 3u) {
      tag = static_cast<std::uint8_t>(tag | (1u << i));
    }
  }
  return tag;
}

// Copies register `n` of `state` into `out` (its width), or back (`to_state`).
void transfer(X86Registers& state, std::size_t n, std::uint8_t* bytes, bool to_state) {
  auto move = [&](void* field, std::size_t size) {
    if (to_state) {
      std::memcpy(field, bytes, size);
    } else {
      std::memcpy(bytes, field, size);
    }
  };
  auto move32 = [&](std::uint32_t value, auto&& store) {
    if (to_state) {
      std::uint32_t v = 0;
      std::memcpy(&v, bytes, 4);
      store(v);
    } else {
      std::memcpy(bytes, &value, 4);
    }
  };
  auto& r = state.regs;
  auto& s = state.sregs;
  auto& f = state.fpu;
  if (n < kRip) {
    move(gpr(r, n), 8);
  } else if (n == kRip) {
    move(&r.rip, 8);
  } else if (n == kEflags) {
    move32(static_cast<std::uint32_t>(r.rflags), [&](std::uint32_t v) { r.rflags = (r.rflags & ~0xffffffffull) | v; });
  } else if (n < kSt0) {
    kvm_segment* seg = segment(s, n - kCs);
    move32(seg->selector, [&](std::uint32_t v) { seg->selector = static_cast<std::uint16_t>(v); });
  } else if (n < kFctrl) {
    move(f.fpr[n - kSt0], 10);
  } else if (n == kFctrl) {
    move32(f.fcw, [&](std::uint32_t v) { f.fcw = static_cast<std::uint16_t>(v); });
  } else if (n == kFstat) {
    move32(f.fsw, [&](std::uint32_t v) { f.fsw = static_cast<std::uint16_t>(v); });
  } else if (n == kFtag) {
    move32(full_tag(f.ftwx), [&](std::uint32_t v) { f.ftwx = abridged_tag(v); });
  } else if (n == kFiseg || n == kFoseg) {
    move32(0, [](std::uint32_t) {});  // 64-bit FXSAVE has no segments: the pointers are linear
  } else if (n == kFioff) {
    move32(static_cast<std::uint32_t>(f.last_ip), [&](std::uint32_t v) { f.last_ip = v; });
  } else if (n == kFooff) {
    move32(static_cast<std::uint32_t>(f.last_dp), [&](std::uint32_t v) { f.last_dp = v; });
  } else if (n == kFop) {
    move32(f.last_opcode, [&](std::uint32_t v) { f.last_opcode = static_cast<std::uint16_t>(v); });
  } else if (n < kMxcsr) {
    move(f.xmm[n - kXmm0], 16);
  } else if (n == kMxcsr) {
    move32(f.mxcsr, [&](std::uint32_t v) { f.mxcsr = v; });
  } else if (n == kFsBase) {
    move(&s.fs.base, 8);
  } else if (n == kGsBase) {
    move(&s.gs.base, 8);
  } else {
    move(system(s, n - kCr0), 8);
  }
}

}  // namespace

std::span<const RegisterInfo> x86_64_registers() {
  return table();
}

std::size_t x86_64_g_bytes() {
  return table().back().offset + table().back().bits / 8;
}

std::string x86_64_target_xml() {
  static_assert(kCount == 65);
  std::string xml =
      "<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n<target version=\"1.0\">\n"
      "  <architecture>i386:x86-64</architecture>\n";
  std::string_view open;
  for (std::size_t i = 0; i < table().size(); ++i) {
    const auto& r = table()[i];
    if (r.feature != open) {
      if (!open.empty()) {
        xml += "  </feature>\n";
      }
      xml += fmt::format("  <feature name=\"{}\">\n", r.feature);
      if (r.feature == kSse) {
        // vec128 shows an XMM register as every element type, as gdb's own description does.
        xml +=
            "    <vector id=\"v4f\" type=\"ieee_single\" count=\"4\"/>\n"
            "    <vector id=\"v2d\" type=\"ieee_double\" count=\"2\"/>\n"
            "    <vector id=\"v16i8\" type=\"int8\" count=\"16\"/>\n"
            "    <vector id=\"v8i16\" type=\"int16\" count=\"8\"/>\n"
            "    <vector id=\"v4i32\" type=\"int32\" count=\"4\"/>\n"
            "    <vector id=\"v2i64\" type=\"int64\" count=\"2\"/>\n"
            "    <union id=\"vec128\">\n"
            "      <field name=\"v4_float\" type=\"v4f\"/>\n      <field name=\"v2_double\" type=\"v2d\"/>\n"
            "      <field name=\"v16_int8\" type=\"v16i8\"/>\n      <field name=\"v8_int16\" type=\"v8i16\"/>\n"
            "      <field name=\"v4_int32\" type=\"v4i32\"/>\n      <field name=\"v2_int64\" type=\"v2i64\"/>\n"
            "      <field name=\"uint128\" type=\"uint128\"/>\n    </union>\n";
      }
      open = r.feature;
    }
    xml += fmt::format("    <reg name=\"{}\" bitsize=\"{}\" type=\"{}\" regnum=\"{}\"/>\n", r.name, r.bits, r.type, i);
  }
  xml += "  </feature>\n</target>\n";
  return xml;
}

std::vector<std::uint8_t> encode_registers(const X86Registers& state) {
  std::vector<std::uint8_t> out(x86_64_g_bytes());
  X86Registers copy = state;  // transfer() reads through non-const pointers
  for (std::size_t n = 0; n < table().size(); ++n) {
    transfer(copy, n, out.data() + table()[n].offset, false);
  }
  return out;
}

Result<std::vector<std::uint8_t>> read_register(const X86Registers& state, std::size_t number) {
  if (number >= table().size()) {
    return logic_error("gdb register", fmt::format("register {} does not exist (0..{})", number, table().size() - 1));
  }
  std::vector<std::uint8_t> out(table()[number].bits / 8);
  X86Registers copy = state;
  transfer(copy, number, out.data(), false);
  return out;
}

Result<void> write_register(X86Registers& state, std::size_t number, std::span<const std::uint8_t> bytes) {
  if (number >= table().size()) {
    return logic_error("gdb register", fmt::format("register {} does not exist (0..{})", number, table().size() - 1));
  }
  if (bytes.size() != table()[number].bits / 8) {
    return logic_error("gdb register", fmt::format("{} takes {} bytes, not {}", table()[number].name,
                                                   table()[number].bits / 8, bytes.size()));
  }
  std::vector<std::uint8_t> copy(bytes.begin(), bytes.end());
  transfer(state, number, copy.data(), true);
  return {};
}

Result<void> decode_registers(X86Registers& state, std::span<const std::uint8_t> bytes) {
  if (bytes.size() != x86_64_g_bytes()) {
    return logic_error("gdb registers",
                       fmt::format("a 'G' packet carries {} bytes, not {}", x86_64_g_bytes(), bytes.size()));
  }
  X86Registers next = state;
  std::vector<std::uint8_t> copy(bytes.begin(), bytes.end());
  for (std::size_t n = 0; n < table().size(); ++n) {
    transfer(next, n, copy.data() + table()[n].offset, true);
  }
  state = next;
  return {};
}

}  // namespace vmm::gdb
