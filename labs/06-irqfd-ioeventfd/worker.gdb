# Lab 06, gdb walkthrough 2: one kick through an ioeventfd, from the worker's side; the vCPU meanwhile.
#
#   labs/gdb/vmm-gdb -x labs/06-irqfd-ioeventfd/worker.gdb --args \
#       build/dev/stage06-irqfd-ioeventfd/stage06-irqfd-ioeventfd --timeout 60
#
# Stops in run 2 (ioeventfds, worker thread, irqfds) when the worker wakes up for its first kick: the eventfd KVM
# signalled, the device's queue_notify on the worker, where the vCPU is meanwhile, and the interrupt going out
# through an irqfd on a GSI route. Answer the questions (Q1..Q6) as you go; the answers are in
# labs/06-irqfd-ioeventfd/README.md, "gdb answers". The "# CHECK" lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off
# The VMM kicks its vCPU thread out of KVM_RUN with SIGUSR1 when it stops: not a bug, let it through.
handle SIGUSR1 nostop noprint pass

break vmm::virtio::ThreadedDevice::Subscriber::process_queue
run
# CHECK: --- run 2: ioeventfd + worker thread + irqfd ---
# CHECK: Thread {{[0-9]+}} "rng-worker" hit Breakpoint 1, vmm::virtio::ThreadedDevice::Subscriber::process_queue

# Q1. How did this thread get here? Read the backtrace from the bottom: which loop was it sleeping in, on which
#     system call, and what made that call return? (process_queue's own arguments are not stored yet: gdb stopped at
#     its first instruction. Its caller's frame is complete.)
bt -frame-info short-location 16
# CHECK: #0 vmm::virtio::ThreadedDevice::Subscriber::process_queue
# CHECK-NEXT: #1 {{.*}}vmm::virtio::ThreadedDevice::Subscriber::process (this={{0x[0-9a-f]+}}, fd={{[0-9]+}})
# CHECK-NEXT: #2 {{.*}}vmm::event::detail::EventManagerState::dispatch
# CHECK: vmm::event::EventLoop::run_once
# CHECK-NEXT: vmm::event::EventManager::run_once
# CHECK-NEXT: vmm::event::EventManager::run

# Q2. The eventfd that woke the worker: the kernel shows its counter in /proc/<pid>/fdinfo/<fd> (in hex). Who added
#     to it, and in which kernel function? Nobody has read it yet: what will process_queue do with the value, and
#     why can it be more than 1?
up
print fd
# CHECK: $1 = {{[0-9]+}}
python print(open("/proc/%d/fdinfo/%d" % (gdb.selected_inferior().pid, int(gdb.parse_and_eval("fd")))).read())
# CHECK: eventfd-count: {{ *}}{{[1-9a-f][0-9a-f]*$}}

# Q3. The device's code, on the worker thread. Compare with lab 05's request.gdb, where queue_notify was called from
#     VirtioPciDevice::notify_write on vcpu0. What does the transport know of this kick?
tbreak vmm::virtio::rng::RngDevice::queue_notify
continue
# CHECK: Thread {{[0-9]+}} "rng-worker" hit Temporary breakpoint 2, vmm::virtio::rng::RngDevice::queue_notify
bt -frame-info short-location 3
# CHECK: #0 vmm::virtio::rng::RngDevice::queue_notify
# CHECK-NEXT: #1 {{.*}}vmm::virtio::ThreadedDevice::Subscriber::process_queue (this={{0x[0-9a-f]+}}, q=0)
# CHECK-NEXT: #2 {{.*}}vmm::virtio::ThreadedDevice::Subscriber::process (this={{0x[0-9a-f]+}}, fd={{[0-9]+}})
up
print kicks
# CHECK: $2 = std::optional<unsigned long> = {[contained value] = {{[1-9][0-9]*}}}

# Q4. And the vCPU, while the worker serves its kick? Switch to it (`thread find vcpu0` gives its number; the python
#     line does the same by name). Which system call is it in, and what did the last KVM_RUN exit say? Why that
#     reason, and not KVM_EXIT_MMIO for the notify write?
thread find vcpu0
# CHECK: Thread {{[0-9]+}} has target name 'vcpu0'
python [t.switch() for t in gdb.selected_inferior().threads() if t.name == "vcpu0"]
bt -frame-info short-location 6
# CHECK: #0 {{.*}}ioctl
# CHECK: vmm::kvm::Vcpu::run
# CHECK-NEXT: vmm::machine::run_vcpu_loop
vmm kvm-run
# CHECK: kvm_run {exit_reason = KVM_EXIT_INTR (10)}

# Q5. The interrupt. The device decided to interrupt the guest: follow the message from the device to the irqfd.
#     Which MSI-X vector, which GSI, and what does the routing table say that GSI sends? Which thread writes the
#     irqfd, and which kernel function delivers the interrupt?
# (The worker wakes again for later kicks of this batch before the device interrupts: stop watching for those.)
delete 1
break vmm::irq::MsixRoutes::signal
continue
# CHECK: Thread {{[0-9]+}} "rng-worker" hit Breakpoint 3, vmm::irq::MsixRoutes::signal
next
info args
# CHECK: this = {{0x[0-9a-f]+}}
# CHECK-NEXT: message = @{{0x[0-9a-f]+}}: {address = 4276092928, data = 80}
# CHECK-NEXT: vector = 1
bt -frame-info short-location 7
# CHECK: #0 vmm::irq::MsixRoutes::signal
# CHECK-NEXT: #1 {{.*}}vmm::stage06::IrqfdMsi::signal
# CHECK-NEXT: #2 {{.*}}vmm::pci::MsixTable::trigger (this={{0x[0-9a-f]+}}, vector=1)
# CHECK-NEXT: #3 {{.*}}vmm::virtio::VirtioPciDevice::raise_queue (this={{0x[0-9a-f]+}}, queue_index=0)
# CHECK-NEXT: #4 {{.*}}vmm::virtio::VirtioPciDevice::Interrupt::signal_queue
# CHECK-NEXT: #5 {{.*}}vmm::virtio::rng::RngDevice::process_locked
# CHECK-NEXT: #6 {{.*}}vmm::virtio::rng::RngDevice::queue_notify
print vectors_
# CHECK: $3 = std::vector of length 2, capacity 2 = {{[{][{]}}gsi = 24, irqfd = {{.*}}, bound = true, signals = 0}, {gsi = 25, irqfd = {{.*}}, bound = true, signals = 0}}
print routing_.table_.msi_
# CHECK: $4 = std::map with 2 elements = {[24] = {address = 4276092928, data = 81}, [25] = {address = 4276092928, data = 80}}
set $routes = this

# Q6. Let signal run: what changed, and what did it cost the vCPU?
finish
# CHECK: Value returned is $5 = Result {ok}
print $routes->vectors_[1].signals
# CHECK: $6 = 1

delete
continue
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
