# Lab 09, gdb walkthrough 1: how final-vmm hands Linux the machine. The loader, the zero page, the first registers,
# and the kernel's first byte on the serial port.
#
#   labs/gdb/vmm-gdb -x labs/09-final-vmm/boot.gdb --args build/dev/final-vmm/final-vmm \
#       --kernel build/dev/final-vmm/guest/vmlinux --cmdline "earlyprintk=serial,ttyS0 console=ttyS0 nokaslr" --cpus 2
#
# It runs on the host's KVM: too slow to boot Linux, fast enough for the uncompressed vmlinux to print its first
# characters. Answer the questions (Q1..Q5) as you go; the answers are in labs/09-final-vmm/README.md. The "# CHECK"
# lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off
set print pretty off

break vmm::boot::load_elf
break vmm::boot::make_boot_params
break vmm::x86::set_boot_registers
run
# CHECK: Breakpoint 1, vmm::boot::load_elf

# Q1. final-vmm was given a vmlinux, not a bzImage: which function decided that, and on what bytes?
bt -frame-info short-location 2
# CHECK: #0 vmm::boot::load_elf
# CHECK-NEXT: #1 {{.*}}vmm::boot::load_kernel
continue
# CHECK: Breakpoint 2, vmm::boot::make_boot_params
# (gdb stopped at the function's first instruction: one `next` and its arguments are in place.)
next

# Q2. The kernel's entry is a physical address. Where does it come from in an ELF vmlinux, and why is it 16 MiB?
printf "entry %#lx, format %d (1 = ELF), kernel ends at %#lx\n", kernel.entry, kernel.format, kernel.end
# CHECK: entry 0x1000000, format 1 (1 = ELF), kernel ends at 0x{{[0-9a-f]+}}

# Q3. This is the e820 map Linux will print as "BIOS-e820". Why is [0x9fc00, 0x100000) reserved, and what is
#     missing between 3 GiB and 4 GiB on a machine with more RAM?
printf "cmdline at %#lx, %d bytes\n", input.cmdline_address, input.cmdline_size
# CHECK: cmdline at 0x20000, 46 bytes
p input.e820
# CHECK: {address = 0, size = 654336, type = vmm::boot::E820Type::Ram}, {address = 654336, size = 394240, type = vmm::boot::E820Type::Reserved}, {address = 1048576, size = 535822336, type = vmm::boot::E820Type::Ram}
continue
# CHECK: Breakpoint 3, vmm::x86::set_boot_registers
next

# Q4. Only vCPU 0 gets registers. What does vCPU 1 do until Linux wants it, and what wakes it?
printf "vCPU %u starts at RIP %#lx with RSI = %#lx (the zero page), RSP %#lx\n", vcpu.id_, entry.rip, entry.boot_params, entry.stack_top
# CHECK: vCPU 0 starts at RIP 0x1000000 with RSI = 0x7000 (the zero page), RSP 0x8ff0
delete

# Q5. The kernel's first byte on COM1. Which port did it write, and which device on the I/O bus took it?
break vmm::devices::Uart16550::emit
continue
# CHECK: vmm::devices::Uart16550::emit
next
printf "first byte from the guest: '%c'\n", byte
# CHECK: first byte from the guest: '['

# The I/O bus as the guest sees it: COM1 took the byte. What else is on it, and what does Linux use each for?
up
vmm bus
# CHECK: i8042 data
# CHECK: i8042 command
# CHECK: cmos rtc
# CHECK: serial0 (COM1)
# CHECK: pci-conf1
kill
