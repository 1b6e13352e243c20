# enumerate.gdb -- stage04-pci --gdb: the enumerator guest stopped while it lists the BARs it assigned.
# Run by tools/gdb-guest-session (attached before the first instruction) and checked with FileCheck.
#
# The first BAR the guest prints: the test device's BAR0, 4 KiB of 32-bit memory the guest placed at 0xc0000000.
break print_bar
continue
# CHECK: Breakpoint 1, print_bar (bar=0x{{[0-9a-f]+}}, index=0) at {{.*}}enumerate.c:
print *bar
# CHECK: = {address = 3221225472, size = 4096, io = false, is64 = false, prefetchable = false}
# The caller's loop variable: the slot being enumerated (00:03.0, the test device).
up
# CHECK: #1 main (
print slot
# CHECK: = 3 '\003'
delete
detach
# CHECK: [Inferior 1 (Remote target) detached]
# The guest finishes on its own: the VMM's listing, then its exit.
# CHECK: --- vmm stdout
# CHECK: 00:03.0 1af4:10f1 class ff0000
# CHECK: PASS
# CHECK: --- vmm stderr
# CHECK: gdb stub: gdb detached
# CHECK: stage04-pci: stopped: the guest exited with status 0
# CHECK: vmm exit status: 0
