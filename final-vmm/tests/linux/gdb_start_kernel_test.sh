#!/bin/sh
# gdb_start_kernel_test.sh -- inside the rig: gdb stops Debian's kernel at start_kernel in final-vmm, shows where it
# stopped, and lets it boot on to the init's "ALL PASS".
#
#   gdb_start_kernel_test.sh FINAL_VMM VMLINUX INITRAMFS      (run by tools/rig, with gdb copied in)
#
# 1. Where is start_kernel? Debian's System.map is a stub (the real one is in the -dbg package) and the vmlinux has
#    no symbols, so a first boot with nokaslr and vmmlab.symbol=start_kernel prints it from /proc/kallsyms. nokaslr
#    makes it the same address in every boot.
# 2. The stop. gdb attaches before the first instruction and sets `break *ADDRESS`. The rig's KVM traps neither int3
#    nor debug registers, so the stub makes the breakpoint an OUT DX,AL patched into the kernel's code, and because
#    that address is not mapped before the kernel builds its page tables, it single-steps the first instructions
#    until it is. gdb then prints the first frame and the registers and detaches; the kernel boots on.
set -u
vmm=$1 vmlinux=$2 initramfs=$3
work=$(mktemp -d /tmp/final-gdb.XXXXXX)
trap 'rm -rf "$work"' EXIT
cmdline="console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd quiet nokaslr"

"$vmm" --kernel "$vmlinux" --initramfs "$initramfs" --memory size=256M --serial tty \
    --cmdline "$cmdline vmmlab.symbol=start_kernel" </dev/null >"$work/first.log" 2>&1
address=$(tr -d '\r' <"$work/first.log" | sed -n 's/^vmmlab-init: symbol start_kernel \([0-9a-f]*\)$/\1/p')
if [ -z "$address" ]; then
    echo "FAIL: the first boot did not print start_kernel's address"
    tail -n 40 "$work/first.log"
    exit 1
fi
echo "start_kernel is at 0x$address (/proc/kallsyms of the first boot)"

"$vmm" --kernel "$vmlinux" --initramfs "$initramfs" --memory size=256M --serial tty --gdb "unix:$work/gdb.sock" \
    --cmdline "$cmdline" </dev/null >"$work/console.log" 2>"$work/vmm.log" &
vmm_pid=$!
for _ in $(seq 100); do [ -S "$work/gdb.sock" ] && break; sleep 0.1; done
gdb -q -batch -nx -ex 'set pagination off' -ex 'set confirm off' -ex 'set architecture i386:x86-64' \
    -ex "target remote $work/gdb.sock" -ex 'info registers rip' \
    -ex "break *0x$address" -ex 'continue' -ex 'bt 1' -ex 'info registers rip rsp cr0 cr3 cr4 efer cs' \
    -ex 'x/2i $pc' -ex 'delete' -ex 'detach' 2>&1 | tee "$work/gdb.log"
# After the detach the kernel boots on (quiet: no banner): the init starts and runs its checks, then the
# init reboots and final-vmm ends.
waited=0
while kill -0 "$vmm_pid" 2>/dev/null && [ "$waited" -lt 1200 ]; do
    sleep 0.1
    waited=$((waited + 1))
done
kill -INT "$vmm_pid" 2>/dev/null
wait "$vmm_pid"
status=$?
echo "--- final-vmm stderr"
cat "$work/vmm.log"
echo "--- console (first and last lines)"
head -n 2 "$work/console.log"
tail -n 3 "$work/console.log"
failures=0
expect() {  # expect FILE PATTERN
    if grep -Eq -- "$2" "$1"; then echo "PASS: $2"; else echo "FAIL: no '$2'"; failures=$((failures + 1)); fi
}
expect "$work/gdb.log" '^rip +0x1000000 '
expect "$work/gdb.log" "^Breakpoint 1, 0x0*$address in \?\? \(\)"
expect "$work/gdb.log" "^#0  0x0*$address in \?\? \(\)"
expect "$work/gdb.log" "^rip +0x$address "
expect "$work/gdb.log" '^cr0 +0x8005003[3b] '
expect "$work/gdb.log" 'Inferior 1 \(Remote target\) detached'
expect "$work/console.log" 'vmmlab-init: init started, kernel [0-9]'
expect "$work/console.log" 'vmmlab-init: ALL PASS'
expect "$work/vmm.log" 'gdb stub: gdb detached'
expect "$work/vmm.log" 'final-vmm: stopped: the guest: reset'
[ "$status" -eq 0 ] || { echo "FAIL: final-vmm exited $status"; failures=$((failures + 1)); }
[ "$failures" -eq 0 ] && echo "gdb start_kernel test: PASS" && exit 0
echo "gdb start_kernel test: FAIL ($failures)"
exit 1
