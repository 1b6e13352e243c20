# Lab 10, walkthrough 2: the first instructions of Linux, stepped one at a time in final-vmm.
#
#   bash tools/gdb-guest-session labs/10-guest-debugging/linux-entry.gdb - -- \
#        build/dev/final-vmm/final-vmm --kernel build/dev/final-vmm/guest/vmlinux --serial off \
#        --cmdline "console=ttyS0 nokaslr"
#
# The vmlinux has no symbols (Debian strips it; the -dbg package has them), so gdb shows addresses.
# Q1. The BSP starts at the ELF entry point's physical address. Why physical, when the kernel is linked at
#     0xffffffff81000000? (final-vmm/src/boot/linux_loader.cpp; Documentation/x86/boot.rst, "64-bit BOOT PROTOCOL".)
info registers rip rsi
# CHECK: rip 0x1000000 0x1000000
# Q2. RSI holds the zero page's address. Read its first bytes of the setup header (offset 0x1f1) with x/.
# CHECK: rsi 0x7000
x/4i $pc
# CHECK: => 0x1000000:
# Q3. Step three instructions. Which registers change, and what is startup_64 setting up first?
stepi
stepi
stepi
info registers rip
# CHECK: rip 0x{{10000[0-9a-f]+}}
# Q4. Until the kernel loads its own CR3, which page tables translate these addresses (who wrote them)?
info registers cr3
# CHECK: cr3 0x9000
kill
# CHECK: vmm exit status: 0
