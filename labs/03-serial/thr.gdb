# Lab 03, gdb walkthrough 1: from an OUT instruction to a byte on your terminal.
#
#   labs/gdb/vmm-gdb -x labs/03-serial/thr.gdb --args build/dev/stage03-serial/stage03-serial --timeout 60
#
# Run it from labs/03-serial (the input file is relative). Answer the questions (Q1..Q5) as you go; the answers are
# in labs/03-serial/README.md, "gdb answers". The "# CHECK" lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off
# The VMM kicks its vCPU thread out of KVM_RUN with SIGUSR1 when it stops: not a bug, let it through.
handle SIGUSR1 nostop noprint pass

# Uart16550::emit hands one transmitted byte to the sink (here: the demo's write_stdout). Only THR writes with
# LCR.DLAB clear get here. (At its first line the argument is not set up yet: step once before reading it.)
break vmm::devices::Uart16550::emit
run < echo_input.txt
# CHECK: Thread 2 "vcpu0" hit Breakpoint 1, vmm::devices::Uart16550::emit
next

# Q1. The first byte the guest transmits. uart_init wrote offset 0 once before this (with the value 1): why did that
#     write not stop here?
print/c byte
# CHECK: $1 = 118 'v'

# Q2. The UART as the guest left it. Which IER bit made this byte leave, and who set it? What does OUT2 do on a PC?
print *this
# CHECK: $2 = Uart16550 {IER 0x07 (ERBFI|ETBEI|ELSI), LCR 0x03 (8N1), divisor 1, MCR 0x0b (DTR|RTS|OUT2), LSR {{0x6[01]}} ({{(DR\|)?}}THRE|TEMT), FIFO on, RX {{[0-9]+}}/16, SCR 0x00, THRE pending yes, line high, tx 1}

# Q3. Which thread is this, and what is the other one doing?
#     (The main thread is usually in epoll_wait, but gdb stops it wherever it is: now and then inside a callback, such
#     as the 2 ms timer that feeds the UART's FIFO. Its backtrace always goes through the event loop.)
info threads
# CHECK: 1 {{.*}} "stage03-serial"
# CHECK: * 2 {{.*}} "vcpu0" {{.*}}vmm::devices::Uart16550::emit
thread apply 1 bt
# CHECK: Thread 1 {{.*}}"stage03-serial"
# CHECK: vmm::event::EventLoop::run

# Q4. How did the OUT instruction get here? Find KVM_RUN's return, the bus lookup and the device call.
bt 5
# CHECK: #0 {{.*}}vmm::devices::Uart16550::emit
# CHECK-NEXT: #1 {{.*}}vmm::devices::Uart16550::write (this={{0x[0-9a-f]+}}, offset=0,
# CHECK-NEXT: #2 {{.*}}vmm::devices::Bus::write (this={{0x[0-9a-f]+}}, address=1016,
vmm bus
# CHECK: io bus `this` in frame #2 (vmm::devices::Bus::write): 2 devices, unclaimed: 0 reads, 0 writes
# CHECK-NEXT: [0xf0, 0xf8) report -> vmm::devices::ReportChannel
# CHECK-NEXT: [0x3f8, 0x400) serial0 (COM1) -> vmm::devices::Uart16550

# Q5. Both buses, from the run loop. Where is the PIC (ports 0x20, 0x21, 0xa0, 0xa1) the guest also programs?
frame function vmm::machine::run_vcpu_loop
vmm bus
# CHECK: io bus `buses.io` in frame #{{[0-9]+}} (vmm::machine::run_vcpu_loop): 2 devices, unclaimed: 0 reads, 0 writes
# CHECK: mmio bus `buses.mmio` in frame #{{[0-9]+}} (vmm::machine::run_vcpu_loop): 0 devices, unclaimed: 0 reads, 0 writes
print buses.io
# CHECK: $3 = io bus {2 devices, unclaimed: 0 reads, 0 writes} = {[0xf0] = BusEntry {[0xf0, 0xf8) report -> vmm::devices::ReportChannel}, [0x3f8] = BusEntry {[0x3f8, 0x400) serial0 (COM1) -> vmm::devices::Uart16550}}

# The next two bytes.
continue
next
print/c byte
# CHECK: $4 = 109 'm'
continue
next
print/c byte
# CHECK: $5 = 109 'm'

delete
continue
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
