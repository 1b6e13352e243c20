# Lab 08, gdb walkthrough 1: guest RAM in the IOMMU. Every DMA mapping a passthrough VMM makes, and what it points at.
#
#   labs/gdb/vmm-gdb -x labs/08-vfio/dma.gdb --args build/dev/labs/08-vfio/lab08-walk
#
# lab08-walk builds stage08's passthrough path on a real KVM VM (see labs/08-vfio/walk.cpp): stage04's PciVm, guest
# RAM mapped for DMA by stage08's GuestRamDma, a device passed through with VfioPciDevice. It needs no VFIO:
# the container is a DmaMapper that records (RecordingDmaMapper: where the real one would make VFIO_IOMMU_MAP_DMA)
# and the device is stage08's FakeVfioDevice. This script stops at each MAP_DMA and compares what the IOMMU is told
# with what KVM was told. Answer the questions (Q1..Q5) as you go; the answers are in labs/08-vfio/README.md, "gdb
# answers". The "# CHECK" lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off

break lab08::walk::RecordingDmaMapper::map_dma
run
# CHECK: Breakpoint 1, lab08::walk::RecordingDmaMapper::map_dma

# Q1. Who asks for the mapping, and when: before or after the device exists? Before or after the guest could run?
#     Why then?
bt -frame-info short-location 3
# CHECK: #0 lab08::walk::RecordingDmaMapper::map_dma
# CHECK-NEXT: #1 {{.*}}vmm::vfio::GuestRamDma::sync
# CHECK-NEXT: #2 {{.*}}lab08::walk::run

# (gdb stopped at the function's first instruction: one `next` and its arguments are stored.)
next
python
def show_mapping():
    frame = gdb.selected_frame()
    iova, size = int(frame.read_var("iova")), int(frame.read_var("size"))
    host = int(frame.read_var("host_va"))
    access = " ".join(name for name in ("readable", "writable") if bool(frame.read_var(name)))
    print("MAP_DMA: IOVA [%#x, %#x) size %#x -> host %#x, %s" % (iova, iova + size, size, host, access))

show_mapping()
end
# CHECK: MAP_DMA: IOVA [0x0, 0x1000000) size 0x1000000 -> host [[RAM:0x[0-9a-f]+]], readable writable

# Q2. The guest's memory map (GuestMemory: what the VMM thinks the guest has) and KVM's slots (what KVM was told),
#     found in the callers' frames. Compare the IOVA with the guest-physical address, and the host address with the
#     slot's. Why must they be equal? What would the device reach if the IOVA were the host address instead?
vmm memmap
# CHECK: region 0: guest [0x0, 0x1000000) 16 MiB -> host [[RAM]]
# CHECK: region 1: guest [0x80000000, 0x80020000) 128 KiB -> host [[OUT:0x[0-9a-f]+]]
# CHECK: slot 0: guest [0x0, 0x1000000) 16 MiB -> host [[RAM]]
# CHECK: slot 1: guest [0x80000000, 0x80020000) 128 KiB -> host [[OUT]]

# Q3. The second region is stage02's output buffer, not RAM a driver would hand a device. Why is it mapped anyway?
#     What does the kernel do to these pages when VFIO_IOMMU_MAP_DMA maps them, and why must it?
continue
# CHECK: Breakpoint 1, lab08::walk::RecordingDmaMapper::map_dma
next
python show_mapping()
# CHECK: MAP_DMA: IOVA [0x80000000, 0x80020000) size 0x20000 -> host [[OUT]], readable writable

# Q4. The walk calls GuestRamDma::sync a second time, as a VMM does after any change to its memory map. Why does no
#     MAP_DMA follow (the walk's "DMA:" line counts the calls)? Which changes would make sync unmap, and in which
#     order must it then do things?
# The device's BAR0, placed by the guest's driver at 0xc0000000, becomes a KVM memory slot over the device's mmap.
break vmm::vfio::KvmDeviceMemorySlots::map
continue
# CHECK: DMA: 2 mapping(s), IOVA = guest-physical address; a second sync made 0 call(s)
# CHECK: Breakpoint 2, vmm::vfio::KvmDeviceMemorySlots::map
bt -frame-info short-location 2
# CHECK: #0 vmm::vfio::KvmDeviceMemorySlots::map
# CHECK-NEXT: #1 {{.*}}vmm::vfio::VfioPciDevice::bar_placed
finish
# CHECK: Value returned is ${{[0-9]+}} = Result {ok: 16}
# Q5. Now KVM has a third slot: where, and backed by what (`info proc mappings` shows the host address)? The IOMMU
#     still has two mappings: why is the BAR not mapped for DMA, and what could a device then not do?
python
frame = gdb.selected_frame()
while frame is not None and frame.name() != "lab08::walk::run":
    frame = frame.older()
frame.select()
end
vmm memmap
# CHECK: slot 16: guest [0xc0000000, 0xc0100000) 1 MiB -> host 0x{{[0-9a-f]+}}
python
container = gdb.selected_frame().read_var("container")
count = int(container["mappings_"]["by_iova_"]["_M_t"]["_M_impl"]["_M_node_count"])
print("DMA mappings in the container: %d" % count)
end
# CHECK: DMA mappings in the container: 2

delete
continue
# CHECK: PASS
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
