# Lab 04, gdb walkthrough 2: the moment a BAR lands on a bus.
#
#   labs/gdb/vmm-gdb -x labs/04-pci/remap.gdb --args build/dev/stage04-pci/stage04-pci --timeout 60
#
# Answer the questions (Q1..Q5) as you go; the answers are in labs/04-pci/README.md, "gdb answers". The "# CHECK"
# lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off
# The VMM kicks its vCPU thread out of KVM_RUN with SIGUSR1 when it stops: not a bug, let it through.
handle SIGUSR1 nostop noprint pass

# PciRoot::config_write stores the guest's bytes in the device's config space, then calls update_bars(device) to
# move the BARs. Stop on that call, for the test device's command register, once the guest turns decoding on (its
# first command write, 0, turns decoding off: skip it). A breakpoint on the function itself would stop before gdb
# can read its arguments (see README.md), hence the line.
break pci_root.cpp:123 if device == 3 && reg == 4
ignore 1 1
run
# CHECK: Thread 2 "vcpu0" hit Breakpoint 1, vmm::pci::PciRoot::config_write (this={{0x[0-9a-f]+}}, bus=0 '\000', device=3 '\003', function=0 '\000', reg=4,
# CHECK: update_bars(device);

# Q1. The config space already says IO|MEMORY. Are the BARs on the buses yet? Every BAR register was written
#     before this (all-ones, then the address): why did none of those writes move anything?
vmm pci
# CHECK: PciRoot `this` in frame #0 (vmm::pci::PciRoot::config_write): bus 0
# CHECK: 00:00.0 vmm::pci::HostBridge
# CHECK: no BARs
# CHECK: 00:03.0 vmm::pci::PciTestDevice
# CHECK-NEXT: vendor 1af4 device 10f1, class ff/00/00 rev 01, header type 0x00 (normal)
# CHECK-NEXT: command 0x0007 (IO|MEMORY|MASTER), status 0x0010 (CAP_LIST)
# CHECK-NEXT: BAR0 mem32 size 0x1000 at 0xc0000000 -> not mapped
# CHECK-NEXT: BAR1 io size 0x10 at 0xc000 -> not mapped
# CHECK-NEXT: BAR2 mem32 size 0x1000 at 0xc0001000 -> not mapped
# CHECK-NEXT: capabilities: MSI-X@0x40
# CHECK-NEXT: MSI-X: 4 vectors, disabled; table in BAR2 at 0x0, PBA in BAR2 at 0x800
vmm bus this->mmio_
# CHECK: mmio bus `this->mmio_`: 1 device, unclaimed: 0 reads, 0 writes
# CHECK-NEXT: [0xe0000000, 0xe0100000) pci-ecam -> vmm::pci::EcamWindow

# Q2. Step over update_bars. What did it insert on each bus, and under which names?
next
vmm pci
# CHECK: BAR0 mem32 size 0x1000 at 0xc0000000 -> mapped on the mmio bus [0xc0000000, 0xc0001000)
# CHECK-NEXT: BAR1 io size 0x10 at 0xc000 -> mapped on the io bus [0xc000, 0xc010)
# CHECK-NEXT: BAR2 mem32 size 0x1000 at 0xc0001000 -> mapped on the mmio bus [0xc0001000, 0xc0002000)
vmm bus this->mmio_
# CHECK: mmio bus `this->mmio_`: 3 devices, unclaimed: 0 reads, 0 writes
# CHECK-NEXT: [0xc0000000, 0xc0001000) pci-test 00:03.0 BAR0 -> vmm::pci::(anonymous namespace)::BarWindow
# CHECK-NEXT: [0xc0001000, 0xc0002000) pci-test 00:03.0 BAR2 -> vmm::pci::(anonymous namespace)::BarWindow
# CHECK-NEXT: [0xe0000000, 0xe0100000) pci-ecam -> vmm::pci::EcamWindow
vmm bus this->io_
# CHECK: io bus `this->io_`: 4 devices
# CHECK: [0xc000, 0xc010) pci-test 00:03.0 BAR1 -> vmm::pci::(anonymous namespace)::BarWindow

# Q3. What the root remembers per BAR. Why does it keep `refused` as well as `placed`?
print this->slots_._M_elems[3].bars._M_elems[0]
# CHECK: placed = std::optional<vmm::pci::PciRoot::Placement> = {[contained value] = {space = vmm::pci::BarSpace::Memory, base = 3221225472, size = 4096}}

# Q4. The same BAR through its printer, as tests and the demo see the root's mappings.
print (vmm::pci::BarMapping){3, 0, vmm::pci::BarSpace::Memory, 0xc0000000, 0x1000}
# CHECK: 00:03.0 BAR0 mem [0xc0000000, 0xc0001000)

# Q5. The guest now programs MSI-X entry 0 through BAR2 and rings the doorbell in BAR0. Which entries of the mmio
#     bus do those accesses go through, and why does the PciRoot's mutex not appear on that path?
delete
continue
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
