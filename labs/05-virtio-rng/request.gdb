# Lab 05, gdb walkthrough 2: one request, from the driver's kick to the interrupt.
#
#   labs/gdb/vmm-gdb -x labs/05-virtio-rng/request.gdb --args build/dev/stage05-virtio-rng/stage05-virtio-rng \
#       --quiet --timeout 60 --only-event-idx --batches 1 --per-batch 2
#
# One phase (EVENT_IDX on), one batch of two requests: the first is followed from the notify write to its used
# entry; the second to the MSI-X message. Answer the questions (Q1..Q7) as you go; the answers are in
# labs/05-virtio-rng/README.md, "gdb answers". The "# CHECK" lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off
# The VMM kicks its vCPU thread out of KVM_RUN with SIGUSR1 when it stops: not a bug, let it through.
handle SIGUSR1 nostop noprint pass

# The kick is the driver's 16-bit write of the queue index to BAR0 + 0x3000 (the notify region, queue 0). gdb stops
# at bar_write's very first instruction, before the function has stored its arguments on the stack, so `offset` is
# not readable yet (see README.md). The System V calling convention has them in registers: rdi = this,
# rsi = bar_index, rdx = offset. Accesses to the common configuration (offsets below 0x1000) do not stop.
break vmm::virtio::VirtioPciDevice::bar_write if $rsi == 0 && $rdx >= 0x3000
run
# CHECK: Thread 2 "vcpu0" hit Breakpoint 1, vmm::virtio::VirtioPciDevice::bar_write (this=

# Q1. The arguments gdb printed on that line are garbage: why? Which register holds which argument, and what does
#     0x3000 say about the queue being notified? Why is this write an exit to the VMM at all?
print/x $rdx
# CHECK: $1 = 0x3000
next
info args
# CHECK: bar_index = 0
# CHECK-NEXT: offset = 12288
# CHECK-NEXT: data = std::span of length 2 = {0 '\000', 0 '\000'}

# Q2. The queue before the device has done anything about this kick. How many chains are waiting, and how do you
#     see it? avail_event is 0: why did the driver decide to kick (its kick_needed in guest/virtio_rng.c)?
vmm vq
# CHECK: SplitQueue `this` (VirtioPciDevice -> RngDevice, queue 0 of its activation) in frame #0 (vmm::virtio::VirtioPciDevice::bar_write)
# CHECK-NEXT: size 16, features EVENT_IDX, next_avail 0, next_used 0
# CHECK-NEXT: descriptor table at {{0x[0-9a-f]+}}, available ring at {{0x[0-9a-f]+}}, used ring at {{0x[0-9a-f]+}}
# CHECK-NEXT: available ring: flags 0x0 (none), idx 1, used_event 1
# CHECK-NEXT: idx 0 slot 0: head 0, pending
# CHECK-NEXT: used ring: flags 0x0 (none), idx 0, avail_event 0
# CHECK-NEXT: (nothing used)
# CHECK-NEXT: descriptors (the chains of the heads above):
# CHECK-NEXT: [0] addr {{0x[0-9a-f]+}} len 16 flags WRITE
# CHECK-NEXT: counters: notifications 0, chains 0, used 0, interrupts 0, suppressed 0, errors 0

# Q3. Which thread is this, and what is it in the middle of? Who will run the device's code?
bt 5
# CHECK: #0 {{.*}}vmm::virtio::VirtioPciDevice::bar_write (this={{0x[0-9a-f]+}}, bar_index=0, offset=12288,
# CHECK-NEXT: #1 {{.*}}vmm::pci::(anonymous namespace)::BarWindow::write (this={{0x[0-9a-f]+}}, offset=12288,
# CHECK-NEXT: #2 {{.*}}vmm::devices::Bus::write (this={{0x[0-9a-f]+}}, address=3221237760,
# CHECK-NEXT: #3 {{.*}}vmm::machine::(anonymous namespace)::dispatch_mmio (mmio=MmioExit {write address 0xc0003000 length 2 data [00 00] '..'},
# CHECK-NEXT: #4 {{.*}}vmm::machine::run_vcpu_loop

# The transport counted the kick and hands it to the device, still on the vCPU thread.
break vmm::virtio::rng::RngDevice::queue_notify
continue
# CHECK: Thread 2 "vcpu0" hit Breakpoint 2, vmm::virtio::rng::RngDevice::queue_notify
bt 3
# CHECK: #0 {{.*}}vmm::virtio::rng::RngDevice::queue_notify
# CHECK-NEXT: #1 {{.*}}vmm::virtio::VirtioPciDevice::notify_write (this={{0x[0-9a-f]+}}, offset=0, size=2)
# CHECK-NEXT: #2 {{.*}}vmm::virtio::VirtioPciDevice::bar_write (this={{0x[0-9a-f]+}}, bar_index=0, offset=12288,

# Q4. pop: what does it read from guest memory, in which order, and why is the first read an acquire load? What
#     did it hand back?
break vmm::virtio::SplitQueue::pop
continue
# CHECK: Thread 2 "vcpu0" hit Breakpoint 3, vmm::virtio::SplitQueue::pop
finish
# CHECK: Value returned is $2 = Result {ok: std::optional<vmm::virtio::DescriptorChain> = {[contained value] = DescriptorChain {head 0, readable none, writable [{{[{]}}{{0x[0-9a-f]+}}, 16 bytes}], 1 descriptor walked}}}

# Q5. The device filled the buffer and returns the chain. What does the used entry say, and what must be visible to
#     the driver before used->idx moves? Is the driver interrupted now?
delete
break vmm::virtio::SplitQueue::add_used
continue
# CHECK: Thread 2 "vcpu0" hit Breakpoint 4, vmm::virtio::SplitQueue::add_used
up
print written
# CHECK: $3 = 16
down
finish
# CHECK: Value returned is $4 = Result {ok}
vmm vq
# CHECK: SplitQueue `this` (RngDevice, queue 0 of its activation) in frame #0 (vmm::virtio::rng::RngDevice::process_locked)
# CHECK-NEXT: size 16, features EVENT_IDX, next_avail 1, next_used 1
# CHECK: used ring: flags 0x0 (none), idx 1, avail_event 0
# CHECK-NEXT: idx 0 slot 0: id 0, len 16
# CHECK: counters: notifications 1, chains 1, used 1, interrupts 0, suppressed 0, errors 0

# Q6. Does the driver want an interrupt for this entry? And for the next request's? Work out both from used_event
#     (the driver wrote 1 before posting the batch) with need_event(event, new, old).
delete
break vmm::virtio::SplitQueue::needs_notification
continue
# CHECK: Thread 2 "vcpu0" hit Breakpoint 5, vmm::virtio::SplitQueue::needs_notification
finish
# CHECK: Value returned is $5 = Result {ok: false}
break vmm::pci::MsixTable::trigger
continue
# CHECK: Thread 2 "vcpu0" hit Breakpoint 5, vmm::virtio::SplitQueue::needs_notification
finish
# CHECK: Value returned is $6 = Result {ok: true}

# Q7. The interrupt. Where does this call come from, on which thread? Which MSI-X entry is fired, with which
#     message, and when will the guest's handler run?
continue
# CHECK: Thread 2 "vcpu0" hit Breakpoint 6, vmm::pci::MsixTable::trigger
bt 6
# CHECK: #0 {{.*}}vmm::pci::MsixTable::trigger
# CHECK-NEXT: #1 {{.*}}vmm::virtio::VirtioPciDevice::raise_queue (this={{0x[0-9a-f]+}}, queue_index=0)
# CHECK-NEXT: #2 {{.*}}vmm::virtio::VirtioPciDevice::Interrupt::signal_queue (this={{0x[0-9a-f]+}}, queue_index=0)
# CHECK-NEXT: #3 {{.*}}vmm::virtio::rng::RngDevice::process_locked
# CHECK-NEXT: #4 {{.*}}vmm::virtio::rng::RngDevice::queue_notify (this={{0x[0-9a-f]+}}, queue_index=0)
# CHECK-NEXT: #5 {{.*}}vmm::virtio::VirtioPciDevice::notify_write (this={{0x[0-9a-f]+}}, offset=0, size=2)
up
print vector
# CHECK: $7 = 1
print msix_->entries_[vector]
# CHECK: $8 = {address = 4276092928, data = 80, control = 0}
vmm vq
# CHECK: SplitQueue `this` (VirtioPciDevice -> RngDevice, queue 0 of its activation) in frame #1 (vmm::virtio::VirtioPciDevice::raise_queue)
# CHECK-NEXT: size 16, features EVENT_IDX, next_avail 2, next_used 2
# CHECK: used ring: flags 0x0 (none), idx 2, avail_event 2
# CHECK-NEXT: idx 0 slot 0: id 0, len 16
# CHECK-NEXT: idx 1 slot 1: id 1, len 16
# CHECK: counters: notifications 2, chains 2, used 2, interrupts 0, suppressed 1, errors 0

delete
continue
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
