#!/bin/busybox sh
# PID 1 of the guest final-vmm boots in its tests and in the README's first command.
#
# It loads the virtio drivers (Debian builds them as modules), runs the checks the kernel command line asks for, one
# line each, "vmmlab-init: PASS <check>: <detail>" or "vmmlab-init: FAIL <check>: <detail>", and then ends the way
# vmmlab.end= says: reboot (the default; with reboot=k the i8042 reset line ends final-vmm with status 0), poweroff,
# panic, or shell (an interactive shell on the console, for exploring).
#
# Checks (each runs only when its parameter is on the command line):
#   vmmlab.cpus=N                 all N CPUs are online
#   vmmlab.rng=1                  the virtio-rng is the current hwrng and /dev/hwrng yields bytes
#   vmmlab.disk=DEV:TEXT          /dev/DEV starts with TEXT            (vmmlab.disk2= for a second disk)
#   vmmlab.disk_write=DEV:TEXT    TEXT written at byte 4096 of /dev/DEV reads back (the host checks it persisted)
#   vmmlab.net=IP/PREFIX,PEER     the virtio-net link comes up with IP and PEER answers a ping
# Always: one "vmmlab-init: pci BDF VENDOR:DEVICE class CLASS" line per PCI function, for the host to compare with
# the VMM's --dump-topology.

/bin/busybox mkdir -p /proc /sys /dev /bin /sbin /tmp /usr/bin /usr/sbin
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox --install -s
export PATH=/bin:/sbin

failures=0
say() { echo "vmmlab-init: $*"; }
pass() { say "PASS $1: $2"; }
fail() { say "FAIL $1: $2"; failures=$((failures + 1)); }
param() {  # param NAME: the value of NAME= on the kernel command line, or nothing
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
# The virtio stack, in dependency order (the file lists them; modprobe would need modules.dep).
for module in $(cat /lib/modules/order); do
    insmod "/lib/modules/$module.ko" || fail "insmod" "$module"
done

if cpus=$(param vmmlab.cpus); then
    online=$(cat /sys/devices/system/cpu/online)
    count=0
    for range in $(echo "$online" | tr ',' ' '); do
        first=${range%-*}; last=${range#*-}
        count=$((count + last - first + 1))
    done
    if [ "$count" -eq "$cpus" ]; then pass cpus "$count online ($online)"; else fail cpus "$count online ($online), expected $cpus"; fi
fi

if param vmmlab.rng >/dev/null; then
    wait_for /sys/class/misc/hw_random/rng_current
    current=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
    bytes=$(dd if=/dev/hwrng bs=16 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
    case $current in
    virtio_rng*) if [ ${#bytes} -eq 32 ]; then pass rng "$current gave $bytes"; else fail rng "$current gave '$bytes'"; fi ;;
    *) fail rng "rng_current is '$current'" ;;
    esac
fi

disk_read() {  # disk_read CHECK DEV:TEXT
    dev=${2%%:*} text=${2#*:}
    if ! wait_for "/dev/$dev"; then fail "$1" "/dev/$dev did not appear"; return; fi
    got=$(dd if="/dev/$dev" bs=1 count=${#text} 2>/dev/null)
    if [ "$got" = "$text" ]; then pass "$1" "/dev/$dev starts with $text"; else fail "$1" "/dev/$dev starts with '$got', expected $text"; fi
}
if spec=$(param vmmlab.disk); then disk_read disk-read "$spec"; fi
if spec=$(param vmmlab.disk2); then disk_read disk2-read "$spec"; fi
if spec=$(param vmmlab.disk_write); then
    dev=${spec%%:*} text=${spec#*:}
    printf '%s' "$text" | dd of="/dev/$dev" bs=1 seek=4096 conv=notrunc,fsync 2>/dev/null
    sync
    echo 3 >/proc/sys/vm/drop_caches
    got=$(dd if="/dev/$dev" bs=1 skip=4096 count=${#text} 2>/dev/null)
    if [ "$got" = "$text" ]; then pass disk-write "$text at byte 4096 of /dev/$dev"; else fail disk-write "read back '$got'"; fi
fi

count=0
for dev in /sys/bus/pci/devices/*; do
    [ -e "$dev" ] || continue
    vendor=$(cat "$dev/vendor") device=$(cat "$dev/device") class=$(cat "$dev/class")
    say "pci ${dev##*/} ${vendor#0x}:${device#0x} class $class"
    count=$((count + 1))
done
pass pci "$count functions"

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
        say "$iface link $(cat "/sys/class/net/$iface/operstate"), carrier $(cat "/sys/class/net/$iface/carrier" 2>/dev/null)"
        if ping -c 3 -W 2 "$peer" >/tmp/ping 2>&1; then
            pass net "$iface $address: $(grep -o '[0-9]* packets received' /tmp/ping) from $peer"
        else
            fail net "$iface $address: no answer from $peer ($(tail -n 1 /tmp/ping))"
        fi
    fi
fi

if [ "$failures" -eq 0 ]; then say "ALL PASS"; else say "SOME FAILED ($failures)"; fi

case $(param vmmlab.end || echo reboot) in
shell)
    say "a shell on the console; 'reboot -f' ends the VM"
    exec setsid cttyhack sh
    ;;
poweroff) poweroff -f ;;
panic)
    echo 1 >/proc/sys/kernel/sysrq
    echo c >/proc/sysrq-trigger
    ;;
*) reboot -f ;;
esac
