# Lab 02, gdb walkthrough 2: walk the guest's page tables from the VMM's side.
#
#   labs/gdb/vmm-gdb -x labs/02-memory/page-walk.gdb --args build/dev/stage02-memory/stage02-memory
#
# enter_long_mode has written the GDT and the page tables into guest RAM and is about to load CR3. The tables hold
# guest-physical addresses; gdb reads host memory. The VMM's GuestMemory is the bridge.
set pagination off
set confirm off
set breakpoint pending off

break vmm::x86::long_mode_sregs
run
# CHECK: Breakpoint 1, vmm::x86::long_mode_sregs
up
# CHECK: vmm::x86::enter_long_mode

# Q1. Where are the tables, in guest-physical terms, and how many 4 KiB pages are they? Why that many?
print setup.page_tables
# CHECK: GuestAddress 0x9000
print tables
# CHECK: Result {ok: {pml4 = GuestAddress 0x9000, pages = std::vector of length 6
# CHECK-SAME: mapped_bytes = 4294967296}}

# Q2. Which region holds guest-physical 0x9000, and at which host address does that region start?
print *memory.find_region(setup.page_tables)
# CHECK: GuestMemoryRegion {guest [0x0, 0x1000000) 16 MiB -> host [[RAM:0x[0-9a-f]+]], anonymous

# Guest-physical address G in region 0 is host address (region 0's host address) + G.
set $ram = (unsigned long) memory.regions_._M_impl._M_start[0].map_.addr_

# Q3. The PML4 (CR3 points here). Decode entry 0: which address, which bits? Why is entry 1 empty?
x/2gx $ram + 0x9000
# CHECK: 0x000000000000a023
# CHECK-SAME: 0x0000000000000000

# Q4. The PDPT: four entries, one per GiB. Where do they point?
x/4gx $ram + 0xa000
# CHECK: 0x000000000000b023
# CHECK-SAME: 0x000000000000c023
# CHECK: 0x000000000000d023
# CHECK-SAME: 0x000000000000e023

# Q5. The first page directory. What does 0xe3 say, bit by bit? Which entry maps the input buffer at 0x200000?
x/2gx $ram + 0xb000
# CHECK: 0x00000000000000e3
# CHECK-SAME: 0x00000000002000e3

# Q6. The output region is at guest-physical 0x80000000 (2 GiB). Follow PML4[0] -> PDPT[2] -> PD entry 0. Then: is
#     its host address $ram + 0x80000000? Where is it really?
x/1gx $ram + 0xd000
# CHECK: 0x00000000800000e3
print memory.regions_._M_impl._M_start[1]
# CHECK: GuestMemoryRegion {guest [0x80000000, 0x80020000) 128 KiB -> host 0x{{[0-9a-f]+}}, anonymous

delete
continue
# CHECK: exit       PASS
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
