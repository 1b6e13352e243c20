# ctrl_c.gdb -- Ctrl-C with two vCPUs: final-vmm --cpus 2 boots Debian's vmlinux under gdb, gdb interrupts it after
# three seconds (the shell sends gdb the SIGINT a terminal's Ctrl-C would) and every vCPU must be held.
# Run by tools/gdb-guest-session and checked with FileCheck.
#
# Attached before the first instruction: the BSP at the kernel's entry, the AP waiting for its startup IPI.
info threads
# CHECK: * 1 Thread 1 (vCPU 0) 0x0000000001000000 in ?? ()
# CHECK: 2 Thread 2 (vCPU 1) 0x000000000000fff0 in ?? ()
shell (sleep 3 && kill -INT $PPID) &
continue
# CHECK: received signal SIGINT, Interrupt.
# Both vCPUs stopped: the BSP somewhere in the kernel's high mapping, the AP still where it was (Linux has not
# started it yet on the host's slow ring 0). Reading the AP's registers needs it out of KVM_RUN.
info threads
# CHECK: 1 Thread 1 (vCPU 0) 0xffffffff8{{[0-9a-f]+}} in ?? ()
# CHECK: 2 Thread 2 (vCPU 1) 0x000000000000fff0 in ?? ()
thread 2
info registers rip cs
# CHECK: rip 0xfff0 0xfff0
# CHECK: cs 0xf000
kill
# CHECK: [Inferior 1 (Remote target) killed]
# CHECK: --- vmm stderr
# CHECK: final-vmm: stopped: gdb killed the guest
# CHECK: vmm exit status: 0
