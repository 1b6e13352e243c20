# Lab 09, gdb walkthrough 2: the PCI bus Linux will find. There is no firmware in final-vmm: who gave the devices
# their addresses?
#
#   labs/gdb/vmm-gdb -x labs/09-final-vmm/pci.gdb --args build/dev/final-vmm/final-vmm \
#       --kernel build/dev/final-vmm/guest/vmlinux --cpus 2 --rng
#
# The machine is complete when Vmm::start runs: memory, kernel, vCPUs and devices exist, and no vCPU has run yet.
# Answer the questions (Q6..Q8); the answers are in labs/09-final-vmm/README.md. The "# CHECK" lines are what CTest
# expects this script to print.
set pagination off
set confirm off
set breakpoint pending off

break vmm::machine::Vmm::start
run
# CHECK: Breakpoint 1, vmm::machine::Vmm::start
next

# Q6. BAR0 of the virtio-rng already has an address and the command register enables memory decoding, although no
#     guest instruction has run. Which function did that, and what would Linux do if BAR0 were still 0?
vmm pci this->root_
# CHECK: 00:00.0 vmm::pci::HostBridge
# CHECK: vendor 1b36 device 0008, class 06/00/00
# CHECK: 00:01.0 vmm::virtio::VirtioPciDevice
# CHECK: vendor 1af4 device 1044
# CHECK: command 0x0002 (MEMORY)
# CHECK: BAR0 mem32 size 0x4000 at 0xc0000000 -> mapped on the mmio bus [0xc0000000, 0xc0004000)
# CHECK: BAR2 mem32 size 0x1000 at 0xc0004000 -> mapped on the mmio bus [0xc0004000, 0xc0005000)

# Q7. MSI-X is disabled here. Who enables it, when, and what does final-vmm do then (where do the GSI routes come
#     from; see --dump-topology)?
# CHECK: MSI-X: 2 vectors, disabled

# Q8. 0xc0000000 is the start of the PCI hole. Which e820 entry covers it? (None: why is that right?)
p this->layout_
# CHECK: ram = std::vector of length 1, capacity 1 = {[0x0, 0x20000000)}, pci_hole = [0xc0000000, 0x100000000)
kill
