# Lab 01, gdb walkthrough 2: watch the guest's RIP advance, one exit at a time.
#
#   labs/gdb/vmm-gdb -x labs/01-kvm-api/watch-rip.gdb --args build/dev/stage01-kvm-api/stage01-kvm-api
#
# After every KVM_RUN the VMM decodes the exit; at that moment the vCPU is stopped and `vmm regs` can read its
# registers (it calls KVM_GET_REGS from inside the VMM process, just like Vcpu::get_regs()).
set pagination off
set confirm off
set breakpoint pending off

set $exits = 0
break vmm::kvm::decode_exit
commands
  silent
  set $exits = $exits + 1
  printf "--- exit %d\n", $exits
  vmm regs
  continue
end
run

# The test_vm code (objdump -d -mi8086 build/dev/stage01-kvm-api/guest/test_vm/test_vm.elf):
#   1000: mov $0x3f8,%dx   1003: add %bl,%al   1005: add $'0',%al   1007: out %al,(%dx)
#   1008: mov $'\n',%al    100a: out %al,(%dx)  100b: hlt          100c: (end)
#
# Q1. At the first exit, AL is 0x35. Which instructions have run?
# CHECK: --- exit 1
# CHECK-NEXT: vCPU 0: rip 0x100{{[78]}}
# CHECK-NEXT: rax 0x35 rbx 0x3 rcx 0x0 rdx 0x3f8
#
# Q2. Is RIP at the OUT (0x1007) or past it (0x1008)? A standard KVM reports 0x1007: it completes the OUT when the
#     VMM calls KVM_RUN again, after the VMM has had a chance to supply data for an IN. The host's nested KVM reports
#     0x1008. Which one did you see? Why must a VMM never depend on either?
# CHECK: --- exit 2
# CHECK-NEXT: vCPU 0: rip 0x100{{[ab]}}
# CHECK-NEXT: rax 0xa
#
# Q3. HLT is the last exit. Where is RIP, and why is it past the HLT on every KVM?
# CHECK: --- exit 3
# CHECK-NEXT: vCPU 0: rip 0x100c
# CHECK-NOT: --- exit 4
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
