# Lab 03, gdb walkthrough 2: watch the driver switch the THRE interrupt on and off.
#
#   labs/gdb/vmm-gdb -x labs/03-serial/ier.gdb --args build/dev/stage03-serial/stage03-serial --timeout 60
#
# Run it from labs/03-serial (the input file is relative). Answer the questions (Q1..Q4) as you go; the answers are
# in labs/03-serial/README.md, "gdb answers". The "# CHECK" lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off
handle SIGUSR1 nostop noprint pass

# The machine is built, the vCPU not started yet: the UART exists and is in its reset state.
break vmm::stage03::SerialVm::start
run < echo_input.txt
# CHECK: Breakpoint 1, vmm::stage03::SerialVm::start
print *uart_._M_ptr
# CHECK: $1 = Uart16550 {IER 0x00 (none), LCR 0x00 (5N1), divisor 12, MCR 0x00 (none), LSR 0x60 (THRE|TEMT), FIFO off, RX 0/1, SCR 0x00, THRE pending no, line low, tx 0}

# A hardware watchpoint on the IER member itself: the CPU's debug registers stop whichever thread writes it.
# Q1. uart_init writes offset 1 three times (IER 0x00, DLM 0x00 with DLAB set, then IER 0x05), but gdb stops only
#     at the third. Why?
watch -l uart_._M_ptr->ier_
# CHECK: Hardware watchpoint 2: -location uart_._M_ptr->ier_
continue
# CHECK: Thread 2 "vcpu0" hit Hardware watchpoint 2: -location uart_._M_ptr->ier_
# CHECK: Old value = 0 '\000'
# CHECK-NEXT: New value = 5 '\005'

# Q2. ERBFI | ELSI: what does the driver want to hear about now, and why not THRE yet?
bt 1
# CHECK: #0 {{.*}}vmm::devices::Uart16550::write_locked

# Q3. The first byte to send: THRI on. What does the UART do the moment ETBEI goes from 0 to 1?
continue
# CHECK: Old value = 5 '\005'
# CHECK-NEXT: New value = 7 '\a'
print thre_pending_
# CHECK: $2 = true

# Q4. And off again: who writes 0x05 now, from where, and why? (Look at the guest's uart.c, case 0x02.)
continue
# CHECK: Old value = 7 '\a'
# CHECK-NEXT: New value = 5 '\005'
continue
# CHECK: Old value = 5 '\005'
# CHECK-NEXT: New value = 7 '\a'

delete
continue
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
