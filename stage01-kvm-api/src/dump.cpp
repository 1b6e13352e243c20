#include "vmm/kvm/dump.hpp"

#include <fmt/format.h>

namespace vmm::kvm {

std::string format_regs(const kvm_regs& r) {
  return fmt::format(
      "rip {:016x}  rflags {:016x}\n"
      "rax {:016x}  rbx {:016x}  rcx {:016x}  rdx {:016x}\n"
      "rsi {:016x}  rdi {:016x}  rsp {:016x}  rbp {:016x}\n"
      "r8  {:016x}  r9  {:016x}  r10 {:016x}  r11 {:016x}\n"
      "r12 {:016x}  r13 {:016x}  r14 {:016x}  r15 {:016x}\n",
      r.rip, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13,
      r.r14, r.r15);
}

namespace {
std::string format_segment(const char* name, const kvm_segment& s) {
  return fmt::format("{:<4}sel {:04x} base {:016x} limit {:08x} type {:x} s {} dpl {} p {} l {} db {} g {}\n", name,
                     s.selector, s.base, s.limit, s.type, s.s, s.dpl, s.present, s.l, s.db, s.g);
}
}  // namespace

std::string format_sregs(const kvm_sregs& s) {
  std::string out;
  out += format_segment("cs", s.cs);
  out += format_segment("ds", s.ds);
  out += format_segment("es", s.es);
  out += format_segment("fs", s.fs);
  out += format_segment("gs", s.gs);
  out += format_segment("ss", s.ss);
  out += format_segment("tr", s.tr);
  out += format_segment("ldt", s.ldt);
  out += fmt::format("gdt base {:016x} limit {:04x}   idt base {:016x} limit {:04x}\n", s.gdt.base, s.gdt.limit,
                     s.idt.base, s.idt.limit);
  out += fmt::format("cr0 {:016x}  cr2 {:016x}  cr3 {:016x}\ncr4 {:016x}  cr8 {:016x}  efer {:016x}\n", s.cr0, s.cr2,
                     s.cr3, s.cr4, s.cr8, s.efer);
  return out;
}

Result<std::string> dump_vcpu(const Vcpu& vcpu) {
  auto regs = vcpu.get_regs();
  if (!regs) {
    return std::unexpected(regs.error());
  }
  auto sregs = vcpu.get_sregs();
  if (!sregs) {
    return std::unexpected(sregs.error());
  }
  return fmt::format("vCPU {} registers:\n{}{}", vcpu.id(), format_regs(*regs), format_sregs(*sregs));
}

}  // namespace vmm::kvm
