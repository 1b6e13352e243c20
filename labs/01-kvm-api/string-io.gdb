# Lab 01, gdb walkthrough 3: string I/O. One instruction, REP INSB, asks for 16 bytes from port 0x3f9.
#
#   labs/gdb/vmm-gdb -x labs/01-kvm-api/string-io.gdb --args build/dev/stage01-kvm-api/stage01-kvm-api --guest string_io
#
# Inside the rig (tools/rig), on a standard KVM, the first IN exit carries count 16. The host's nested KVM emulates
# the instruction one item at a time: count 1, sixteen times. The VMM must handle both.
set pagination off
set confirm off
set breakpoint pending off

# Stop where the VMM decodes each exit, and print the kvm_run page of the vCPU that exited.
break vmm::kvm::decode_exit
commands
  silent
  vmm kvm-run
  continue
end
run

# Q1. The first exit is the REP INSB. How many items does it carry here (io.count)? Where would item 5 be?
# CHECK: kvm_run {exit_reason = KVM_EXIT_IO (2)} = {io.direction = in, io.size = 1, io.port = 0x3f9, io.count = {{[0-9]+}}
#
# Q2. Then REP OUTSB writes the bytes back to 0x3f8. Which exit carries the first byte, 'h' (0x68)?
# CHECK: io.direction = out, io.size = 1, io.port = 0x3f8, io.count = {{[0-9]+}}, io.data_offset = 0x1000, io.data = [68
#
# Q3. Why does `print run_page()` after the last OUT show the data of that exit only? Where did the earlier bytes go?
# CHECK: kvm_run {exit_reason = KVM_EXIT_HLT (5)}
# CHECK: hello, rep insb
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
