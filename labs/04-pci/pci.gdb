# Lab 04, gdb walkthrough 1: the test device after the guest enumerated it, decoded by `vmm pci`.
#
#   labs/gdb/vmm-gdb -x labs/04-pci/pci.gdb --args build/dev/stage04-pci/stage04-pci --timeout 60
#
# Answer the questions (Q1..Q5) as you go; the answers are in labs/04-pci/README.md, "gdb answers". The "# CHECK"
# lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off
# The VMM kicks its vCPU thread out of KVM_RUN with SIGUSR1 when it stops: not a bug, let it through.
handle SIGUSR1 nostop noprint pass

# The only BAR0 write the enumerator makes is the doorbell, after it has sized and assigned every BAR and programmed
# MSI-X entry 0. (BAR2 writes, the MSI-X table, also come through bar_write: the condition skips them.)
break vmm::pci::PciTestDevice::bar_write if bar_index == 0
run
# CHECK: Thread 2 "vcpu0" hit Breakpoint 1, vmm::pci::PciTestDevice::bar_write (this={{0x[0-9a-f]+}}, bar_index=0, offset=8,

# Q1. The device as the guest left it. BAR1 is 16 bytes of I/O: what did the guest read back from it after writing
#     all-ones, and how did it get 0x10 from that? Why is MASTER set, though vmmlab does not check it?
vmm pci
# CHECK: vmm::pci::PciTestDevice `this` in frame #0 (vmm::pci::PciTestDevice::bar_write)
# CHECK-NEXT: vendor 1af4 device 10f1, class ff/00/00 rev 01, header type 0x00 (normal)
# CHECK-NEXT: command 0x0007 (IO|MEMORY|MASTER), status 0x0010 (CAP_LIST)
# CHECK-NEXT: BAR0 mem32 size 0x1000 at 0xc0000000
# CHECK-NEXT: BAR1 io size 0x10 at 0xc000
# CHECK-NEXT: BAR2 mem32 size 0x1000 at 0xc0001000
# CHECK-NEXT: capabilities: MSI-X@0x40
# CHECK-NEXT: MSI-X: 4 vectors, enabled; table in BAR2 at 0x0, PBA in BAR2 at 0x800

# Q2. The config space through its printer. Where is the MSI-X capability, and what points at it?
print config_
# CHECK: $1 = ConfigSpace {1af4:10f1 class ff0000, command 0x0007 (IO|MEMORY|MASTER), 3 BARs, capabilities: MSI-X@0x40}

# Q3. The doorbell value is the vector index to fire. Which message will the device send: to which LAPIC, with
#     which interrupt vector?
print data
# CHECK: $2 = std::span of length 4 = {0 '\000', 0 '\000', 0 '\000', 0 '\000'}
print msix_->entries_[0]
# CHECK: $3 = {address = 4276092928, data = 80, control = 0}

# Q4. How did the guest's store reach this function? Who inserted the BarWindow, and when?
bt 4
# CHECK: #0 {{.*}}vmm::pci::PciTestDevice::bar_write
# CHECK-NEXT: #1 {{.*}}vmm::pci::(anonymous namespace)::BarWindow::write (this={{0x[0-9a-f]+}}, offset=8,
# CHECK-NEXT: #2 {{.*}}vmm::devices::Bus::write (this={{0x[0-9a-f]+}}, address=3221225480,
vmm bus
# CHECK: mmio bus `this` in frame #2 (vmm::devices::Bus::write): 3 devices, unclaimed: 0 reads, 0 writes
# CHECK-NEXT: [0xc0000000, 0xc0001000) pci-test 00:03.0 BAR0 -> vmm::pci::(anonymous namespace)::BarWindow
# CHECK-NEXT: [0xc0001000, 0xc0002000) pci-test 00:03.0 BAR2 -> vmm::pci::(anonymous namespace)::BarWindow
# CHECK-NEXT: [0xe0000000, 0xe0100000) pci-ecam -> vmm::pci::EcamWindow

# Q5. Let the message go. How many interrupts did the guest take, and how did it tell the LAPIC it was done?
delete
continue
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
