# Lab 06, gdb walkthrough 1: who runs where. The threads of stage06's machine, stopped while the device works.
#
#   labs/gdb/vmm-gdb -x labs/06-irqfd-ioeventfd/threads.gdb --args \
#       build/dev/stage06-irqfd-ioeventfd/stage06-irqfd-ioeventfd --timeout 60
#
# The demo runs the guest twice: run 1 with stage05's wiring, run 2 with ioeventfds, a worker thread and irqfds. This
# script stops in run 2, the first time the worker handles a kick, and looks at every thread. Answer the questions
# (Q1..Q5) as you go; the answers are in labs/06-irqfd-ioeventfd/README.md, "gdb answers". The "# CHECK" lines are
# what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off
# The VMM kicks its vCPU thread out of KVM_RUN with SIGUSR1 when it stops: not a bug, let it through.
handle SIGUSR1 nostop noprint pass

# The worker's handler for a queue eventfd that KVM signalled (ThreadedDevice's subscriber).
break vmm::virtio::ThreadedDevice::Subscriber::process_queue
run
# CHECK: --- run 1: stage05 wiring (synchronous) ---
# CHECK: PASS
# CHECK: --- run 2: ioeventfd + worker thread + irqfd ---
# CHECK: Thread {{[0-9]+}} "rng-worker" hit Breakpoint 1, vmm::virtio::ThreadedDevice::Subscriber::process_queue

# Q1. Run 1 served 32 requests and never stopped here. Why not? And why did run 2 stop in a thread called
#     "rng-worker" rather than "vcpu0"?
# Q2. Four threads. For each: what is it waiting for right now, and who will wake it? Which one is executing the
#     guest? Which thread did the demo not name, and how do you tell it from the main thread?
info threads
# CHECK: Id Target Id Frame
# CHECK-NEXT: 1 Thread {{0x[0-9a-f]+}} (LWP {{[0-9]+}}) "stage06-irqfd-i" {{.*}}futex
# CHECK-NEXT: {{[0-9]+}} Thread {{0x[0-9a-f]+}} (LWP {{[0-9]+}}) "stage06-irqfd-i" {{.*}}poll
# CHECK-NEXT: {{[0-9]+}} Thread {{0x[0-9a-f]+}} (LWP {{[0-9]+}}) "vcpu0" {{.*}}ioctl
# CHECK-NEXT: * {{[0-9]+}} Thread {{0x[0-9a-f]+}} (LWP [[TID:[0-9]+]]) "rng-worker" vmm::virtio::ThreadedDevice::Subscriber::process_queue
thread apply all bt -frame-info short-location 4
# CHECK: (LWP {{[0-9]+}}) "rng-worker"):
# CHECK-NEXT: #0 vmm::virtio::ThreadedDevice::Subscriber::process_queue
# CHECK-NEXT: #1 {{.*}}vmm::virtio::ThreadedDevice::Subscriber::process (this={{0x[0-9a-f]+}}, fd={{[0-9]+}})
# CHECK-NEXT: #2 {{.*}}vmm::event::detail::EventManagerState::dispatch
# CHECK: (LWP {{[0-9]+}}) "vcpu0"):
# CHECK-NEXT: #0 {{.*}}ioctl
# CHECK-NEXT: #1 {{.*}}vmm::detail::checked_ioctl ({{.*}}name="KVM_RUN"
# CHECK-NEXT: #2 {{.*}}vmm::ioctl
# CHECK-NEXT: #3 {{.*}}vmm::kvm::Vcpu::run
# CHECK: (LWP {{[0-9]+}}) "stage06-irqfd-i"):
# CHECK-NEXT: #0 {{.*}}poll
# CHECK-NEXT: #1 {{.*}}vmm::irq::IrqfdLine::resample_loop
# CHECK: Thread 1 (Thread {{0x[0-9a-f]+}} (LWP {{[0-9]+}}) "stage06-irqfd-i"):
# CHECK-NEXT: #0 {{.*}}futex

# Q3. The worker knows its own thread ID (gettid, what /proc/<pid>/task and `top -H` show). Compare it with the
#     LWP of the "rng-worker" line above. When does this thread start, and when does it end?
up
# CHECK: #1 {{.*}}vmm::virtio::ThreadedDevice::Subscriber::process (this={{0x[0-9a-f]+}}, fd={{[0-9]+}})
print device_.tid_
# CHECK: $1 = std::atomic<int> = { [[TID]] }
print device_.running_
# CHECK: $2 = std::atomic<bool> = { true }

# Q4. The descriptors. How many eventfds does run 2's machine hold, and whose are they (the rng's queue, the
#     fallback kick and the stop signal; an irqfd per MSI-X vector; the UART's irqfd, resample and stop eventfds; the
#     worker loop's own)? Two descriptors show the same id: why does one eventfd have two? Which descriptor is the
#     epoll instance the worker sleeps in, and which eventfd woke it (its count is not 0: nobody has read it yet)?
print fd
# CHECK: $3 = [[FD:[0-9]+]]
vmm fds all
# CHECK: -> anon_inode:kvm-vm
# CHECK: -> anon_inode:kvm-vcpu:0
# CHECK: fd [[FD]] -> anon_inode:[eventfd] (count {{[1-9][0-9]*}}, id {{[0-9]+}})
# CHECK: -> anon_inode:[eventpoll]

# Q5. The worker is stopped, and so is every other thread (gdb's all-stop mode). What was vcpu0 doing when gdb
#     stopped it, and what will the guest see of this pause?
delete
continue
# CHECK: eventfd: the virtio-rng worker thread woke {{[0-9]+}} times
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
