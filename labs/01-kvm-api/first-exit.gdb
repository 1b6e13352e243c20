# Lab 01, gdb walkthrough 1: from file descriptors to the first exit.
#
#   labs/gdb/vmm-gdb -x labs/01-kvm-api/first-exit.gdb --args build/dev/stage01-kvm-api/stage01-kvm-api
#
# Answer the questions (Q1..Q6) as you go; the answers are in labs/01-kvm-api/README.md, "gdb answers".
# The "# CHECK" lines are what CTest expects this script to print (FileCheck reads them; gdb ignores comments).
set pagination off
set confirm off
set breakpoint pending off

# Stop on the way into KVM_RUN. (At this first line the arguments are not set up yet: step once before reading them.)
break vmm::kvm::Vcpu::run
run
# CHECK: Breakpoint 1, vmm::kvm::Vcpu::run
next

# Q1. Three descriptors are open. Which call created each one, and which object owns it?
vmm fds
# CHECK: fd {{[0-9]+}} -> /dev/kvm
# CHECK-NEXT: fd {{[0-9]+}} -> anon_inode:kvm-vm
# CHECK-NEXT: fd {{[0-9]+}} -> anon_inode:kvm-vcpu:0

# Q2. The guest has not run yet. Where will it start, and which function put it there?
vmm regs
# CHECK: vCPU 0: rip 0x1000 rflags 0x2
# CHECK-NEXT: rax 0x2 rbx 0x3

# Step over the KVM_RUN ioctl: the guest runs inside it until its first OUT.
next

# Q3. The kvm_run page says why KVM returned. Which port, how many bytes, which value? At what offset in the page
#     is the byte, and why is it not inside struct kvm_run itself?
print run_page()
# CHECK: kvm_run {exit_reason = KVM_EXIT_IO (2)}
# CHECK-SAME: io.direction = out, io.size = 1, io.port = 0x3f8, io.count = 1, io.data_offset = 0x1000, io.data = [35] '5'

# Q4. This page is shared with the kernel. How did it get into our address space, and how big is it?
print this->run_
# CHECK: vmm::Mmap {[0x{{[0-9a-f]+}}, 0x{{[0-9a-f]+}}) 0x{{[0-9a-f]+}} bytes}
print this->fd_
# CHECK: vmm::Fd {{[{][0-9]+}} -> anon_inode:kvm-vcpu:0}

# Q5. Back in the run loop, the page has become a typed exit: a vmm::Result holding a VcpuExit, whose active
#     alternative is an IoExit. Its data is a std::span: does it point into a copy, or into the kvm_run page?
break vmm::kvm::exit_reason
continue
up
print exit
# CHECK: Result {ok: IoExit {out port 0x3f8 size 1 count 1 data [35] '5'}}

# Q6. Let the program finish. The guest made three exits; what was the third, and why does the VMM stop there?
delete
continue
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
