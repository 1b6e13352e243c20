# Lab 08, gdb walkthrough 2: one interrupt of the device, from the eventfd VFIO signals to the vector in the guest's
# local APIC.
#
#   labs/gdb/vmm-gdb -x labs/08-vfio/interrupt.gdb --args build/dev/labs/08-vfio/lab08-walk
#
# lab08-walk (labs/08-vfio/walk.cpp) passes an edu-like device through on a real KVM VM: a FakeVfioDevice stands
# for VFIO (so no VFIO is needed), everything else is stage08 and KVM. The walk then does what the edu guest's driver
# does to MSI (address 0xfee00000, data 0x41, Enable), and finally what vfio-pci does when the device's MSI arrives
# on the host: one write to the eventfd it was handed. This script follows that eventfd through the three places
# that tie it to the guest: KVM_IRQFD (eventfd -> GSI), the GSI route (GSI -> message), VFIO_DEVICE_SET_IRQS (device
# -> eventfd). Answer the questions (Q1..Q6) as you go; the answers are in labs/08-vfio/README.md, "gdb answers".
# The "# CHECK" lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off

break vmm::irq::assign_irqfd
run
# CHECK: Breakpoint 1, vmm::irq::assign_irqfd

# Q1. The first of the three: KVM_IRQFD. When does the VMM bind the device's eventfd to a GSI: when the guest enables
#     MSI, or earlier? Which object owns the eventfd, and how many does it make?
bt -frame-info short-location 5
# CHECK: #0 vmm::irq::assign_irqfd
# CHECK-NEXT: #1 {{.*}}vmm::irq::KvmIrqfdBinder::bind
# CHECK-NEXT: #2 {{.*}}vmm::vfio::MsiRoutes::create
# CHECK-NEXT: #3 {{.*}}vmm::vfio::VfioPciDevice::init_msi
# CHECK-NEXT: #4 {{.*}}vmm::vfio::VfioPciDevice::init

# (gdb stopped at the function's first instruction: one `next` and its arguments are stored.)
next
python
frame = gdb.selected_frame()
irqfd = int(frame.read_var("event")["fd_"]["fd_"])
print("KVM_IRQFD: eventfd fd %d -> GSI %d" % (irqfd, int(frame.read_var("gsi"))))
end
# CHECK: KVM_IRQFD: eventfd fd [[FD:[0-9]+]] -> GSI [[GSI:[0-9]+]]

# Q2. GSI 24 has no route yet (the guest has not programmed MSI). If something wrote this eventfd now, what would KVM
#     do with it? Where is the first GSI an MSI route may use, and why not below?
vmm fds all
# CHECK: -> anon_inode:kvm-vm
# CHECK: fd [[FD]] -> anon_inode:[eventfd] (count 0, id {{[0-9]+}})

# The second: the guest writes its MSI capability, and the VMM installs the GSI's route.
break vmm::irq::GsiRouting::set_msi
continue
# CHECK: Breakpoint 2, vmm::irq::GsiRouting::set_msi

# Q3. Which guest access got us here (find the port and the config register in the backtrace)? The guest's address
#     and data stay in the VMM's copy of config space: why are they never written to the device's own capability?
bt -frame-info short-location 9
# CHECK: #0 vmm::irq::GsiRouting::set_msi
# CHECK-NEXT: #1 {{.*}}vmm::vfio::MsiRoutes::update
# CHECK-NEXT: #2 {{.*}}vmm::vfio::VfioPciDevice::msi_changed
# CHECK-NEXT: #3 {{.*}}vmm::vfio::VfioPciDevice::config_written
# CHECK-NEXT: #4 {{.*}}vmm::pci::PciRoot::config_write
# CHECK: lab08::walk::guest_config_write
next
python
frame = gdb.selected_frame()
message = frame.read_var("message")
print("route: GSI %d -> MSI address %#x data %#x" % (int(frame.read_var("gsi")), int(message["address"]),
                                                    int(message["data"])))
end
# CHECK: route: GSI [[GSI]] -> MSI address 0xfee00000 data 0x41

# The third: VFIO is told which eventfd to signal for the device's MSI vector 0.
break vmm::vfio::testing::FakeVfioDevice::set_irqs_eventfds
continue
# CHECK: Breakpoint 3, vmm::vfio::testing::FakeVfioDevice::set_irqs_eventfds
next
python
frame = gdb.selected_frame()
span = frame.read_var("eventfds")
count = int(span["_M_extent"]["_M_extent_value"])
fds = [int(span["_M_ptr"][i]) for i in range(count)]
names = {0: "INTx", 1: "MSI", 2: "MSI-X", 3: "ERR", 4: "REQ"}
index = int(frame.read_var("index"))
print("VFIO_DEVICE_SET_IRQS: index %d (%s), start %d, eventfds: %s" % (index, names.get(index, "?"),
                                                                    int(frame.read_var("start")),
                                                                    ", ".join(str(fd) for fd in fds)))
end
# Q4. The same descriptor as in Q1. Who will write it, and who reads it? With a real device, what does vfio-pci do
#     with the device's own MSI capability at this call, and with which address and data?
# CHECK: VFIO_DEVICE_SET_IRQS: index 1 (MSI), start 0, eventfds: [[FD]]
bt -frame-info short-location 2
# CHECK: #0 vmm::vfio::testing::FakeVfioDevice::set_irqs_eventfds
# CHECK-NEXT: #1 {{.*}}vmm::vfio::VfioPciDevice::msi_changed

# The device fires: lab08::walk::fire writes the eventfd, as vfio-pci's interrupt handler would. Everything in the VMM
# that could deliver an interrupt gets a breakpoint: none of them is hit.
break lab08::walk::fire
continue
# CHECK: guest enabled MSI: GSI [[GSI]] -> address 0xfee00000 data 0x41; VFIO_DEVICE_SET_IRQS(MSI) got eventfd [[FD]]
# CHECK: Breakpoint 4, lab08::walk::fire
break vmm::pci::KvmSignalMsi::signal
break vmm::irq::MsixRoutes::signal
break vmm::pci::MsixTable::trigger
python
import os
pid = gdb.selected_inferior().pid

def eventfd_count(fd):
    with open("/proc/%d/fdinfo/%d" % (pid, fd)) as info:
        for line in info:
            if line.startswith("eventfd-count:"):
                return int(line.split(":")[1], 16)

print("before the write: eventfd %d count %d" % (irqfd, eventfd_count(irqfd)))
end
# CHECK: before the write: eventfd [[FD]] count 0
finish
python print("after the write: eventfd %d count %d" % (irqfd, eventfd_count(irqfd)))
# Q5. The write added 1 to the counter, yet it reads 0 right after: who read it, in which context, and what did it
#     do with the GSI's route? Which thread of the VMM woke up?
# CHECK: after the write: eventfd [[FD]] count 0

# Q6. The walk now reads vCPU 0's local APIC (KVM_GET_LAPIC). Where is vector 0x41, and what would a running guest
#     do with it? What would change if the guest masked the vector (MSI-X), and who would have to act then?
continue
# CHECK-NOT: Breakpoint {{[5-7]}},
# CHECK: vCPU 0's LAPIC has vector 0x41 pending: yes (before: no)
# CHECK: interrupts the VMM relayed {{ *}}0
# CHECK: PASS
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
