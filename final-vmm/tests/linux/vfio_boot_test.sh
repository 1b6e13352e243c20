#!/bin/sh
# vfio_boot_test.sh -- boots Linux on final-vmm in the rig's vfio flavour (q35, an IOMMU and QEMU's edu device bound
# to vfio-pci) with edu passed through and the entropy coming from a vhost-user-rng backend in another process.
#
#   vfio_boot_test.sh FINAL_VMM KERNEL INITRAMFS VHOST_USER_RNG
#
# The guest's init checks both CPUs, that virtio_rng (served by the vhost-user backend) gives bytes, and that edu
# answers through its BAR0 (ID 0x010000ed and the liveness register); the PCI functions it lists must match the VMM's
# --dump-topology. $VMMLAB_RIG_EDU_BDF comes from the rig.
set -u
vmm=$1 kernel=$2 initramfs=$3 vhost_rng=$4
work=$(mktemp -d /tmp/final-vfio.XXXXXX)
"$vhost_rng" --socket "$work/rng.sock" >"$work/daemon.log" 2>&1 &
daemon=$!
"$vmm" --kernel "$kernel" --initramfs "$initramfs" --cpus boot=2 --memory size=512M,shared=on \
    --vhost-user-rng "socket=$work/rng.sock" --device "$VMMLAB_RIG_EDU_BDF" --dump-topology "$work/topology.dot" \
    --stats --cmdline "console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd quiet vmmlab.cpus=2 vmmlab.rng=1 vmmlab.edu=1" \
    </dev/null >"$work/console.log" 2>"$work/vmm.log"
status=$?
kill "$daemon" 2>/dev/null
wait "$daemon" 2>/dev/null
tr -d '\r' <"$work/console.log" | grep -E '^vmmlab-init:'
cat "$work/vmm.log"
guest=$(tr -d '\r' <"$work/console.log" | sed -n 's/^vmmlab-init: pci 0000:\(..:..\..\) \(....:....\).*/\1 \2/p' | sort)
vmm_side=$(grep -o '[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]\.0 [0-9a-f]\{4\}:[0-9a-f]\{4\}' "$work/topology.dot" | sort -u)
echo "guest PCI: $(echo $guest) / VMM: $(echo $vmm_side)"
ok=0
[ "$status" -eq 0 ] || { echo "FAIL: final-vmm exited $status"; ok=1; }
grep -q 'vmmlab-init: ALL PASS' "$work/console.log" || { echo "FAIL: the guest's checks"; tr -d '\r' <"$work/console.log" | tail -n 60; ok=1; }
[ -n "$guest" ] && [ "$guest" = "$vmm_side" ] || { echo "FAIL: PCI lists differ"; ok=1; }
rm -rf "$work"
[ "$ok" -eq 0 ] && echo "vfio boot test: PASS"
exit "$ok"
