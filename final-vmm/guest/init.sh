#!/bin/busybox sh
# PID 1 of the guest final-vmm boots in its tests and in the README's first command.
#
# It loads the virtio drivers (Debian builds them as modules), runs the checks the kernel command line asks for, one
# line each, "vmmlab-init: PASS <check>: <detail>" or "vmmlab-init: FAIL <check>: <detail>", and then ends the way
# vmmlab.end= says: reboot (the default; with reboot=k the i8042 reset line ends final-vmm with status 0), poweroff,
# panic, or shell (an interactive shell on the console, for exploring).
#
# Checks (each runs only when its parameter is on the command line; without it: "vmmlab-init: SKIP <check>"):
#   vmmlab.cpus=N                 all N CPUs are online
#   vmmlab.rng=1                  the virtio-rng is the current hwrng and /dev/hwrng yields bytes
#   vmmlab.disk=DEV:TEXT          /dev/DEV starts with TEXT            (vmmlab.disk2= for a second disk)
#   vmmlab.disk_write=DEV:TEXT    TEXT written at byte 4096 of /dev/DEV reads back (the host checks it persisted)
#   vmmlab.net=IP/PREFIX,PEER     the virtio-net link comes up with IP and PEER answers a ping
#   vmmlab.symbol=NAME            prints "vmmlab-init: symbol NAME ADDRESS" from /proc/kallsyms
#   vmmlab.edu=1                  QEMU's edu device (passed through with VFIO) answers through its BAR0: its ID
#                                 register, and the liveness register returns the complement of what was written
# Always: one "vmmlab-init: pci BDF VENDOR:DEVICE class CLASS" line per PCI function, for the host to compare with
# the VMM's --dump-topology.

# The kernel starts PID 1 with nothing but the initramfs: no /proc, no /sys, no device nodes, and no applet links
# (only /bin/busybox itself), hence the full paths until `busybox --install -s` has made the links.
/bin/busybox mkdir -p /proc /sys /dev /bin /sbin /tmp /usr/bin /usr/sbin
/bin/busybox mount -t devtmpfs devtmpfs /dev
# The initramfs has no /dev/console node, so the kernel could not give PID 1 a stdin/stdout: take the console now
# that devtmpfs provides it (the serial port, with console=ttyS0).
exec </dev/console >/dev/console 2>&1
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox --install -s
export PATH=/bin:/sbin

# Every result is one line with a fixed prefix, so the host-side tests can grep the console log for them.
failures=0
say() { echo "vmmlab-init: $*"; }
pass() { say "PASS $1: $2"; }
fail() { say "FAIL $1: $2"; failures=$((failures + 1)); }
skip() { say "SKIP $1"; }
param() {  # param NAME: the value of NAME= on the kernel command line, or nothing
    # shellcheck disable=SC2013 # the command line is split into words on purpose
    for word in $(cat /proc/cmdline); do
        case $word in "$1"=*) echo "${word#*=}"; return 0 ;; esac
    done
    return 1
}
wait_for() {  # wait_for PATH: up to 5 s for a file to appear (drivers probe asynchronously)
    tries=0
    while [ ! -e "$1" ]; do
        tries=$((tries + 1)); [ "$tries" -le 50 ] || return 1
        usleep 100000
    done
}

say "init started, kernel $(uname -r)"
# Debian builds the virtio drivers as modules, so nothing sees final-vmm's devices until they are loaded. Loading a
# driver probes the devices it matches at once. make-initramfs wrote the load order (dependencies first) into
# /lib/modules/order: plain insmod needs no modules.dep, which modprobe would.
# shellcheck disable=SC2013 # one name a line, no spaces
for module in $(cat /lib/modules/order); do
    insmod "/lib/modules/$module.ko" || fail "insmod" "$module"
done

# The CPUs the kernel brought up (the boot CPU, then every AP that answered INIT/SIPI), as ranges: "0-1", "0,2-3".
if cpus=$(param vmmlab.cpus); then
    online=$(cat /sys/devices/system/cpu/online)
    count=0
    for range in $(echo "$online" | tr ',' ' '); do
        first=${range%-*}; last=${range#*-}
        count=$((count + last - first + 1))
    done
    if [ "$count" -eq "$cpus" ]; then pass cpus "$count online ($online)"; else fail cpus "$count online ($online), expected $cpus"; fi
else
    skip cpus
fi

# virtio-rng registers with the hw_random core, which makes it the current source of /dev/hwrng: reading 16 bytes
# there is one request on the device's virtqueue, answered by the VMM.
if param vmmlab.rng >/dev/null; then
    wait_for /sys/class/misc/hw_random/rng_current
    current=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
    bytes=$(dd if=/dev/hwrng bs=16 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
    case $current in
    virtio_rng*) if [ ${#bytes} -eq 32 ]; then pass rng "$current gave $bytes"; else fail rng "$current gave '$bytes'"; fi ;;
    *) fail rng "rng_current is '$current'" ;;
    esac
else
    skip rng
fi

disk_read() {  # disk_read CHECK DEV:TEXT
    dev=${2%%:*} text=${2#*:}
    if ! wait_for "/dev/$dev"; then fail "$1" "/dev/$dev did not appear"; return; fi
    got=$(dd if="/dev/$dev" bs=1 count=${#text} 2>/dev/null)
    if [ "$got" = "$text" ]; then pass "$1" "/dev/$dev starts with $text"; else fail "$1" "/dev/$dev starts with '$got', expected $text"; fi
}
if spec=$(param vmmlab.disk); then disk_read disk-read "$spec"; else skip disk-read; fi
if spec=$(param vmmlab.disk2); then disk_read disk2-read "$spec"; else skip disk2-read; fi
# A write must reach the disk image on the host, not just the guest's page cache: fsync (a FLUSH request to the
# device), then drop the caches so the read back is a real read request too.
if spec=$(param vmmlab.disk_write); then
    dev=${spec%%:*} text=${spec#*:}
    if ! wait_for "/dev/$dev"; then
        fail disk-write "/dev/$dev did not appear"
    elif ! printf '%s' "$text" | dd of="/dev/$dev" bs=1 seek=4096 conv=notrunc,fsync 2>/tmp/dd; then
        fail disk-write "dd to /dev/$dev failed: $(tail -n 1 /tmp/dd)"
    else
        sync
        echo 3 >/proc/sys/vm/drop_caches
        got=$(dd if="/dev/$dev" bs=1 skip=4096 count=${#text} 2>/dev/null)
        if [ "$got" = "$text" ]; then pass disk-write "$text at byte 4096 of /dev/$dev"; else fail disk-write "read back '$got'"; fi
    fi
else
    skip disk-write
fi

# Every PCI function the kernel found by scanning bus 0 (the host compares this list with final-vmm's topology).
count=0
for dev in /sys/bus/pci/devices/*; do
    [ -e "$dev" ] || continue
    vendor=$(cat "$dev/vendor") device=$(cat "$dev/device") class=$(cat "$dev/class")
    say "pci ${dev##*/} ${vendor#0x}:${device#0x} class $class"
    count=$((count + 1))
done
pass pci "$count functions"

if param vmmlab.edu >/dev/null; then
    edu=
    for dev in /sys/bus/pci/devices/*; do
        [ "$(cat "$dev/vendor")" = 0x1234 ] && [ "$(cat "$dev/device")" = 0x11e8 ] && edu=$dev
    done
    if [ -z "$edu" ]; then
        fail vfio-edu "no 1234:11e8 device on the bus"
    else
        # No driver claims edu, so /dev/mem may reach its BAR: read the ID, then write the liveness register.
        bar0=$(head -n 1 "$edu/resource" | cut -d' ' -f1)
        id=$(devmem "$bar0" 32)
        devmem $((bar0 + 4)) 32 0x12345678
        live=$(devmem $((bar0 + 4)) 32)
        if [ "$id" = 0x010000ED ] && [ "$live" = 0xEDCBA987 ]; then
            pass vfio-edu "${edu##*/} BAR0 $bar0: ID $id, liveness 0x12345678 -> $live"
        else
            fail vfio-edu "${edu##*/} BAR0 $bar0: ID $id, liveness $live"
        fi
    fi
else
    skip vfio-edu
fi

# The interface name (eth0, ens4...) depends on the kernel, so look for the one virtio_net drives. The carrier comes
# from the device's status field (VIRTIO_NET_S_LINK_UP); the ping is real traffic through both virtqueues.
if spec=$(param vmmlab.net); then
    address=${spec%%,*} peer=${spec#*,}
    iface=
    tries=0
    while [ -z "$iface" ] && [ "$tries" -le 50 ]; do
        for net in /sys/class/net/*; do
            [ "$(basename "$(readlink "$net/device/driver" 2>/dev/null)")" = virtio_net ] && iface=${net##*/}
        done
        tries=$((tries + 1)); [ -n "$iface" ] || usleep 100000
    done
    if [ -z "$iface" ]; then
        fail net "no virtio_net interface"
    else
        ip link set "$iface" up && ip addr add "$address" dev "$iface"
        tries=0
        while [ "$(cat "/sys/class/net/$iface/carrier" 2>/dev/null)" != 1 ] && [ "$tries" -le 50 ]; do
            tries=$((tries + 1)); usleep 100000
        done
        if [ "$(cat "/sys/class/net/$iface/carrier" 2>/dev/null)" != 1 ]; then
            fail net "$iface $address: no carrier after 5 s (operstate $(cat "/sys/class/net/$iface/operstate"))"
        else
            say "$iface link up"
            if ping -c 3 -W 2 "$peer" >/tmp/ping 2>&1; then
                pass net "$iface $address: $(grep -o '[0-9]* packets received' /tmp/ping) from $peer"
            else
                fail net "$iface $address: no answer from $peer ($(tail -n 1 /tmp/ping))"
            fi
        fi
    fi
else
    skip net
fi

# vmmlab.symbol=NAME: where the running kernel put NAME (from /proc/kallsyms). Debian's System.map is a stub (the real
# one is in the -dbg package), so the gdb tests learn start_kernel's address from a first boot with nokaslr.
if name=$(param vmmlab.symbol); then
    address=$(grep " [tT] $name\$" /proc/kallsyms | cut -d' ' -f1 | head -n 1)
    if [ -n "$address" ]; then say "symbol $name $address"; else say "FAIL symbol: $name not in /proc/kallsyms"; failures=$((failures + 1)); fi
fi

if [ "$failures" -eq 0 ]; then say "ALL PASS"; else say "SOME FAILED ($failures)"; fi

# How the VM ends is part of what final-vmm is tested on: reboot (with reboot=k the kernel pulses the i8042's reset
# line and final-vmm exits with status 0), poweroff (needs ACPI, which final-vmm does not have: the kernel halts the
# CPUs and the VM waits), a panic (panic=N on the command line reboots after N s), or a shell for exploring.
case $(param vmmlab.end || echo reboot) in
shell)
    say "a shell on the console; 'reboot -f' ends the VM"
    exec setsid cttyhack sh
    ;;
poweroff) poweroff -f ;;
panic)
    # sysrq "c" crashes the kernel on purpose (a NULL pointer write): the panic path, as final-vmm sees it.
    echo 1 >/proc/sys/kernel/sysrq
    echo c >/proc/sysrq-trigger
    ;;
*) reboot -f ;;
esac
