# edu.gdb -- stage08-vfio --gdb: the edu driver guest stopped while it looks for the passed-through device.
# Run in the rig's vfio flavour by tools/gdb-guest-session and checked with FileCheck.
#
# The guest asks stage04's PCI library for QEMU's edu device (1234:11e8).
break pci_find_device
continue
# CHECK: Breakpoint 1, pci_find_device (
bt
# CHECK: #1 {{.*}}main (
print/x vendor
# CHECK: = 0x1234
print/x device
# CHECK: = 0x11e8
# Its slot on the guest's bus 0, as the VMM placed the real device there.
finish
# CHECK: Value returned is $3 = [[SLOT:[0-9]+]]
delete
detach
# CHECK: [Inferior 1 (Remote target) detached]
# CHECK: --- vmm stdout
# CHECK: 00:0[[SLOT]].0 1234:11e8 edu
# CHECK: PASS
# CHECK: --- vmm stderr
# CHECK: stage08-vfio: stopped: the guest exited with status 0
# CHECK: vmm exit status: 0
