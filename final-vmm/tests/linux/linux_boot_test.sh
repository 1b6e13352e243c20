#!/bin/sh
# linux_boot_test.sh -- boots Debian's kernel on final-vmm with every kind of device and checks, from the guest's
# own point of view, that each works. Runs inside the rig (tools/rig), whose KVM can run Linux.
#
#   linux_boot_test.sh FINAL_VMM KERNEL INITRAMFS VHOST_USER_BLK [CPUS]
#
# The guest's /init (final-vmm/guest/init.sh) reads its checks from the kernel command line and prints one
# "vmmlab-init: PASS|FAIL <check>" line each, then reboots. This script adds what only the host can see: the VMM's
# exit status, the bytes the guest wrote into the disk image, and the PCI functions in the VMM's --dump-topology
# compared with the ones the guest listed.
set -u
vmm=$1 kernel=$2 initramfs=$3 vhost_blk=$4 cpus=${5:-2}
work=$(mktemp -d /tmp/final-boot.XXXXXX)
failures=0
check() {  # check NAME CONDITION-EXIT-STATUS DETAIL
    if [ "$2" -eq 0 ]; then echo "host: PASS $1: $3"; else echo "host: FAIL $1: $3"; failures=$((failures + 1)); fi
}

# Disks: a known pattern at byte 0 of each; the guest writes its own at 4096 of the first.
dd if=/dev/zero of="$work/disk.img" bs=1M count=8 2>/dev/null
printf 'VMMLAB-DISK-0' | dd of="$work/disk.img" conv=notrunc 2>/dev/null
dd if=/dev/zero of="$work/vhost.img" bs=1M count=8 2>/dev/null
printf 'VMMLAB-VHOST-1' | dd of="$work/vhost.img" conv=notrunc 2>/dev/null

# The vhost-user-blk backend (stage07's daemon) serves the second disk from its own process.
"$vhost_blk" --socket "$work/blk.sock" --image "$work/vhost.img" --once >"$work/daemon.log" 2>&1 &
daemon=$!

cmdline="console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd quiet"
cmdline="$cmdline vmmlab.cpus=$cpus vmmlab.rng=1 vmmlab.disk=vda:VMMLAB-DISK-0 vmmlab.disk_write=vda:GUEST-WROTE"
cmdline="$cmdline vmmlab.disk2=vdb:VMMLAB-VHOST-1 vmmlab.net=192.168.249.2/24,192.168.249.1"
start=$(cut -d' ' -f1 /proc/uptime)
"$vmm" --kernel "$kernel" --initramfs "$initramfs" --cpus "boot=$cpus" --memory size=512M,shared=on \
    --rng --disk "path=$work/disk.img" --vhost-user-blk "socket=$work/blk.sock" \
    --net tap=vmtap0,ip=192.168.249.1,mask=255.255.255.0 --serial tty --dump-topology "$work/topology.dot" \
    --stats --cmdline "$cmdline" </dev/null >"$work/console.log" 2>"$work/vmm.log"
status=$?
end=$(cut -d' ' -f1 /proc/uptime)
kill "$daemon" 2>/dev/null
wait "$daemon" 2>/dev/null

tr -d '\r' <"$work/console.log" | grep -E '^vmmlab-init:' || true
echo "--- final-vmm stderr"
cat "$work/vmm.log"
echo "---"
check exit-status "$([ "$status" -eq 0 ]; echo $?)" "final-vmm exited $status after the guest rebooted ($start s -> $end s)"
check all-pass "$(grep -q 'vmmlab-init: ALL PASS' "$work/console.log"; echo $?)" "the guest's checks"
written=$(dd if="$work/disk.img" bs=1 skip=4096 count=11 2>/dev/null)
check disk-persists "$([ "$written" = GUEST-WROTE ]; echo $?)" "byte 4096 of the image on the host: '$written'"
# PCI: the guest's list ("vmmlab-init: pci 0000:00:04.0 1af4:1044 class ...") against the topology's labels.
guest=$(tr -d '\r' <"$work/console.log" | sed -n 's/^vmmlab-init: pci 0000:\(..:..\..\) \(....:....\).*/\1 \2/p' | sort)
vmm_side=$(grep -o '[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]\.0 [0-9a-f]\{4\}:[0-9a-f]\{4\}' "$work/topology.dot" | sort -u)
check pci-topology "$([ -n "$guest" ] && [ "$guest" = "$vmm_side" ]; echo $?)" "guest: $(echo $guest) / VMM: $(echo $vmm_side)"
if [ "$failures" -ne 0 ]; then
    echo "--- console"
    tr -d '\r' <"$work/console.log" | tail -n 80
fi
rm -rf "$work"
[ "$failures" -eq 0 ] && echo "linux boot test: PASS" && exit 0
echo "linux boot test: FAIL ($failures)"
exit 1
