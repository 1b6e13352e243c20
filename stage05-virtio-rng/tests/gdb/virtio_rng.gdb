# virtio_rng.gdb -- the virtio-rng driver guest stopped with its first batch used, the split queue read from gdb.
# Run by tools/gdb-guest-session against stage05-virtio-rng, stage06-irqfd-ioeventfd (its eventfd run) and
# stage07-vhost-user (the device in another process), and checked with FileCheck: the same guest and the same
# ring, whichever side of the VMM filled it.
break collect
continue
# CHECK: Breakpoint 1, collect ({{.*}}count=4, start=0) at {{.*}}virtio_rng.c:
bt 2
# CHECK: #1 {{.*}}run_batch (
# The driver made four buffers available; the device has used all four.
print ring.avail->idx
# CHECK: = 4
print ring.used->idx
# CHECK: = 4
# The first used element: descriptor 0, filled with 16 random bytes, a device-writable buffer (VRING_DESC_F_WRITE).
print ring.used->ring[start % ring.num]
# CHECK: = {id = 0, len = 16}
print/x ring.desc[ring.used->ring[start % ring.num].id].flags
# CHECK: = 0x2
delete
detach
# CHECK: [Inferior 1 (Remote target) detached]
# CHECK: --- vmm stdout
# CHECK: PASS
# CHECK: --- vmm stderr
# CHECK: gdb stub: gdb detached
# CHECK: : stopped: the guest exited with status 0
# CHECK: vmm exit status: 0
