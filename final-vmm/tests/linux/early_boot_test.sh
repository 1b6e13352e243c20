#!/bin/sh
# early_boot_test.sh -- the uncompressed vmlinux on this host's KVM, until its early console has printed the
# command line and the e820 map; then SIGINT, which must stop final-vmm cleanly (status 0).
#
#   early_boot_test.sh FINAL_VMM VMLINUX
#
# The host's nested KVM runs guest ring 0 one instruction at a time (environment.md), so how long the kernel takes
# to get there depends on the machine's load: the script waits for the lines (up to 150 s) rather than for a time.
set -u
vmm=$1 vmlinux=$2
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
cmdline="earlyprintk=serial,ttyS0,115200 console=ttyS0 nokaslr vmmlab.marker=42"
"$vmm" --kernel "$vmlinux" --memory size=512M --cpus boot=2 --rng --cmdline "$cmdline" </dev/null >"$out" 2>"$err" &
pid=$!
waited=0
until grep -q 'BIOS-e820: \[mem 0x0000000000100000-0x000000001fffffff\] usable' "$out" || [ "$waited" -ge 1500 ]; do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
    waited=$((waited + 1))
done
kill -INT "$pid" 2>/dev/null
wait "$pid"
status=$?
cat "$out"
cat "$err" >&2
failures=0
expect() {
    if grep -q -- "$1" "$2"; then echo "PASS: $1"; else echo "FAIL: no '$1'"; failures=$((failures + 1)); fi
}
expect "Linux version [0-9]" "$out"
expect "Command line: $cmdline" "$out"
expect 'BIOS-e820: \[mem 0x0000000000000000-0x000000000009fbff\] usable' "$out"
expect 'BIOS-e820: \[mem 0x000000000009fc00-0x00000000000fffff\] reserved' "$out"
expect 'BIOS-e820: \[mem 0x0000000000100000-0x000000001fffffff\] usable' "$out"
expect 'final-vmm: stopped: signal Interrupt' "$err"
[ "$status" -eq 0 ] || { echo "FAIL: final-vmm exited $status after SIGINT"; failures=$((failures + 1)); }
echo "reached the e820 map after $((waited / 10)) s"
exit "$failures"
