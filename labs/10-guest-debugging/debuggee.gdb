# Lab 10, walkthrough 1: stopping, stepping and watching a guest through stage03-serial's gdb stub.
#
#   bash tools/gdb-guest-session labs/10-guest-debugging/debuggee.gdb \
#        build/dev/stage03-serial/guest/debuggee/debuggee.elf -- build/dev/stage03-serial/stage03-serial --guest debuggee
#
# Q1. Before gdb sent anything, the vCPU had not run one instruction. Where is it waiting, and who decided that?
#     (stage03-serial/src/gdb/stub.cpp, GdbStub::before_run.)
# CHECK: _start () at {{.*}}start.S
info registers rip cr0 cr3 cr4 efer
# CHECK: rip 0x100000 0x100000 <_start>
# CHECK: cr0 0x80010033
# Q2. Paging is already on (CR0.PG, EFER.LMA). Which table does CR3 point to, and which stage wrote it?

# Q3. `print ticks` reads guest memory at a guest-virtual address. Which function turns that address into a
#     guest-physical one, and what would it do if CR0.PG were clear?
print &ticks
# CHECK: $1 = (volatile uint64_t *) 0x{{[0-9a-f]+}} <ticks>

# Q4. `break tick` asks for a software breakpoint (Z0). The stub's first line on stderr says what this KVM can trap:
#     on the host int3 is not, so where does the breakpoint go instead?
break tick
continue
# CHECK: Breakpoint 1, tick () at {{.*}}debuggee.c:
# Q5. The debug exit arrived on the vCPU thread. What did the stub do with the vCPU before it told gdb?
stepi
# CHECK: 0x{{[0-9a-f]+}} {{[0-9]+}} void tick(void)

# Q6. x86 has four debug address registers. How many does `watch ticks` (8 bytes, aligned) take, and what DR7 bits?
#     On a KVM that cannot trap data breakpoints the stub single-steps instead: why is that slow?
delete
watch ticks
continue
# CHECK: Hardware watchpoint 2: ticks
# CHECK: Old value = 0
# CHECK: New value = 1
delete
detach
# CHECK: [Inferior 1 (Remote target) detached]
# CHECK: vmm exit status: 0
