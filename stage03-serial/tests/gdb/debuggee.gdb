# debuggee.gdb -- the gdb stub end to end: a real gdb against stage03-serial --guest debuggee --gdb unix:SOCKET.
# Run by tools/gdb-guest-session (which attaches first) and checked with FileCheck, on the host and in the rig.
#
# Attached before the first instruction: the runtime's _start, with paging on.
# CHECK: _start () at {{.*}}start.S
info registers rip
# CHECK: rip 0x100000 0x100000 <_start>

# A breakpoint on a guest function by name, then continue to it.
break tick
continue
# CHECK: Breakpoint 1, tick () at {{.*}}debuggee.c:
bt
# CHECK: #0  tick () at
# CHECK: #1  {{.*}} in main (

# A guest variable, read through the stub's page walk.
print ticks
# CHECK: $1 = 0

# Single steps: one instruction, then one source line.
stepi
info registers rip
# CHECK: rip 0x{{[0-9a-f]+}} 0x{{[0-9a-f]+}} <tick+{{[0-9]+}}>
next
# CHECK: main (info={{.*}}) at {{.*}}debuggee.c:

# A hardware watchpoint that triggers: the first tick's write already happened, the second changes 1 to 2.
delete
watch ticks
continue
# CHECK: Hardware watchpoint 2: ticks
# CHECK: Old value = 1
# CHECK: New value = 2
delete

# Into fibonacci and out again: gdb reads the return value from RAX.
break fibonacci
continue
# CHECK: Breakpoint 3, fibonacci (n=20)
finish
# CHECK: Value returned is $2 = 6765
info threads
# CHECK: * 1    Thread 1 (vCPU 0)

# Detach: breakpoints come out and the guest runs to its end.
delete
detach
# CHECK: [Inferior 1 (Remote target) detached]
# CHECK: --- vmm stdout
# CHECK: debuggee: fibonacci(20) = 0x1a6d
# CHECK: --- vmm stderr
# CHECK: gdb stub: gdb connected
# CHECK: gdb stub: gdb detached; the guest runs on
# CHECK: stopped: the guest exited with status 0
# CHECK: vmm exit status: 0
