# Lab 05, gdb walkthrough 1: a split virtqueue in guest memory, seen from the device while it works.
#
#   labs/gdb/vmm-gdb -x labs/05-virtio-rng/ring.gdb --args build/dev/stage05-virtio-rng/stage05-virtio-rng \
#       --quiet --timeout 60 --only-event-idx --queue-size 4 --batches 2 --per-batch 4
#
# A queue of only 4 entries and 8 requests (two batches of 4, EVENT_IDX on), so the free-running indices go past the
# ring's end. Answer the questions (Q1..Q5) as you go; the answers are in labs/05-virtio-rng/README.md, "gdb
# answers". The "# CHECK" lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off
# The VMM kicks its vCPU thread out of KVM_RUN with SIGUSR1 when it stops: not a bug, let it through.
handle SIGUSR1 nostop noprint pass

# Every request ends in one add_used. Skip the first five: stop as the device returns the sixth (the second request
# of the second batch), after it popped and filled it and before the used ring has it.
break vmm::virtio::SplitQueue::add_used
ignore 1 5
run
# CHECK: Thread 2 "vcpu0" hit Breakpoint 1, vmm::virtio::SplitQueue::add_used

# gdb stops at add_used's first instruction: its arguments are not stored yet (see README.md). The caller's frame is
# complete: go up to RngDevice::process_locked, which popped the chain and holds it.
up
# CHECK: #1 {{.*}}vmm::virtio::rng::RngDevice::process_locked

# Q1. The layout. For a queue of 4, how many bytes does each area take, and how is each aligned? Check the three
#     addresses against the alignments. At which guest-physical addresses do used_event and avail_event live?
# Q2. The available ring's idx is 6, but the ring has 4 slots. Where did entries 4 and 5 go? Why must the queue
#     size be a power of two for this to keep working when idx wraps from 65535 to 0?
vmm vq
# CHECK: SplitQueue `this` (RngDevice, queue 0 of its activation) in frame #1 (vmm::virtio::rng::RngDevice::process_locked)
# CHECK-NEXT: size 4, features EVENT_IDX, next_avail 6, next_used 5
# CHECK-NEXT: descriptor table at {{0x[0-9a-f]*[0]}}, available ring at {{0x[0-9a-f]*[02468ace]}}, used ring at {{0x[0-9a-f]*[048c]}}
# CHECK-NEXT: available ring: flags 0x0 (none), idx 6, used_event 7
# CHECK-NEXT: idx 2 slot 2: head 2, popped
# CHECK-NEXT: idx 3 slot 3: head 3, popped
# CHECK-NEXT: idx 4 slot 0: head 0, popped
# CHECK-NEXT: idx 5 slot 1: head 1, popped
# CHECK-NEXT: used ring: flags 0x0 (none), idx 5, avail_event 5
# CHECK-NEXT: idx 1 slot 1: id 1, len 16
# CHECK-NEXT: idx 2 slot 2: id 2, len 16
# CHECK-NEXT: idx 3 slot 3: id 3, len 16
# CHECK-NEXT: idx 4 slot 0: id 0, len 16
# CHECK-NEXT: descriptors (the chains of the heads above):
# CHECK-NEXT: [2] addr {{0x[0-9a-f]+}} len 16 flags WRITE
# CHECK-NEXT: [3] addr {{0x[0-9a-f]+}} len 16 flags WRITE
# CHECK-NEXT: [0] addr {{0x[0-9a-f]+}} len 16 flags WRITE
# CHECK-NEXT: [1] addr {{0x[0-9a-f]+}} len 16 flags WRITE
# CHECK-NEXT: counters: notifications 6, chains 6, used 5, interrupts 1, suppressed 4, errors 0

# Q3. The request the device is returning, as pop handed it over. Why is this a copy of the descriptors rather than
#     a pointer into the descriptor table? How many bytes did the device write?
print chain
# CHECK: $1 = DescriptorChain {head 1, readable none, writable [{{[{]0x[0-9a-f]+}}, 16 bytes}], 1 descriptor walked}
print written
# CHECK: $2 = 16
print queue
# CHECK: $3 = SplitQueue {size 4, features EVENT_IDX, next_avail 6, next_used 5}
print queue.layout_
# CHECK: $4 = QueueLayout {size 4, desc {{0x[0-9a-f]+}}, avail {{0x[0-9a-f]+}}, used {{0x[0-9a-f]+}}}

# Q4. The event indices. used_event is 7 and avail_event 5: who wrote each, and what does each ask for? Why did
#     the driver kick for idx 5? Which of this batch's requests will interrupt, and what did the device count for
#     the other ones?

# Q5. Let add_used run. Which slot of the used ring changed, and what happened to the entry that was there? In what
#     order did add_used write the entry and the index, and why that order?
down
finish
# CHECK: Value returned is $5 = Result {ok}
vmm vq
# CHECK: SplitQueue `this` (RngDevice, queue 0 of its activation) in frame #0 (vmm::virtio::rng::RngDevice::process_locked)
# CHECK-NEXT: size 4, features EVENT_IDX, next_avail 6, next_used 6
# CHECK: used ring: flags 0x0 (none), idx 6, avail_event 5
# CHECK-NEXT: idx 2 slot 2: id 2, len 16
# CHECK-NEXT: idx 3 slot 3: id 3, len 16
# CHECK-NEXT: idx 4 slot 0: id 0, len 16
# CHECK-NEXT: idx 5 slot 1: id 1, len 16
# CHECK: counters: notifications 6, chains 6, used 6, interrupts 1, suppressed 4, errors 0

delete
continue
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
