# Lab 02, gdb walkthrough 1: from GuestMemory regions to KVM memory slots.
#
#   labs/gdb/vmm-gdb -x labs/02-memory/slots.gdb --args build/dev/stage02-memory/stage02-memory
#
# Answer the questions (Q1..Q5) as you go; the answers are in labs/02-memory/README.md, "gdb answers".
# The "# CHECK" lines are what CTest expects this script to print (FileCheck reads them; gdb ignores comments).
set pagination off
set confirm off
set breakpoint pending off

# Every KVM_SET_USER_MEMORY_REGION goes through Vm::set_memory_slot. (At its first line the argument is not set up
# yet: step once before reading it.)
break vmm::kvm::Vm::set_memory_slot
run
# CHECK: Breakpoint 1, vmm::kvm::Vm::set_memory_slot
next

# Q1. Which region is becoming which slot? Who numbered it, and what does KVM need from us to back it?
print slot
# CHECK: $1 = slot 0: guest [0x0, 0x1000000) -> host [[HOST0:0x[0-9a-f]+]]

# Q2. The VMM's map (GuestMemory, in the caller) against KVM's (the Vm's slots, empty so far). Compare the host
#     address of region 0 with the slot's. What would go wrong if the region were destroyed while the slot exists?
vmm memmap
# CHECK: GuestMemory `memory` in frame #1 (vmm::memory::register_with): 2 regions, 16512 KiB
# CHECK-NEXT: region 0: guest [0x0, 0x1000000) 16 MiB -> host [[HOST0]] anonymous
# CHECK-NEXT: region 1: guest [0x80000000, 0x80020000) 128 KiB -> host [[HOST1:0x[0-9a-f]+]] anonymous
# CHECK-NEXT: KVM slots of Vm `this` in frame #0 (vmm::kvm::Vm::set_memory_slot): 0 slots

# Q3. The second slot is the output region, 2 GiB up in guest-physical space. Are the two host addresses related
#     in the same way? Why does the gap in guest-physical space cost the host no memory?
continue
next
print slot
# CHECK: $2 = slot 1: guest [0x80000000, 0x80020000) -> host [[HOST1]]{{$}}

# Q4. A third call, for a slot that already exists. Who makes it, and what changes?
continue
next
print slot
# CHECK: $3 = slot 1: guest [0x80000000, 0x80020000) -> host [[HOST1]] LOG_DIRTY_PAGES
bt 2
# CHECK: #1 {{.*}} vmm::memory::enable_dirty_logging

# Q5. Back in enable_dirty_logging: KVM's view now. Why is slot 0 (RAM, where the guest's code and page tables are)
#     not logged?
finish
vmm memmap
# CHECK: KVM slots of Vm `vm` in frame #0 (vmm::memory::enable_dirty_logging): 2 slots
# CHECK-NEXT: slot 0: guest [0x0, 0x1000000) 16 MiB -> host [[HOST0]]{{$}}
# CHECK-NEXT: slot 1: guest [0x80000000, 0x80020000) 128 KiB -> host [[HOST1]] LOG_DIRTY_PAGES

delete
continue
# CHECK: dirtied    3 page(s): 0x8000f000 0x80010000 0x80011000
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
