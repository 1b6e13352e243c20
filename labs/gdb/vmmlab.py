"""vmmlab's gdb helpers: pretty-printers for the project's types and the `vmm ...` commands.

Loaded by labs/gdb/vmm-gdb (gdb -iex "source vmmlab.py"). Each stage adds what its lab needs:

  stage01  printers: kvm_run (exit reason by name, the member that matters), vmm::kvm::VcpuExit (the active
           alternative), IoExit, MmioExit, vmm::Result<T> (value or error), vmm::Error, vmm::Fd (with what the
           descriptor is), vmm::Mmap, vmm::kvm::MemorySlot
           commands: vmm exit-name N, vmm fds, vmm regs [VCPU], vmm kvm-run [EXPR]
  stage02  printers: vmm::memory::GuestAddress, GuestRange, GuestMemoryRegion (range, size, host address, backing with
           its memfd, huge pages), GuestMemory (region count and total size, the regions as children)
           commands: vmm memmap [EXPR] (the guest-physical map of a GuestMemory and/or a Vm's KVM slots)
  stage03  printers: vmm::devices::Bus / IoBus / MmioBus (entries: range -> name and device type, unclaimed counts),
           BusEntry, Uart16550 (registers decoded: IER bits, LCR with DLAB and the divisor, MCR, LSR, RX FIFO fill)
           commands: vmm bus [EXPR] (the devices of a bus, or of both buses of a vmm::machine::Buses)
  stage04  printers: vmm::pci::ConfigSpace (IDs, class, command bits, BAR count, capabilities), vmm::pci::BarMapping
           commands: vmm pci [EXPR] (a device's configuration space decoded: IDs, command and status bits, class,
           header type, each BAR as declared and as programmed, the capability list, MSI-X table and PBA; for a
           PciRoot or PciVm, every device on bus 0 with where its BARs are mapped)
  stage05  printers: vmm::virtio::SplitQueue, QueueLayout, Descriptor, DescriptorChain (the device's copy of one
           request), QueueCounters / QueueCountersSnapshot, and the kernel's vring_desc and vring_used_elem
           commands: vmm vq [EXPR] (a split virtqueue decoded from guest memory: the available ring, the used ring,
           the event indices, the descriptors of the recent chains, the queue's counters)
  stage07  printers: vmm::vhost::Message (request by name, flags, the payload decoded, the fds with what each one
           is), MemoryRegion, MemoryTable, BackendMemoryTable, and the kernel's vhost_vring_state / vhost_vring_addr
           commands: vmm vhost-mem [EXPR] (a backend's memory table: each region's guest-physical range, the
           frontend's address, the fd and offset it was mapped from, and where it sits in this process),
           vmm vhost-fds [PID...] (the eventfds of this process and of other processes, matched by the kernel's
           eventfd id: the same eventfd seen from the VMM and from its backend)
"""

import errno
import os
import re

import gdb
import gdb.printing


# ---------------------------------------------------------------------------------------------------------------------
# Names from the kernel's own header, so this file never keeps a second copy of KVM's numbers.

def _names_from_header(path, first):
    """Number -> name for the block of #defines that starts with `first` (e.g. KVM_EXIT_UNKNOWN), up to the first
    line that is not such a #define. Only the block: kvm.h reuses the prefixes elsewhere (KVM_EXIT_HYPERV_HCALL)."""
    prefix = first.rsplit("_", 1)[0] + "_"
    names = {}
    try:
        with open(path, encoding="utf-8") as header:
            inside = False
            for line in header:
                m = re.match(r"#define\s+(%s\w+)\s+(\d+)\s*(/\*.*)?$" % prefix, line)
                if m and m.group(1) == first:
                    inside = True
                if inside:
                    if m:
                        names[int(m.group(2))] = m.group(1)
                    elif not line.lstrip().startswith("/*"):
                        break
    except OSError:
        pass
    return names


KVM_HEADER = "/usr/include/linux/kvm.h"
EXIT_NAMES = _names_from_header(KVM_HEADER, "KVM_EXIT_UNKNOWN")
INTERNAL_ERROR_NAMES = _names_from_header(KVM_HEADER, "KVM_INTERNAL_ERROR_EMULATION")


def exit_name(reason):
    return EXIT_NAMES.get(int(reason), "KVM_EXIT_%d" % int(reason))


def _bytes_at(address, length):
    if length <= 0:
        return b""
    return bytes(gdb.selected_inferior().read_memory(address, length))


def _show_bytes(data, limit=16):
    shown = " ".join("%02x" % b for b in data[:limit])
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in data[:limit])
    more = " ..." if len(data) > limit else ""
    return "[%s%s] '%s'" % (shown, more, text)


# ---------------------------------------------------------------------------------------------------------------------
# Printers

class KvmRunPrinter:
    """struct kvm_run: the page KVM_RUN fills in. Shows the exit reason by name and the member for that reason."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        reason = int(self.val["exit_reason"])
        return "kvm_run {exit_reason = %s (%d)}" % (exit_name(reason), reason)

    def children(self):
        run = self.val
        reason = exit_name(run["exit_reason"])
        if reason == "KVM_EXIT_IO":
            io = run["io"]
            direction = "out" if int(io["direction"]) == 1 else "in"
            size, count = int(io["size"]), int(io["count"])
            yield "io.direction", direction
            yield "io.size", size
            yield "io.port", hex(int(io["port"]))
            yield "io.count", count
            yield "io.data_offset", hex(int(io["data_offset"]))
            base = int(run.address) + int(io["data_offset"])
            yield "io.data", _show_bytes(_bytes_at(base, size * count))
        elif reason == "KVM_EXIT_MMIO":
            mmio = run["mmio"]
            length = int(mmio["len"])
            yield "mmio.phys_addr", hex(int(mmio["phys_addr"]))
            yield "mmio.len", length
            yield "mmio.is_write", bool(int(mmio["is_write"]))
            yield "mmio.data", _show_bytes(_bytes_at(int(mmio["data"].address), min(length, 8)))
        elif reason == "KVM_EXIT_INTERNAL_ERROR":
            internal = run["internal"]
            sub = int(internal["suberror"])
            yield "internal.suberror", INTERNAL_ERROR_NAMES.get(sub, str(sub))
            n = min(int(internal["ndata"]), 16)
            yield "internal.data", "[%s]" % ", ".join(hex(int(internal["data"][i])) for i in range(n))
        elif reason == "KVM_EXIT_FAIL_ENTRY":
            yield "fail_entry.hardware_entry_failure_reason", hex(int(run["fail_entry"]["hardware_entry_failure_reason"]))
        elif reason == "KVM_EXIT_SYSTEM_EVENT":
            yield "system_event.type", int(run["system_event"]["type"])
        yield "immediate_exit", int(run["immediate_exit"])


class IoExitPrinter:
    """vmm::kvm::IoExit."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        direction = str(v["direction"]).split("::")[-1].lower()
        size, count = int(v["size"]), int(v["count"])
        data = v["data"]
        pointer = int(data["_M_ptr"])
        length = size * count
        shown = _show_bytes(_bytes_at(pointer, length)) if direction == "out" else "(to be filled by the VMM)"
        return "IoExit {%s port %s size %d count %d data %s}" % (direction, hex(int(v["port"])), size, count, shown)


class MmioExitPrinter:
    """vmm::kvm::MmioExit."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        write = bool(v["is_write"])
        length = int(v["length"])
        pointer = int(v["data"]["_M_ptr"])
        shown = _show_bytes(_bytes_at(pointer, length)) if write else "(to be filled by the VMM)"
        return "MmioExit {%s address %s length %d data %s}" % ("write" if write else "read", hex(int(v["address"])),
                                                              length, shown)


class ErrorPrinter:
    """vmm::Error: printed as the message the program would print."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        op = self.val["operation"].format_string().strip('"')
        err = int(self.val["errno_value"])
        ctx = self.val["context"].format_string().strip('"')
        text = op
        if err:
            text += ": %s" % errno.errorcode.get(err, "errno %d" % err)
        if ctx:
            text += " (%s)" % ctx if err else ": %s" % ctx
        return "vmm::Error {%s}" % text


def _fd_target(fd):
    pid = gdb.selected_inferior().pid
    try:
        return os.readlink("/proc/%d/fd/%d" % (pid, fd))
    except OSError:
        return "closed" if fd >= 0 else "empty"


class FdPrinter:
    """vmm::Fd: the number and what it refers to (/dev/kvm, anon_inode:kvm-vm, anon_inode:kvm-vcpu:0, ...)."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        fd = int(self.val["fd_"])
        if fd < 0:
            return "vmm::Fd {empty}"
        return "vmm::Fd {%d -> %s}" % (fd, _fd_target(fd))


class MmapPrinter:
    """vmm::Mmap."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        addr = int(self.val["addr_"])
        size = int(self.val["size_"])
        if addr == 0:
            return "vmm::Mmap {empty}"
        return "vmm::Mmap {[%#x, %#x) %#x bytes}" % (addr, addr + size, size)


class MemorySlotPrinter:
    """vmm::kvm::MemorySlot: guest-physical range -> host address."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        gpa, size = int(v["guest_address"]), int(v["size"])
        names = slot_flag_names(int(v["flags"]))
        return "slot %d: guest [%#x, %#x) -> host %#x%s" % (int(v["slot"]), gpa, gpa + size, int(v["host_address"]),
                                                             (" " + names) if names else "")


def slot_flag_names(flags):
    """KVM_MEM_* flags of a memory slot as "LOG_DIRTY_PAGES|READONLY" ("" when none)."""
    names = []
    if flags & 1:  # KVM_MEM_LOG_DIRTY_PAGES
        names.append("LOG_DIRTY_PAGES")
    if flags & 2:  # KVM_MEM_READONLY
        names.append("READONLY")
    if flags & ~3:
        names.append("%#x" % (flags & ~3))
    return "|".join(names)


def _variant_alternative(val):
    """The active member of a libstdc++ std::variant, or None if valueless."""
    index = int(val["_M_index"])
    if index == 255 or index < 0:  # valueless_by_exception (npos as an unsigned char)
        return None
    storage = val["_M_u"]
    for _ in range(index):
        storage = storage["_M_rest"]
    return storage["_M_first"]["_M_storage"]


class VcpuExitPrinter:
    """vmm::kvm::VcpuExit (a std::variant of IoExit, MmioExit, HltExit, ...): just the active alternative."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        try:
            alternative = _variant_alternative(self.val)
        except gdb.error:
            return "VcpuExit {not initialised yet}"  # e.g. at a function's first line, before the prologue
        if alternative is None:
            return "VcpuExit {valueless}"
        kind = alternative.type.strip_typedefs().name.split("::")[-1]
        text = alternative.format_string()
        return text if text.startswith(kind) else "%s %s" % (kind, text)


class ResultPrinter:
    """vmm::Result<T> (std::expected<T, vmm::Error>): the value, or the error."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        if bool(self.val["_M_has_value"]):
            value_type = self.val.type.strip_typedefs().template_argument(0)
            if value_type.code == gdb.TYPE_CODE_VOID:
                return "Result {ok}"
            return "Result {ok: %s}" % self.val["_M_val"].format_string()
        return "Result {error: %s}" % self.val["_M_unex"].format_string()


# ---------------------------------------------------------------------------------------------------------------------
# stage02: guest memory

def format_size(size):
    """16 MiB, 4 KiB, 1 GiB when exact; otherwise the byte count in hex ("0x1234 bytes")."""
    size = int(size)
    if size == 0:
        return "0 bytes"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size % (1 << shift) == 0:
            return "%d %s" % (size >> shift, unit)
    return "%#x bytes" % size


def _enumerator(val):
    """An enum class value's enumerator name without its scope ("memfd" for vmm::memory::Backing::memfd)."""
    return str(val).split("::")[-1]


def _vector_elements(vec, limit=4096):
    """The elements of a libstdc++ std::vector, or None when it does not look like one yet (e.g. a local whose
    constructor has not run: its pointers are whatever was on the stack)."""
    impl = vec["_M_impl"]
    element = vec.type.strip_typedefs().template_argument(0)
    start, finish = impl["_M_start"], impl["_M_finish"]
    begin, end = int(start), int(finish)
    if begin == 0 and end == 0:
        return []
    if begin == 0 or end < begin or (end - begin) % element.sizeof or (end - begin) // element.sizeof > limit:
        return None
    return [start[i] for i in range((end - begin) // element.sizeof)]


def _region_fields(region):
    """(start, size, host address, backing text, huge pages) of a vmm::memory::GuestMemoryRegion."""
    rng = region["range_"]
    start, size = int(rng["start"]["raw_"]), int(rng["size"])
    host = int(region["map_"]["addr_"])
    backing = _enumerator(region["backing_"])
    if backing == "memfd":
        fd = int(region["fd_"]["fd_"])
        backing = "memfd fd %d" % fd
    return start, size, host, backing, _enumerator(region["huge_pages_"])


class GuestAddressPrinter:
    """vmm::memory::GuestAddress: `GuestAddress 0x1000`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        return "GuestAddress %#x" % int(self.val["raw_"])


class GuestRangePrinter:
    """vmm::memory::GuestRange: half-open, `[0x0, 0x1000000)`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        start, size = int(self.val["start"]["raw_"]), int(self.val["size"])
        return "[%#x, %#x)" % (start, start + size)


class GuestMemoryRegionPrinter:
    """vmm::memory::GuestMemoryRegion: guest range, size, host address, backing (a memfd with what /proc/PID/fd says
    it is), huge pages."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        start, size, host, backing, huge = _region_fields(v)
        if host == 0:
            return "GuestMemoryRegion {empty}"  # moved from
        if backing.startswith("memfd"):
            fd = int(v["fd_"]["fd_"])
            backing += " -> %s" % _fd_target(fd)
            offset = int(v["file_offset_"])
            if offset:
                backing += " at offset %#x" % offset
        extra = ", prefaulted" if bool(v["prefaulted_"]) else ""
        return "GuestMemoryRegion {guest [%#x, %#x) %s -> host %#x, %s, huge pages: %s%s}" % (
            start, start + size, format_size(size), host, backing, huge, extra)


class GuestMemoryPrinter:
    """vmm::memory::GuestMemory: `GuestMemory {2 regions, 18 MiB}`, the regions as children."""

    def __init__(self, val):
        self.val = val
        self.regions = _vector_elements(val["regions_"])

    def to_string(self):
        if self.regions is None:
            return "GuestMemory {not initialised yet}"
        total = sum(int(r["range_"]["size"]) for r in self.regions)
        n = len(self.regions)
        return "GuestMemory {%d region%s, %s}" % (n, "" if n == 1 else "s", format_size(total))

    def children(self):
        for i, region in enumerate(self.regions or []):
            yield "[%d]" % i, region

    def display_hint(self):
        return "array"



# ---------------------------------------------------------------------------------------------------------------------
# stage03: buses and the UART

def _map_values(map_val, limit=4096):
    """The mapped values of a libstdc++ std::map, in key order, by walking its red-black tree. The value of a node
    sits right after the node's _Rb_tree_node_base, as a std::pair<const Key, T>."""
    impl = map_val["_M_t"]["_M_impl"]
    header = impl["_M_header"]
    count = int(impl["_M_node_count"])
    if count < 0 or count > limit:
        return None
    map_type = map_val.type.strip_typedefs()
    key_type = map_type.template_argument(0)
    value_type = map_type.template_argument(1)
    base_type = header.type.strip_typedefs()
    offset = key_type.sizeof
    align = max(value_type.alignof, 1)
    offset = (offset + align - 1) // align * align
    values = []
    node = header["_M_left"]
    end = int(header.address)
    for _ in range(count):
        if int(node) == end or int(node) == 0:
            break
        address = int(node) + base_type.sizeof + offset
        values.append(gdb.Value(address).cast(value_type.pointer()).dereference())
        # in-order successor
        if int(node["_M_right"]) != 0:
            node = node["_M_right"]
            while int(node["_M_left"]) != 0:
                node = node["_M_left"]
        else:
            parent = node["_M_parent"]
            while int(node) == int(parent["_M_right"]):
                node = parent
                parent = parent["_M_parent"]
            if int(node["_M_right"]) != int(parent):
                node = parent
    return values


def _device_type(device_ptr):
    """The dynamic type of the BusDevice a shared_ptr points at ("vmm::devices::Uart16550")."""
    pointer = device_ptr["_M_ptr"]
    if int(pointer) == 0:
        return "(no device)"
    try:
        return str(pointer.dereference().dynamic_type.strip_typedefs())
    except gdb.error:
        return str(pointer.type.target())


def _entry_line(entry):
    rng = entry["range"]
    base, size = int(rng["base"]), int(rng["size"])
    name = entry["name"].format_string().strip('"')
    return "[%#x, %#x) %s -> %s" % (base, base + size, name, _device_type(entry["device"]))


class BusEntryPrinter:
    """vmm::devices::BusEntry: `[0x3f8, 0x400) serial0 (COM1) -> vmm::devices::Uart16550`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        return "BusEntry {%s}" % _entry_line(self.val)


def _atomic_int(val):
    try:
        return int(val["_M_i"])
    except gdb.error:
        return int(val["_M_base"]["_M_i"])


class BusPrinter:
    """vmm::devices::Bus (IoBus, MmioBus): `io bus {2 devices, unclaimed: 0 reads, 0 writes}`, the entries as
    children."""

    def __init__(self, val):
        self.val = val
        try:
            self.entries = _map_values(val["entries_"])
        except (gdb.error, RuntimeError):
            self.entries = None

    def to_string(self):
        if self.entries is None:
            return "Bus {not initialised yet}"
        name = self.val["name_"].format_string().strip('"')
        n = len(self.entries)
        return "%s bus {%d device%s, unclaimed: %d reads, %d writes}" % (
            name, n, "" if n == 1 else "s", _atomic_int(self.val["unclaimed_reads_"]),
            _atomic_int(self.val["unclaimed_writes_"]))

    def children(self):
        for entry in self.entries or []:
            yield "[%#x]" % int(entry["range"]["base"]), entry


UART_IER_BITS = ((0x01, "ERBFI"), (0x02, "ETBEI"), (0x04, "ELSI"), (0x08, "EDSSI"))
UART_MCR_BITS = ((0x01, "DTR"), (0x02, "RTS"), (0x04, "OUT1"), (0x08, "OUT2"), (0x10, "LOOP"))
UART_LSR_BITS = ((0x01, "DR"), (0x02, "OE"), (0x20, "THRE"), (0x40, "TEMT"))


def _bit_names(value, bits):
    names = [name for bit, name in bits if value & bit]
    return "|".join(names) if names else "none"


def uart_registers(v):
    """The registers of a vmm::devices::Uart16550, decoded: a dict of the raw values and their description."""
    ier, lcr, mcr = int(v["ier_"]), int(v["lcr_"]), int(v["mcr_"])
    fcr, scr = int(v["fcr_"]), int(v["scr_"])
    divisor = int(v["dlm_"]) << 8 | int(v["dll_"])
    rx_count = int(v["rx_count_"])
    fifo = bool(fcr & 0x01)
    lsr = 0x60 | (0x01 if rx_count else 0) | (0x02 if bool(v["overrun_"]) else 0)
    words = {0: 5, 1: 6, 2: 7, 3: 8}[lcr & 3]
    parity = "N" if not lcr & 0x08 else ("E" if lcr & 0x10 else "O")
    line = "%d%s%d" % (words, parity, 2 if lcr & 0x04 else 1)
    return {"ier": ier, "lcr": lcr, "mcr": mcr, "lsr": lsr, "fcr": fcr, "scr": scr, "divisor": divisor,
            "rx_count": rx_count, "fifo": fifo, "line": line, "dlab": bool(lcr & 0x80)}


class Uart16550Printer:
    """vmm::devices::Uart16550: the registers by name, e.g.
    `Uart16550 {IER 0x05 (ERBFI|ELSI), LCR 0x03 (8N1), divisor 1, MCR 0x0b (DTR|RTS|OUT2), LSR 0x60 (THRE|TEMT),
    FIFO on, RX 0/16, THRE pending no, line low, tx 89}`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        r = uart_registers(v)
        lcr = "LCR %#04x (%s%s)" % (r["lcr"], "DLAB, " if r["dlab"] else "", r["line"])
        return ("Uart16550 {IER %#04x (%s), %s, divisor %d, MCR %#04x (%s), LSR %#04x (%s), FIFO %s, RX %d/%d, "
                "SCR %#04x, THRE pending %s, line %s, tx %d}" % (
                    r["ier"], _bit_names(r["ier"], UART_IER_BITS), lcr, r["divisor"], r["mcr"],
                    _bit_names(r["mcr"], UART_MCR_BITS), r["lsr"], _bit_names(r["lsr"], UART_LSR_BITS),
                    "on" if r["fifo"] else "off", r["rx_count"], 16 if r["fifo"] else 1, r["scr"],
                    "yes" if bool(v["thre_pending_"]) else "no",
                    "high" if _atomic_int(v["irq_asserted_"]) else "low", int(v["tx_bytes_"])))


# ---------------------------------------------------------------------------------------------------------------------
# stage04: PCI

PCI_COMMAND_BITS = ((0x001, "IO"), (0x002, "MEMORY"), (0x004, "MASTER"), (0x040, "PARITY"), (0x100, "SERR"),
                    (0x400, "INTX_DISABLE"))
PCI_STATUS_BITS = ((0x0008, "INTERRUPT"), (0x0010, "CAP_LIST"), (0x0020, "66MHZ"), (0x0100, "PARITY"),
                   (0x0800, "SIG_TARGET_ABORT"), (0x1000, "REC_TARGET_ABORT"), (0x2000, "REC_MASTER_ABORT"),
                   (0x4000, "SIG_SYSTEM_ERROR"), (0x8000, "DETECTED_PARITY"))
PCI_CAP_NAMES = {0x01: "PM", 0x05: "MSI", 0x09: "VNDR", 0x0d: "SSVID", 0x10: "EXP", 0x11: "MSI-X"}


def _le(data, offset, width):
    return int.from_bytes(bytes(data[offset:offset + width]), "little") if offset + width <= len(data) else 0


def _config_bytes(config):
    """The bytes of a vmm::pci::ConfigSpace (its bytes_ vector), read in one go; None if it is not constructed."""
    impl = config["bytes_"]["_M_impl"]
    begin, end = int(impl["_M_start"]), int(impl["_M_finish"])
    if begin == 0 or end - begin not in (256, 4096):
        return None
    return _bytes_at(begin, end - begin)


def _walk_caps(data):
    """(offset, id) of each capability, as ConfigSpace's walk_capabilities does."""
    caps = []
    if not _le(data, 0x06, 2) & 0x10:
        return caps
    pointer = data[0x34] & 0xfc
    while pointer >= 0x40 and pointer + 1 < len(data) and len(caps) < 48:
        caps.append((pointer, data[pointer]))
        pointer = data[pointer + 1] & 0xfc
    return caps


def _cap_name(cap_id):
    return PCI_CAP_NAMES.get(cap_id, "%#04x" % cap_id)


def _bar_kind(bar):
    kind = _enumerator(bar["kind"])
    return {"Io": "io", "Memory32": "mem32", "Memory64": "mem64"}.get(kind, kind)


def _bar_address(data, bar):
    """(address as programmed, being sized?) of a declared BAR, from the config bytes."""
    reg = 0x10 + 4 * int(bar["index"])
    low = _le(data, reg, 4)
    if _bar_kind(bar) == "io":
        return low & ~0x3, (low | 0x3) == 0xffffffff
    address = low & ~0xf
    sizing = (low | 0xf) == 0xffffffff
    if _bar_kind(bar) == "mem64":
        high = _le(data, reg + 4, 4)
        address |= high << 32
        sizing = sizing or high == 0xffffffff
    return address, sizing


class ConfigSpacePrinter:
    """vmm::pci::ConfigSpace: `ConfigSpace {1af4:10f1 class ff0000, command 0x0007 (IO|MEMORY|MASTER), 3 BARs,
    capabilities: MSI-X@0x40}`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        try:
            data = _config_bytes(self.val)
            bars = _vector_elements(self.val["bars_"])
        except (gdb.error, gdb.MemoryError):
            data = None
        if data is None or bars is None:
            return "ConfigSpace {not initialised yet}"
        command = _le(data, 0x04, 2)
        caps = ", ".join("%s@%#04x" % (_cap_name(i), o) for o, i in _walk_caps(data)) or "none"
        return "ConfigSpace {%04x:%04x class %06x, command %#06x (%s), %d BAR%s, capabilities: %s}" % (
            _le(data, 0, 2), _le(data, 2, 2), _le(data, 0x08, 4) >> 8, command, _bit_names(command, PCI_COMMAND_BITS),
            len(bars), "" if len(bars) == 1 else "s", caps)


class BarMappingPrinter:
    """vmm::pci::BarMapping: `00:03.0 BAR0 mem [0xc0000000, 0xc0001000)`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        base, size = int(v["base"]), int(v["size"])
        return "00:%02x.0 BAR%d %s [%#x, %#x)" % (int(v["device_number"]), int(v["bar_index"]),
                                                 _enumerator(v["space"]).lower().replace("memory", "mem"), base,
                                                 base + size)


# ---------------------------------------------------------------------------------------------------------------------
# stage05: virtio split virtqueues

VRING_DESC_BITS = ((0x2, "WRITE"), (0x1, "NEXT"), (0x4, "INDIRECT"))  # VRING_DESC_F_*, WRITE first as it reads best
VRING_AVAIL_BITS = ((0x1, "NO_INTERRUPT"),)                            # VRING_AVAIL_F_NO_INTERRUPT
VRING_USED_BITS = ((0x1, "NO_NOTIFY"),)                                # VRING_USED_F_NO_NOTIFY
_VQ_COUNTERS = (("notifications", "notifications"), ("chains", "chains"), ("used", "used"),
                ("interrupts", "interrupts"), ("interrupts_suppressed", "suppressed"), ("errors", "errors"))


def _flag_names(value, bits):
    """Flags by name ("WRITE|NEXT"), unknown bits in hex, "none" for 0."""
    names = [name for bit, name in bits if value & bit]
    known = 0
    for bit, _ in bits:
        known |= bit
    if value & ~known:
        names.append("%#x" % (value & ~known))
    return "|".join(names) if names else "none"


def _desc_line(addr, length, flags, nxt):
    line = "addr %#x len %d flags %s" % (addr, length, _flag_names(flags, VRING_DESC_BITS))
    if flags & 0x1:
        line += " next %d" % nxt
    return line


def _gpa(val):
    """The raw value of a vmm::memory::GuestAddress."""
    return int(val["raw_"])


def _queue_features_text(features):
    names = [name for field, name in (("event_idx", "EVENT_IDX"), ("indirect", "INDIRECT_DESC"))
             if bool(features[field])]
    return "|".join(names) if names else "none"


def _counters_text(counters):
    """"notifications 1, chains 1, ..." for a QueueCounters (atomics) or a QueueCountersSnapshot."""
    parts = []
    for field, label in _VQ_COUNTERS:
        value = counters[field]
        try:
            number = _atomic_int(value)
        except (gdb.error, RuntimeError):
            number = int(value)
        parts.append("%s %d" % (label, number))
    return ", ".join(parts)


class VringDescPrinter:
    """struct vring_desc: `vring_desc {addr 0x12340 len 16 flags WRITE|NEXT next 1}`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        return "vring_desc {%s}" % _desc_line(int(v["addr"]), int(v["len"]), int(v["flags"]), int(v["next"]))


class VringUsedElemPrinter:
    """struct vring_used_elem: `{id 0, len 16}`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        return "{id %d, len %d}" % (int(self.val["id"]), int(self.val["len"]))


class QueueLayoutPrinter:
    """vmm::virtio::QueueLayout: `QueueLayout {size 16, desc 0x5000, avail 0x5100, used 0x5140}`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        return "QueueLayout {size %d, desc %#x, avail %#x, used %#x}" % (
            int(v["size"]), _gpa(v["descriptor_table"]), _gpa(v["available_ring"]), _gpa(v["used_ring"]))


class DescriptorPrinter:
    """vmm::virtio::Descriptor: `{0x12340, 16 bytes}`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        return "{%#x, %d bytes}" % (_gpa(self.val["address"]), int(self.val["length"]))


class DescriptorChainPrinter:
    """vmm::virtio::DescriptorChain: `DescriptorChain {head 0, readable none, writable [{0x12340, 8 bytes},
    {0x12348, 8 bytes}], 2 descriptors walked}` (the device's private copy of one request)."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        parts = []
        for side in ("readable", "writable"):
            buffers = _vector_elements(v[side], limit=65536)
            if buffers is None:
                return "DescriptorChain {not initialised yet}"
            shown = ", ".join(DescriptorPrinter(b).to_string() for b in buffers[:8])
            if len(buffers) > 8:
                shown += ", ... %d more" % (len(buffers) - 8)
            parts.append("%s %s" % (side, "[%s]" % shown if buffers else "none"))
        walked = int(v["descriptors_walked"])
        return "DescriptorChain {head %d, %s%s, %d descriptor%s walked}" % (
            int(v["head_index"]), ", ".join(parts), ", indirect" if bool(v["indirect"]) else "", walked,
            "" if walked == 1 else "s")


class QueueCountersPrinter:
    """vmm::virtio::QueueCounters and QueueCountersSnapshot: `{notifications 2, chains 2, used 2, interrupts 1,
    suppressed 1, errors 0}`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        return "{%s}" % _counters_text(self.val)


def _split_queue_sane(queue):
    """True when a vmm::virtio::SplitQueue value looks constructed: a power-of-two size and a GuestMemory with
    regions behind memory_ (a `this` read at a function's first instruction, or a local not yet constructed, is
    stack garbage)."""
    try:
        size = int(queue["layout_"]["size"])
        if size == 0 or size > 32768 or size & (size - 1):
            return False
        memory = queue["memory_"]
        if int(memory) == 0:
            return False
        regions = _vector_elements(memory.dereference()["regions_"], limit=64)
        return bool(regions)
    except (gdb.error, gdb.MemoryError, RuntimeError):
        return False


class SplitQueuePrinter:
    """vmm::virtio::SplitQueue: `SplitQueue {size 16, features EVENT_IDX, next_avail 2, next_used 1}` (`vmm vq`
    decodes its rings)."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        if not _split_queue_sane(v):
            return "SplitQueue {not initialised yet}"
        return "SplitQueue {size %d, features %s, next_avail %d, next_used %d}" % (
            int(v["layout_"]["size"]), _queue_features_text(v["features_"]), int(v["next_avail_"]),
            int(v["next_used_"]))


# ---------------------------------------------------------------------------------------------------------------------
# stage07: vhost-user

# The device-independent virtio feature bits and vhost-user's bit 30 (stage07's describe.cpp has the same list).
VIRTIO_FEATURE_NAMES = {24: "NOTIFY_ON_EMPTY", 26: "LOG_ALL", 27: "ANY_LAYOUT", 28: "INDIRECT_DESC", 29: "EVENT_IDX",
                        30: "PROTOCOL_FEATURES", 32: "VERSION_1", 33: "ACCESS_PLATFORM", 34: "RING_PACKED",
                        35: "IN_ORDER", 36: "ORDER_PLATFORM", 37: "SR_IOV", 38: "NOTIFICATION_DATA", 40: "RING_RESET"}
# vhost-user.rst's VHOST_USER_PROTOCOL_F_* by bit.
VHOST_PROTOCOL_FEATURE_NAMES = ("MQ", "LOG_SHMFD", "RARP", "REPLY_ACK", "NET_MTU", "BACKEND_REQ", "CROSS_ENDIAN",
                                "CRYPTO_SESSION", "PAGEFAULT", "CONFIG", "BACKEND_SEND_FD", "HOST_NOTIFIER",
                                "INFLIGHT_SHMFD", "RESET_DEVICE", "INBAND_NOTIFICATIONS", "CONFIGURE_MEM_SLOTS",
                                "STATUS", "XEN_MMAP", "SHARED_OBJECT", "DEVICE_STATE")
VHOST_USER_VERSION, VHOST_USER_REPLY, VHOST_USER_NEED_REPLY = 0x1, 0x4, 0x8


def _bit_list(value, name_of):
    """The set bits of `value` by name, in bit order ("bitN" for unnamed ones)."""
    return " ".join(name_of(b) or "bit%d" % b for b in range(64) if value >> b & 1)


def vhost_request_name(request):
    """"SET_VRING_ADDR" for vmm::vhost::Request::SetVringAddr (the spec's name without VHOST_USER_), from the
    enumerator's name; "REQUEST_77" for a number the enum does not name."""
    text = str(request)
    name = text.split("::")[-1]
    if not re.match(r"^[A-Z][A-Za-z]*$", name):
        return "REQUEST_%d" % int(request)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def _vhost_u64_text(request, value, reply):
    if request in ("GET_FEATURES", "SET_FEATURES"):
        names = _bit_list(value, VIRTIO_FEATURE_NAMES.get)
    elif request in ("GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES"):
        names = _bit_list(value, lambda b: VHOST_PROTOCOL_FEATURE_NAMES[b] if b < len(VHOST_PROTOCOL_FEATURE_NAMES)
                          else None)
    elif request in ("GET_QUEUE_NUM", "GET_MAX_MEM_SLOTS"):
        return "u64=%d" % value
    elif request in ("SET_VRING_KICK", "SET_VRING_CALL", "SET_VRING_ERR") and not reply:
        return "index=%d%s" % (value & 0xff, " nofd" if value & 0x100 else "")
    elif reply:
        return "ack=%d (%s)" % (value, "success" if value == 0 else "failure")
    else:
        return "u64=%#x" % value
    return "u64=%#x (%s)" % (value, names) if names else "u64=%#x" % value


def _vhost_region_text(region):
    return "gpa=%#x size=%#x uaddr=%#x off=%#x" % (int(region["guest_phys_addr"]), int(region["memory_size"]),
                                                   int(region["userspace_addr"]), int(region["mmap_offset"]))


def _vring_addr_text(addr):
    return "index=%d flags=%#x desc=%#x used=%#x avail=%#x log=%#x" % (
        int(addr["index"]), int(addr["flags"]), int(addr["desc_user_addr"]), int(addr["used_user_addr"]),
        int(addr["avail_user_addr"]), int(addr["log_guest_addr"]))


def _vhost_payload_text(request, payload, reply):
    """The payload of a vmm::vhost::Message (a std::variant), as --trace-vhost-user shows it."""
    alternative = _variant_alternative(payload)
    if alternative is None:
        return "(valueless)"
    kind = alternative.type.strip_typedefs().unqualified()
    name = kind.name or ""
    if name == "std::monostate":
        return ""
    if kind.code == gdb.TYPE_CODE_INT:
        return _vhost_u64_text(request, int(alternative), reply)
    if name == "vhost_vring_state":
        return "index=%d num=%d" % (int(alternative["index"]), int(alternative["num"]))
    if name == "vhost_vring_addr":
        return _vring_addr_text(alternative)
    if name == "vmm::vhost::MemoryTable":
        regions = _vector_elements(alternative["regions"], limit=64) or []
        text = "%d region%s" % (len(regions), "" if len(regions) == 1 else "s")
        return text + (": " + "; ".join(_vhost_region_text(r) for r in regions) if regions else "")
    if name == "vmm::vhost::SingleMemoryRegion":
        return _vhost_region_text(alternative["region"])
    if name == "vmm::vhost::DeviceConfig":
        count = len(_vector_elements(alternative["bytes"], limit=4096) or [])
        return "offset=%d size=%d flags=%#x" % (int(alternative["offset"]), count, int(alternative["flags"]))
    return alternative.format_string()


def _fd_list_text(fds):
    """"fds=[12 -> anon_inode:[eventfd]]" for a std::vector<vmm::Fd> ("" when empty)."""
    numbers = [int(fd["fd_"]) for fd in (_vector_elements(fds, limit=64) or [])]
    if not numbers:
        return ""
    return "fds=[%s]" % ", ".join("%d -> %s" % (n, _fd_target(n)) if n >= 0 else "empty" for n in numbers)


class VhostMessagePrinter:
    """vmm::vhost::Message: `Message {SET_VRING_KICK need_reply index=0 fds=[25 -> anon_inode:[eventfd]]}`: the
    request by name, the flags (reply, need_reply; the raw word if the version is not 1), the payload decoded as
    --trace-vhost-user shows it, and each fd with what it is in the process being debugged."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        try:
            request = vhost_request_name(v["request"])
            flags = int(v["flags"])
            reply = bool(flags & VHOST_USER_REPLY)
            parts = [request]
            if reply:
                parts.append("reply")
            if flags & VHOST_USER_NEED_REPLY:
                parts.append("need_reply")
            if flags & 0x3 != VHOST_USER_VERSION or flags & ~0xf:
                parts.append("flags=%#x" % flags)
            payload = _vhost_payload_text(request, v["payload"], reply)
            if payload:
                parts.append(payload)
            fds = _fd_list_text(v["fds"])
            if fds:
                parts.append(fds)
        except (gdb.error, gdb.MemoryError, RuntimeError, IndexError):
            return "Message {not initialised yet}"
        return "Message {%s}" % " ".join(parts)


class VhostMemoryRegionPrinter:
    """vmm::vhost::MemoryRegion: `MemoryRegion {gpa [0x0, 0x1000000) 16 MiB, uaddr 0x7fffe7e00000, mmap_offset 0x0}`
    (the three addresses of one region: the guest's, the frontend's, and the offset in the region's fd)."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        gpa, size = int(v["guest_phys_addr"]), int(v["memory_size"])
        return "MemoryRegion {gpa [%#x, %#x) %s, uaddr %#x, mmap_offset %#x}" % (
            gpa, gpa + size, format_size(size), int(v["userspace_addr"]), int(v["mmap_offset"]))


class VhostMemoryTablePrinter:
    """vmm::vhost::MemoryTable (SET_MEM_TABLE's payload): `MemoryTable {1 region}`, the regions as children."""

    def __init__(self, val):
        self.val = val
        self.regions = _vector_elements(val["regions"], limit=64)

    def to_string(self):
        if self.regions is None:
            return "MemoryTable {not initialised yet}"
        n = len(self.regions)
        return "MemoryTable {%d region%s}" % (n, "" if n == 1 else "s")

    def children(self):
        for i, region in enumerate(self.regions or []):
            yield "[%d]" % i, region

    def display_hint(self):
        return "array"


def _backend_table_rows(table):
    """For a vmm::vhost::BackendMemoryTable: one dict per region (sorted by guest-physical address), joining what the
    frontend said (gpa, size, uaddr, mmap_offset) with what the backend did (the fd it kept, the address of its own
    mapping); None when the table does not look constructed."""
    regions = _vector_elements(table["regions_"], limit=256)
    memory = _deref_all(table["memory_"])
    if regions is None or memory is None:
        return None
    mapped = {}
    for region in _vector_elements(memory["regions_"], limit=256) or []:
        start, size, host, _, _ = _region_fields(region)
        mapped[start] = (host, int(region["fd_"]["fd_"]), int(region["file_offset_"]))
    rows = []
    for r in regions:
        gpa = int(r["guest_phys_addr"])
        host, fd, offset = mapped.get(gpa, (0, -1, 0))
        rows.append({"gpa": gpa, "size": int(r["memory_size"]), "uaddr": int(r["userspace_addr"]),
                     "mmap_offset": int(r["mmap_offset"]), "host": host, "fd": fd, "file_offset": offset})
    return rows


class BackendMemoryTablePrinter:
    """vmm::vhost::BackendMemoryTable: `BackendMemoryTable {1 region, 16 MiB}`, the regions (as the frontend
    described them) as children. `vmm vhost-mem` shows the fds and the backend's own mappings as well."""

    def __init__(self, val):
        self.val = val
        try:
            self.regions = _vector_elements(val["regions_"], limit=256)
        except (gdb.error, RuntimeError):
            self.regions = None

    def to_string(self):
        if self.regions is None:
            return "BackendMemoryTable {not initialised yet}"
        n = len(self.regions)
        if n == 0:
            return "BackendMemoryTable {empty}"
        total = sum(int(r["memory_size"]) for r in self.regions)
        return "BackendMemoryTable {%d region%s, %s}" % (n, "" if n == 1 else "s", format_size(total))

    def children(self):
        for i, region in enumerate(self.regions or []):
            yield "[%d]" % i, region

    def display_hint(self):
        return "array"


class VhostVringStatePrinter:
    """struct vhost_vring_state: `{index 0, num 256}`."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        return "{index %d, num %d}" % (int(self.val["index"]), int(self.val["num"]))


class VhostVringAddrPrinter:
    """struct vhost_vring_addr: `{index 0, flags 0x0, desc 0x7f.., used 0x7f.., avail 0x7f.., log 0x0}` (the ring
    areas as the frontend's virtual addresses)."""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        v = self.val
        return "{index %d, flags %#x, desc %#x, used %#x, avail %#x, log %#x}" % (
            int(v["index"]), int(v["flags"]), int(v["desc_user_addr"]), int(v["used_user_addr"]),
            int(v["avail_user_addr"]), int(v["log_guest_addr"]))


def build_printers():
    pp = gdb.printing.RegexpCollectionPrettyPrinter("vmmlab")
    pp.add_printer("kvm_run", "^kvm_run$", KvmRunPrinter)
    pp.add_printer("IoExit", "^vmm::kvm::IoExit$", IoExitPrinter)
    pp.add_printer("MmioExit", "^vmm::kvm::MmioExit$", MmioExitPrinter)
    pp.add_printer("Error", "^vmm::Error$", ErrorPrinter)
    pp.add_printer("Fd", "^vmm::Fd$", FdPrinter)
    pp.add_printer("Mmap", "^vmm::Mmap$", MmapPrinter)
    pp.add_printer("MemorySlot", "^vmm::kvm::MemorySlot$", MemorySlotPrinter)
    pp.add_printer("VcpuExit", "^std::variant<vmm::kvm::IoExit, vmm::kvm::MmioExit,", VcpuExitPrinter)
    pp.add_printer("Result", "^std::expected<.*, vmm::Error>$", ResultPrinter)
    pp.add_printer("GuestAddress", "^vmm::memory::GuestAddress$", GuestAddressPrinter)
    pp.add_printer("GuestRange", "^vmm::memory::GuestRange$", GuestRangePrinter)
    pp.add_printer("GuestMemoryRegion", "^vmm::memory::GuestMemoryRegion$", GuestMemoryRegionPrinter)
    pp.add_printer("GuestMemory", "^vmm::memory::GuestMemory$", GuestMemoryPrinter)
    pp.add_printer("Bus", "^vmm::devices::(Bus|IoBus|MmioBus)$", BusPrinter)
    pp.add_printer("BusEntry", "^vmm::devices::BusEntry$", BusEntryPrinter)
    pp.add_printer("Uart16550", "^vmm::devices::Uart16550$", Uart16550Printer)
    pp.add_printer("ConfigSpace", "^vmm::pci::ConfigSpace$", ConfigSpacePrinter)
    pp.add_printer("BarMapping", "^vmm::pci::BarMapping$", BarMappingPrinter)
    pp.add_printer("vring_desc", "^vring_desc$", VringDescPrinter)
    pp.add_printer("vring_used_elem", "^vring_used_elem$", VringUsedElemPrinter)
    pp.add_printer("QueueLayout", "^vmm::virtio::QueueLayout$", QueueLayoutPrinter)
    pp.add_printer("Descriptor", "^vmm::virtio::Descriptor$", DescriptorPrinter)
    pp.add_printer("DescriptorChain", "^vmm::virtio::DescriptorChain$", DescriptorChainPrinter)
    pp.add_printer("QueueCounters", "^vmm::virtio::QueueCounters(Snapshot)?$", QueueCountersPrinter)
    pp.add_printer("SplitQueue", "^vmm::virtio::SplitQueue$", SplitQueuePrinter)
    pp.add_printer("vhost::Message", "^vmm::vhost::Message$", VhostMessagePrinter)
    pp.add_printer("vhost::MemoryRegion", "^vmm::vhost::MemoryRegion$", VhostMemoryRegionPrinter)
    pp.add_printer("vhost::MemoryTable", "^vmm::vhost::MemoryTable$", VhostMemoryTablePrinter)
    pp.add_printer("vhost::BackendMemoryTable", "^vmm::vhost::BackendMemoryTable$", BackendMemoryTablePrinter)
    pp.add_printer("vhost_vring_state", "^vhost_vring_state$", VhostVringStatePrinter)
    pp.add_printer("vhost_vring_addr", "^vhost_vring_addr$", VhostVringAddrPrinter)
    return pp


# Registered globally, and also on each program that is loaded: gdb asks objfile printers first, in load order, so a
# printer on the main program wins over libstdc++'s own (whose std::variant printer fails on gdb 13 with GCC 12).
gdb.printing.register_pretty_printer(None, build_printers(), replace=True)


def _on_new_objfile(event):
    objfile = event.new_objfile
    if objfile.filename and objfile.filename == gdb.current_progspace().filename:
        gdb.printing.register_pretty_printer(objfile, build_printers(), replace=True)


gdb.events.new_objfile.connect(_on_new_objfile)


# ---------------------------------------------------------------------------------------------------------------------
# Commands

class VmmPrefix(gdb.Command):
    """vmmlab commands: vmm exit-name, vmm fds, vmm regs, vmm kvm-run, vmm memmap, vmm bus, vmm pci, vmm vq,
    vmm vhost-mem, vmm vhost-fds (and more in later stages)."""

    def __init__(self):
        super().__init__("vmm", gdb.COMMAND_USER, prefix=True)


class VmmExitName(gdb.Command):
    """vmm exit-name N: the KVM_EXIT_* name of exit reason N."""

    def __init__(self):
        super().__init__("vmm exit-name", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        print(exit_name(int(gdb.parse_and_eval(arg))))


class VmmFds(gdb.Command):
    """vmm fds [all]: the inferior's open file descriptors and what each one is (without `all`, only KVM's).

    KVM is three kinds of descriptor: /dev/kvm (system), anon_inode:kvm-vm (a VM), anon_inode:kvm-vcpu:N (a vCPU).
    An eventfd also shows its counter and the kernel's id for it (two descriptors with one id are one eventfd)."""

    def __init__(self):
        super().__init__("vmm fds", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        pid = gdb.selected_inferior().pid
        for name in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
            target = _fd_target(int(name))
            if "kvm" in target or arg.strip() == "all":
                print("fd %s -> %s%s" % (name, target, _eventfd_state(pid, name) if "[eventfd]" in target else ""))


def _eventfd_state(pid, fd):
    """' (count N, id M)' for an eventfd, from /proc/PID/fdinfo/FD: the counter (the kernel shows it in hex) and the
    kernel's id of the eventfd, the same for every descriptor of one eventfd (a dup, or what KVM was handed)."""
    fields = {}
    try:
        with open("/proc/%d/fdinfo/%s" % (pid, fd)) as info:
            for line in info:
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return ""
    parts = []
    if "eventfd-count" in fields:
        parts.append("count %d" % int(fields["eventfd-count"], 16))
    if "eventfd-id" in fields:
        parts.append("id %s" % fields["eventfd-id"])
    return " (%s)" % ", ".join(parts) if parts else ""


def _find_vcpu(arg):
    """A vmm::kvm::Vcpu from an expression, or from the selected frame and its callers."""
    if arg.strip():
        val = gdb.parse_and_eval(arg)
    else:
        val = None
        frame = gdb.selected_frame()
        while frame is not None and val is None:
            for name in ("vcpu_", "vcpu", "this"):
                try:
                    candidate = frame.read_var(name)
                except (ValueError, gdb.error):
                    continue
                t = candidate.type.strip_typedefs()
                if t.code == gdb.TYPE_CODE_PTR:
                    t = t.target().strip_typedefs()
                if t.name == "vmm::kvm::Vcpu" or (t.name or "").endswith("TestVm"):
                    val = candidate
                    break
            frame = frame.older()
        if val is None:
            raise gdb.GdbError("no vmm::kvm::Vcpu in scope: give one, e.g. `vmm regs vm->vcpu_`")
    if val.type.strip_typedefs().code == gdb.TYPE_CODE_PTR:
        val = val.dereference()
    if (val.type.strip_typedefs().name or "").endswith("TestVm"):
        val = val["vcpu_"]
    return val


class VmmRegs(gdb.Command):
    """vmm regs [VCPU]: the guest's registers, read with KVM_GET_REGS from inside the stopped VMM.

    gdb calls malloc() and ioctl(vcpu_fd, KVM_GET_REGS, buffer) in the inferior, exactly what Vcpu::get_regs() does.
    Only works while the vCPU is not inside KVM_RUN (e.g. at a breakpoint on the exit path)."""

    def __init__(self):
        super().__init__("vmm regs", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        vcpu = _find_vcpu(arg)
        fd = int(vcpu["fd_"]["fd_"])
        regs_type = gdb.lookup_type("kvm_regs")
        size = regs_type.sizeof
        # _IOR(KVMIO, 0x81, struct kvm_regs): direction read (2) << 30 | size << 16 | 0xae << 8 | 0x81
        request = (2 << 30) | (size << 16) | (0xAE << 8) | 0x81
        buf = int(gdb.parse_and_eval("(void*)malloc(%d)" % size))
        try:
            rc = int(gdb.parse_and_eval("(int)ioctl(%d, %du, (void*)%d)" % (fd, request, buf)))
            if rc != 0:
                raise gdb.GdbError("KVM_GET_REGS on fd %d failed" % fd)
            regs = gdb.parse_and_eval("*(kvm_regs*)%d" % buf)
            print("vCPU %d: rip %#x rflags %#x" % (int(vcpu["id_"]), int(regs["rip"]), int(regs["rflags"])))
            print("  rax %#x rbx %#x rcx %#x rdx %#x" % tuple(int(regs[r]) for r in ("rax", "rbx", "rcx", "rdx")))
            print("  rsi %#x rdi %#x rsp %#x rbp %#x" % tuple(int(regs[r]) for r in ("rsi", "rdi", "rsp", "rbp")))
        finally:
            gdb.parse_and_eval("(void)free((void*)%d)" % buf)


class VmmKvmRun(gdb.Command):
    """vmm kvm-run [VCPU]: decode the vCPU's kvm_run page (the last exit)."""

    def __init__(self):
        super().__init__("vmm kvm-run", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        vcpu = _find_vcpu(arg)
        address = int(vcpu["run_"]["addr_"])
        run = gdb.parse_and_eval("*(kvm_run*)%d" % address)
        print(run.format_string())


_MEMMAP_NAMES = ("memory", "memory_", "guest_memory", "guest_memory_", "vm", "vm_", "this")


def _memmap_kind(val):
    """("memory", GuestMemory) or ("vm", Vm) for a value of either type, a pointer or reference to one, or a
    vmm::Result holding one; None for anything else (or a null pointer, an error, an uninitialised local)."""
    for _ in range(4):  # e.g. a reference to a Result<GuestMemory>, or a pointer to a pointer
        t = val.type.strip_typedefs()
        if t.code in (gdb.TYPE_CODE_REF, gdb.TYPE_CODE_RVALUE_REF):
            val = val.referenced_value()
        elif t.code == gdb.TYPE_CODE_PTR:
            if int(val) == 0:
                return None
            val = val.dereference()
        elif (t.unqualified().name or "").startswith("std::expected<"):
            has_value = int(val["_M_has_value"])
            if has_value != 1:  # 0: an error; anything else: not constructed yet
                return None
            val = val["_M_val"]
        else:
            break
    name = val.type.strip_typedefs().unqualified().name
    if name == "vmm::memory::GuestMemory":
        kind = "memory"
        items = _vector_elements(val["regions_"])
    elif name == "vmm::kvm::Vm":
        kind = "vm"
        items = _vector_elements(val["slots_"])
    else:
        return None
    if items is None:
        return None
    return kind, val


def _memmap_search():
    """The nearest GuestMemory and the nearest Vm in the selected frame and its callers, as
    {"memory": (value, where), "vm": (value, where)}. Names looked at: locals and arguments called memory, memory_,
    guest_memory, vm, vm_, this, and members of `this` with those names."""
    found = {}
    frame = gdb.selected_frame()
    while frame is not None and len(found) < 2:
        try:
            this = frame.read_var("this")
        except (ValueError, gdb.error):
            this = None
        for name in _MEMMAP_NAMES:
            candidates = []
            try:
                candidates.append((name, frame.read_var(name)))
            except (ValueError, gdb.error):
                pass
            if this is not None and name != "this" and not candidates:
                try:
                    candidates.append(("this->" + name, this.dereference()[name]))
                except (gdb.error, RuntimeError):  # no such member (or an unreadable this)
                    pass
            for label, val in candidates:
                try:
                    result = _memmap_kind(val)
                except (gdb.error, gdb.MemoryError, RuntimeError):
                    continue
                if result and result[0] not in found:
                    where = "`%s` in frame #%d (%s)" % (label, frame.level(), frame.name() or "??")
                    found[result[0]] = (result[1], where)
        frame = frame.older()
    return found


def _print_regions(memory, where):
    regions = _vector_elements(memory["regions_"]) or []
    total = sum(int(r["range_"]["size"]) for r in regions)
    print("GuestMemory %s: %d region%s, %s" % (where, len(regions), "" if len(regions) == 1 else "s",
                                               format_size(total)))
    for i, region in enumerate(regions):
        start, size, host, backing, _ = _region_fields(region)
        print("region %d: guest [%#x, %#x) %s -> host %#x %s" % (i, start, start + size, format_size(size), host,
                                                                 backing))


def _print_slots(vm, where):
    slots = _vector_elements(vm["slots_"]) or []
    print("KVM slots of Vm %s: %d slot%s" % (where, len(slots), "" if len(slots) == 1 else "s"))
    for slot in slots:
        gpa, size = int(slot["guest_address"]), int(slot["size"])
        flags = slot_flag_names(int(slot["flags"]))
        print("slot %d: guest [%#x, %#x) %s -> host %#x%s" % (int(slot["slot"]), gpa, gpa + size, format_size(size),
                                                              int(slot["host_address"]),
                                                              (" " + flags) if flags else ""))


class VmmMemmap(gdb.Command):
    """vmm memmap [EXPR]: the guest-physical memory map, one line per region or KVM slot (like QEMU's `info mtree`).

    EXPR is a vmm::memory::GuestMemory or a vmm::kvm::Vm (or a pointer, reference or vmm::Result holding one):
      region 0: guest [0x0, 0x1000000) 16 MiB -> host 0x7ffff6e00000 anonymous
      slot 1: guest [0x100000000, 0x100200000) 2 MiB -> host 0x7ffff6a00000 LOG_DIRTY_PAGES
    Without EXPR, looks in the selected frame and its callers for the nearest GuestMemory and the nearest Vm (locals,
    arguments or members of `this` called memory, memory_, guest_memory, vm, vm_, or `this` itself) and prints the
    regions of the one and the KVM slots of the other: what the VMM thinks the guest has, then what KVM was told."""

    def __init__(self):
        super().__init__("vmm memmap", gdb.COMMAND_USER, gdb.COMPLETE_EXPRESSION)

    def invoke(self, arg, from_tty):
        arg = arg.strip()
        if arg:
            val = gdb.parse_and_eval(arg)
            result = _memmap_kind(val)
            if result is None:
                raise gdb.GdbError("vmm memmap: %s is a %s, not a vmm::memory::GuestMemory or vmm::kvm::Vm (or it "
                                   "is empty, an error, or not constructed yet)" % (arg, val.type))
            kind, target = result
            (_print_regions if kind == "memory" else _print_slots)(target, "`%s`" % arg)
            return
        found = _memmap_search()
        if not found:
            raise gdb.GdbError("vmm memmap: no vmm::memory::GuestMemory or vmm::kvm::Vm in this frame or its "
                               "callers: give one, e.g. `vmm memmap memory`")
        if "memory" in found:
            _print_regions(*found["memory"])
        if "vm" in found:
            _print_slots(*found["vm"])



_BUS_NAMES = ("buses", "buses_", "bus", "this")


def _bus_kind(val):
    """("buses", Buses) or ("bus", Bus) for a value of either type (or a pointer or reference to one, or an object
    with a `buses_` member such as SerialVm); None otherwise."""
    for _ in range(4):
        t = val.type.strip_typedefs()
        if t.code in (gdb.TYPE_CODE_REF, gdb.TYPE_CODE_RVALUE_REF):
            val = val.referenced_value()
        elif t.code == gdb.TYPE_CODE_PTR:
            if int(val) == 0:
                return None
            val = val.dereference()
        else:
            break
    name = val.type.strip_typedefs().unqualified().name or ""
    if name == "vmm::machine::Buses":
        return "buses", val
    if name in ("vmm::devices::Bus", "vmm::devices::IoBus", "vmm::devices::MmioBus"):
        return "bus", val
    if name.startswith("vmm::") and val.type.strip_typedefs().code == gdb.TYPE_CODE_STRUCT:
        try:
            return _bus_kind(val["buses_"])
        except (gdb.error, RuntimeError):
            return None
    return None


def _print_bus(bus, where):
    printer = BusPrinter(bus)
    if printer.entries is None:
        raise gdb.GdbError("vmm bus: the bus %s is not initialised yet" % where)
    print("%s %s: %s" % (printer.to_string().split(" {")[0], where, printer.to_string().split(" {", 1)[1][:-1]))
    for entry in printer.entries:
        print("  " + _entry_line(entry))


class VmmBus(gdb.Command):
    """vmm bus [EXPR]: the devices on a bus, one line per range (like `vmm memmap`, for ports and MMIO).

    EXPR is a vmm::devices::Bus (IoBus, MmioBus), a vmm::machine::Buses (both buses), an object with a `buses_`
    member (SerialVm), or a pointer or reference to one:
      io bus `buses` in frame #3 (vmm::machine::run_vcpu_loop): 2 devices, unclaimed: 0 reads, 0 writes
        [0xf0, 0xf8) report -> vmm::devices::ReportChannel
        [0x3f8, 0x400) serial0 (COM1) -> vmm::devices::Uart16550
    Without EXPR, the nearest one in the selected frame and its callers: a local, argument or member of `this`
    called buses, buses_ or bus, or `this` itself."""

    def __init__(self):
        super().__init__("vmm bus", gdb.COMMAND_USER, gdb.COMPLETE_EXPRESSION)

    def invoke(self, arg, from_tty):
        arg = arg.strip()
        found = None
        if arg:
            found = _bus_kind(gdb.parse_and_eval(arg))
            if found is None:
                raise gdb.GdbError("vmm bus: %s is not a vmm::devices::Bus or vmm::machine::Buses" % arg)
            where = "`%s{}`" % arg
        else:
            frame = gdb.selected_frame()
            while frame is not None and found is None:
                for name in _BUS_NAMES:
                    candidates = []
                    try:
                        candidates.append((name, frame.read_var(name)))
                    except (ValueError, gdb.error):
                        pass
                    for label, val in candidates:
                        try:
                            found = _bus_kind(val)
                        except (gdb.error, gdb.MemoryError, RuntimeError):
                            found = None
                        if found:
                            where = "`%s{}` in frame #%d (%s)" % (label, frame.level(), frame.name() or "??")
                            break
                    if found:
                        break
                if found is None:
                    frame = frame.older()
            if found is None:
                raise gdb.GdbError("vmm bus: no vmm::devices::Bus or vmm::machine::Buses in this frame or its "
                                   "callers: give one, e.g. `vmm bus buses.io`")
        kind, val = found
        if kind == "buses":
            _print_bus(val["io"], where.format(".io"))
            _print_bus(val["mmio"], where.format(".mmio"))
        else:
            _print_bus(val, where.format(""))


_PCI_NAMES = ("root", "root_", "device", "device_", "vm", "vm_", "machine", "this")


def _deref_all(val):
    """Follows references, raw pointers, std::shared_ptr, std::unique_ptr and vmm::Result; None for a null pointer
    or an error."""
    for _ in range(6):
        t = val.type.strip_typedefs()
        name = t.unqualified().name or ""
        if t.code in (gdb.TYPE_CODE_REF, gdb.TYPE_CODE_RVALUE_REF):
            val = val.referenced_value()
        elif t.code == gdb.TYPE_CODE_PTR:
            if int(val) == 0:
                return None
            val = val.dereference()
        elif name.startswith("std::shared_ptr<"):
            val = val["_M_ptr"]
        elif name.startswith("std::expected<"):
            if int(val["_M_has_value"]) != 1:  # an error, or not constructed yet
                return None
            val = val["_M_val"]
        elif name.startswith("std::unique_ptr<"):
            # With the default deleter a unique_ptr is just the pointer: read it as one.
            target = t.template_argument(0)
            val = val.address.cast(target.pointer().pointer()).dereference()
        else:
            break
    return val


def _pci_kind(val):
    """("root", PciRoot), ("device", PciDevice of its dynamic type) or ("config", ConfigSpace) for a value of those
    types, a PciVm (its root), or a pointer / smart pointer / reference to one; None otherwise."""
    val = _deref_all(val)
    if val is None:
        return None
    t = val.type.strip_typedefs().unqualified()
    name = t.name or ""
    if name == "vmm::pci::PciRoot":
        return "root", val
    if name == "vmm::pci::ConfigSpace":
        return "config", val
    if name == "vmm::stage04::PciVm":
        return _pci_kind(val["root_"])
    if t.code != gdb.TYPE_CODE_STRUCT:
        return None
    try:
        dynamic = val.dynamic_type.strip_typedefs()
        if dynamic != t:
            val = val.cast(dynamic)
            t = dynamic
    except gdb.error:
        pass
    is_device = any(f.is_base_class and f.type.strip_typedefs().name == "vmm::pci::PciDevice" for f in t.fields())
    if name == "vmm::pci::PciDevice" or is_device:
        return "device", val
    return None


def _pci_search():
    frame = gdb.selected_frame()
    while frame is not None:
        for name in _PCI_NAMES:
            try:
                val = frame.read_var(name)
            except (ValueError, gdb.error):
                continue
            try:
                found = _pci_kind(val)
            except (gdb.error, gdb.MemoryError, RuntimeError):
                found = None
            if found:
                return found, "`%s` in frame #%d (%s)" % (name, frame.level(), frame.name() or "??")
        frame = frame.older()
    return None, None


def _optional_value(opt):
    """The value in a libstdc++ std::optional, or None."""
    payload = opt["_M_payload"]
    if not bool(payload["_M_engaged"]):
        return None
    return payload["_M_payload"]["_M_value"]


def _print_config(config, title, slot_state=None):
    data = _config_bytes(config)
    bars = _vector_elements(config["bars_"])
    if data is None or bars is None:
        raise gdb.GdbError("vmm pci: %s: the configuration space is not initialised yet" % title)
    print(title)
    command, status = _le(data, 0x04, 2), _le(data, 0x06, 2)
    header = data[0x0e]
    print("  vendor %04x device %04x, class %02x/%02x/%02x rev %02x, header type %#04x (%s%s)" % (
        _le(data, 0, 2), _le(data, 2, 2), data[0x0b], data[0x0a], data[0x09], data[0x08], header,
        "bridge" if header & 0x7f == 1 else "normal", ", multi-function" if header & 0x80 else ""))
    print("  command %#06x (%s), status %#06x (%s)" % (command, _bit_names(command, PCI_COMMAND_BITS), status,
                                                        _bit_names(status, PCI_STATUS_BITS)))
    if not bars:
        print("  no BARs")
    for bar in bars:
        index = int(bar["index"])
        kind = _bar_kind(bar)
        address, sizing = _bar_address(data, bar)
        line = "  BAR%d %s%s size %#x at %#x" % (index, kind, " prefetchable" if bool(bar["prefetchable"]) else "",
                                                int(bar["size"]), address)
        decoding = command & (0x1 if kind == "io" else 0x2)
        if sizing:
            line += ", being sized"
        elif address == 0:
            line += ", unassigned"
        if not decoding:
            line += ", decoding off"
        if slot_state is not None:
            try:
                placed = _optional_value(slot_state["bars"]["_M_elems"][index]["placed"])
            except (gdb.error, RuntimeError):
                placed = None
            if placed is not None:
                base, size = int(placed["base"]), int(placed["size"])
                line += " -> mapped on the %s bus [%#x, %#x)" % ("io" if _enumerator(placed["space"]) == "Io"
                                                                 else "mmio", base, base + size)
            else:
                line += " -> not mapped"
        print(line)
    caps = _walk_caps(data)
    print("  capabilities: %s" % (", ".join("%s@%#04x" % (_cap_name(i), o) for o, i in caps) or "none"))
    for offset, cap_id in caps:
        if cap_id != 0x11:
            continue
        control = _le(data, offset + 2, 2)
        table, pba = _le(data, offset + 4, 4), _le(data, offset + 8, 4)
        flags = [name for bit, name in ((0x8000, "enabled"), (0x4000, "function masked")) if control & bit]
        print("  MSI-X: %d vectors, %s; table in BAR%d at %#x, PBA in BAR%d at %#x" % (
            (control & 0x7ff) + 1, ", ".join(flags) if flags else "disabled", table & 7, table & ~7, pba & 7,
            pba & ~7))


def _device_title(device, slot=None):
    try:
        kind = str(device.dynamic_type.strip_typedefs())
    except gdb.error:
        kind = str(device.type)
    where = "00:%02x.0 " % slot if slot is not None else ""
    return "%s%s" % (where, kind)


class VmmPci(gdb.Command):
    """vmm pci [EXPR]: PCI configuration space decoded, like `lspci -vv` from inside the VMM.

    EXPR is a vmm::pci::PciDevice (PciTestDevice, HostBridge, ...), a vmm::pci::PciRoot (every device on bus 0,
    with where the root placed each BAR), a vmm::stage04::PciVm (its root), a vmm::pci::ConfigSpace, or a pointer,
    smart pointer or reference to one. Without EXPR, the nearest one in the selected frame and its callers (a local,
    argument or `this` called root, root_, device, device_, vm, vm_, machine or this). Reads memory only: no C++ is
    called, so it works at any breakpoint (the root's mutex may be held)."""

    def __init__(self):
        super().__init__("vmm pci", gdb.COMMAND_USER, gdb.COMPLETE_EXPRESSION)

    def invoke(self, arg, from_tty):
        arg = arg.strip()
        if arg:
            found = _pci_kind(gdb.parse_and_eval(arg))
            where = "`%s`" % arg
            if found is None:
                raise gdb.GdbError("vmm pci: %s is not a PciRoot, PciDevice, PciVm or ConfigSpace" % arg)
        else:
            found, where = _pci_search()
            if found is None:
                raise gdb.GdbError("vmm pci: no vmm::pci::PciRoot, PciDevice or PciVm in this frame or its callers: "
                                   "give one, e.g. `vmm pci vm->root_`")
        kind, val = found
        if kind == "config":
            _print_config(val, "ConfigSpace %s" % where)
        elif kind == "device":
            _print_config(val["config_"], "%s %s" % (_device_title(val), where))
        else:
            slots = val["slots_"]["_M_elems"]
            print("PciRoot %s: bus 0" % where)
            for number in range(32):
                slot = slots[number]
                device = _deref_all(slot["device"])
                if device is None:
                    continue
                try:
                    device = device.cast(device.dynamic_type.strip_typedefs())
                except gdb.error:
                    pass
                _print_config(device["config_"], _device_title(device, number), slot)


_VQ_SHOWN = 8  # ring entries shown per ring: the most recent ones


class _GuestReader:
    """Reads guest-physical memory of a vmm::memory::GuestMemory from the inferior, region by region (no C++ is
    called: it works with any lock held)."""

    def __init__(self, memory):
        regions = _vector_elements(memory["regions_"], limit=64) or []
        self.regions = []
        for region in regions:
            start, size, host, _, _ = _region_fields(region)
            self.regions.append((start, size, host))

    def read(self, gpa, length):
        out = b""
        while length > 0:
            for start, size, host in self.regions:
                if start <= gpa < start + size:
                    n = min(length, start + size - gpa)
                    out += _bytes_at(host + gpa - start, n)
                    gpa += n
                    length -= n
                    break
            else:
                raise gdb.GdbError("vmm vq: guest address %#x is not in guest memory" % gpa)
        return out

    def u16(self, gpa):
        return int.from_bytes(self.read(gpa, 2), "little")


def _vq_from(val, depth=0):
    """(SplitQueue value, how it was reached) for a SplitQueue, a std::optional of one, an Activation, an
    RngDevice (its activation's queue 0), a VirtioPciDevice (its device's queue 0, or the queue the driver enabled
    before DRIVER_OK), a VirtioRngVm, or a pointer / smart pointer / reference to any of these; None otherwise."""
    if depth > 5:
        return None
    val = _deref_all(val)
    if val is None:
        return None
    t = val.type.strip_typedefs().unqualified()
    if t.code != gdb.TYPE_CODE_STRUCT:
        return None
    name = t.name or ""
    if name == "vmm::virtio::SplitQueue":
        return (val, "") if _split_queue_sane(val) else None
    if name.startswith("std::optional<"):
        inner = _optional_value(val)
        return None if inner is None else _vq_from(inner, depth + 1)
    if name == "vmm::virtio::Activation":
        queues = _vector_elements(val["queues"], limit=64) or []
        found = _vq_from(queues[0], depth + 1) if queues else None
        return (found[0], "queue 0 of the Activation") if found else None
    if name == "vmm::stage05::VirtioRngVm":
        found = _vq_from(val["transport_"], depth + 1)
        return (found[0], "VirtioRngVm -> " + found[1]) if found else None
    try:
        dynamic = val.dynamic_type.strip_typedefs()
        if dynamic != t:
            val = val.cast(dynamic)
            name = dynamic.name or ""
    except gdb.error:
        pass
    if name == "vmm::virtio::rng::RngDevice":
        found = _vq_from(val["activation_"], depth + 1)
        return (found[0], "RngDevice, queue 0 of its activation") if found else None
    if name == "vmm::virtio::VirtioPciDevice":
        found = _vq_from(val["device_"], depth + 1)
        if found:
            return found[0], "VirtioPciDevice -> " + found[1]
        slots = _vector_elements(val["queues_"], limit=64) or []
        if slots:
            found = _vq_from(slots[0]["enabled"], depth + 1)
            if found:
                return found[0], "VirtioPciDevice, queue 0 enabled, not active yet"
    return None


def _frame_values(frame):
    """(name, value) of `this`, then the arguments and locals of a frame, innermost block first."""
    try:
        yield "this", frame.read_var("this")
    except (ValueError, gdb.error):
        pass
    try:
        block = frame.block()
    except RuntimeError:
        return
    seen = {"this"}
    while block is not None:
        for symbol in block:
            if not (symbol.is_argument or symbol.is_variable) or symbol.name in seen:
                continue
            seen.add(symbol.name)
            try:
                yield symbol.name, symbol.value(frame)
            except (gdb.error, RuntimeError):
                continue
        if block.function is not None:
            break
        block = block.superblock


def _vq_where(label, via):
    return "`%s`%s" % (label, " (%s)" % via if via else "")


def _vq_search():
    frame = gdb.selected_frame()
    while frame is not None:
        for name, val in _frame_values(frame):
            try:
                found = _vq_from(val)
            except (gdb.error, gdb.MemoryError, RuntimeError):
                found = None
            if found:
                return found[0], "%s in frame #%d (%s)" % (_vq_where(name, found[1]), frame.level(),
                                                            frame.name() or "??")
        frame = frame.older()
    return None, None


def _recent(index, count):
    """The up to _VQ_SHOWN most recent of `count` ring positions below free-running `index`, oldest first."""
    n = min(count, _VQ_SHOWN)
    return [(index - n + i) & 0xffff for i in range(n)]


def _print_vq(queue, where):
    layout = queue["layout_"]
    size = int(layout["size"])
    desc, avail, used = _gpa(layout["descriptor_table"]), _gpa(layout["available_ring"]), _gpa(layout["used_ring"])
    next_avail, next_used = int(queue["next_avail_"]), int(queue["next_used_"])
    memory = _GuestReader(queue["memory_"].dereference())
    try:
        avail_flags, avail_idx = memory.u16(avail), memory.u16(avail + 2)
        used_event = memory.u16(avail + 4 + 2 * size)
        used_flags, used_idx = memory.u16(used), memory.u16(used + 2)
        avail_event = memory.u16(used + 4 + 8 * size)
    except gdb.MemoryError as e:
        raise gdb.GdbError("vmm vq: cannot read the rings in guest memory: %s" % e)
    event_idx = bool(queue["features_"]["event_idx"])
    print("SplitQueue %s" % where)
    print("  size %d, features %s, next_avail %d, next_used %d" % (size, _queue_features_text(queue["features_"]),
                                                                  next_avail, next_used))
    print("  descriptor table at %#x, available ring at %#x, used ring at %#x" % (desc, avail, used))

    # The available ring: the driver's. Entries at and after next_avail are published but not popped yet.
    pending = (avail_idx - next_avail) & 0xffff
    print("  available ring: flags %#x (%s), idx %d, used_event %d%s" % (
        avail_flags, _flag_names(avail_flags, VRING_AVAIL_BITS), avail_idx, used_event,
        "" if event_idx else " (unused: no EVENT_IDX)"))
    # Entries shown: the recent ones below idx (the ring holds size of them; after a reset idx starts at 0).
    shown = _recent(avail_idx, min(size, avail_idx))
    heads = []
    for index in shown:
        slot = index % size
        head = memory.u16(avail + 4 + 2 * slot)
        state = "pending" if ((index - next_avail) & 0xffff) < pending else "popped"
        print("    idx %d slot %d: head %d, %s" % (index, slot, head, state))
        heads.append(head)
    if pending > size:
        print("    the index is %d ahead of next_avail: more than the queue size (a driver error)" % pending)
    if not shown:
        print("    (nothing published)")

    # The used ring: the device's.
    print("  used ring: flags %#x (%s), idx %d, avail_event %d%s" % (
        used_flags, _flag_names(used_flags, VRING_USED_BITS), used_idx, avail_event,
        "" if event_idx else " (unused: no EVENT_IDX)"))
    shown = _recent(used_idx, min(size, used_idx))
    for index in shown:
        slot = index % size
        elem = memory.read(used + 4 + 8 * slot, 8)
        print("    idx %d slot %d: id %d, len %d" % (index, slot, int.from_bytes(elem[:4], "little"),
                                                     int.from_bytes(elem[4:], "little")))
    if not shown:
        print("    (nothing used)")

    # The descriptors the shown heads lead to, chain by chain (each walk bounded by the queue size).
    print("  descriptors (the chains of the heads above):")
    printed = set()
    for head in heads:
        index = head
        for _ in range(size):
            if index >= size:
                print("    [%d] out of range: the queue has %d descriptors (a driver error)" % (index, size))
                break
            if index in printed:
                break
            printed.add(index)
            raw = memory.read(desc + 16 * index, 16)
            addr, length = int.from_bytes(raw[0:8], "little"), int.from_bytes(raw[8:12], "little")
            flags, nxt = int.from_bytes(raw[12:14], "little"), int.from_bytes(raw[14:16], "little")
            print("    [%d] %s" % (index, _desc_line(addr, length, flags, nxt)))
            if flags & 0x4 and length % 16 == 0:
                for i in range(min(length // 16, _VQ_SHOWN)):
                    try:
                        entry = memory.read(addr + 16 * i, 16)
                    except (gdb.GdbError, gdb.MemoryError):
                        print("        indirect [%d] at %#x: not in guest memory" % (i, addr + 16 * i))
                        break
                    print("        indirect [%d] %s" % (i, _desc_line(
                        int.from_bytes(entry[0:8], "little"), int.from_bytes(entry[8:12], "little"),
                        int.from_bytes(entry[12:14], "little"), int.from_bytes(entry[14:16], "little"))))
            if not flags & 0x1:
                break
            index = nxt
    if not printed:
        print("    (none)")
    counters = _deref_all(queue["counters_"])
    if counters is not None:
        print("  counters: %s" % _counters_text(counters))


class VmmVq(gdb.Command):
    """vmm vq [EXPR]: a virtio split virtqueue decoded from guest memory, both sides of the protocol.

    Shows the queue's size and ring features, where the device is (next_avail, next_used), and then, read from the
    guest's memory: the available ring (flags, idx, the most recent entries, used_event), the used ring (flags, idx,
    the most recent {id, len} entries, avail_event), the descriptors of the chains the shown heads lead to (addr, len,
    WRITE|NEXT|INDIRECT, next) and the queue's counters.

    EXPR is a vmm::virtio::SplitQueue, an RngDevice or Activation (queue 0), a VirtioPciDevice (its device's queue
    0, or the queue the driver enabled before DRIVER_OK), a VirtioRngVm, or a pointer, smart pointer, reference or
    std::optional of one. Without EXPR, the nearest one in the selected frame and its callers (`this`, then the
    arguments and locals). Reads memory only: no C++ is called, so it works at any breakpoint (the device's lock is
    usually held)."""

    def __init__(self):
        super().__init__("vmm vq", gdb.COMMAND_USER, gdb.COMPLETE_EXPRESSION)

    def invoke(self, arg, from_tty):
        arg = arg.strip()
        if arg:
            found = _vq_from(gdb.parse_and_eval(arg))
            if found is None:
                raise gdb.GdbError("vmm vq: %s is not a SplitQueue (or an RngDevice, VirtioPciDevice, VirtioRngVm with "
                                   "an active queue), or it is not constructed yet" % arg)
            queue, where = found[0], _vq_where(arg, found[1])
        else:
            queue, where = _vq_search()
            if queue is None:
                raise gdb.GdbError("vmm vq: no virtqueue in this frame or its callers (a SplitQueue, or an RngDevice "
                                   "or VirtioPciDevice whose driver has enabled queue 0): give one, e.g. "
                                   "`vmm vq this->activation_`")
        _print_vq(queue, where)


# ---------------------------------------------------------------------------------------------------------------------
# stage07: vhost-user commands

def _backend_table_from(val):
    """(BackendMemoryTable, how it was reached) for a BackendMemoryTable, a BackendHandler (its memory_), a Daemon
    (its handler's), or a pointer / smart pointer / reference to one; None otherwise."""
    val = _deref_all(val)
    if val is None:
        return None
    name = val.type.strip_typedefs().unqualified().name or ""
    if name == "vmm::vhost::BackendMemoryTable":
        return val, ""
    if name == "vmm::vhost::BackendHandler":
        return val["memory_"], "its memory_"
    if name == "vmm::vhost::Daemon":
        handler = _deref_all(val["handler_"])
        return (handler["memory_"], "its handler's memory_") if handler is not None else None
    return None


def _maps_line(pid, address):
    """The permissions and the file of the /proc/PID/maps line that starts at `address` ("rw-s /memfd:..."), or
    None."""
    try:
        with open("/proc/%d/maps" % pid) as maps:
            for line in maps:
                fields = line.split(None, 5)
                if int(fields[0].split("-")[0], 16) == address:
                    return "%s %s" % (fields[1], fields[5].strip() if len(fields) > 5 else "(anonymous)")
    except (OSError, ValueError, IndexError):
        pass
    return None


class VmmVhostMem(gdb.Command):
    """vmm vhost-mem [EXPR]: a vhost-user backend's memory table, one region per line: the guest-physical range,
    the frontend's virtual address (what ring addresses use), the fd the region was mapped from with what it is and
    the offset in it, and where the mapping sits in this process (with its /proc/PID/maps permissions and file):

      region 0: gpa [0x0, 0x1000000) 16 MiB, frontend uaddr 0x7fffe6e00000, fd 12 -> /memfd:vmmlab-guest-ram
                (deleted) at offset 0x0, mapped here at 0x7ffff5c00000 (rw-s /memfd:vmmlab-guest-ram (deleted))

    EXPR is a vmm::vhost::BackendMemoryTable, a BackendHandler or a Daemon (or a pointer, smart pointer or reference
    to one). Without EXPR, the nearest one in the selected frame and its callers (`this`, arguments, locals). Reads
    memory only: no C++ is called, so it works with the handler's lock held."""

    def __init__(self):
        super().__init__("vmm vhost-mem", gdb.COMMAND_USER, gdb.COMPLETE_EXPRESSION)

    def invoke(self, arg, from_tty):
        arg = arg.strip()
        found = None
        if arg:
            found = _backend_table_from(gdb.parse_and_eval(arg))
            if found is None:
                raise gdb.GdbError("vmm vhost-mem: %s is not a BackendMemoryTable, BackendHandler or Daemon" % arg)
            table, where = found[0], "`%s`%s" % (arg, " (%s)" % found[1] if found[1] else "")
        else:
            frame = gdb.selected_frame()
            while frame is not None and found is None:
                for name, val in _frame_values(frame):
                    try:
                        found = _backend_table_from(val)
                    except (gdb.error, gdb.MemoryError, RuntimeError):
                        found = None
                    if found is not None:
                        table = found[0]
                        where = "`%s`%s in frame #%d (%s)" % (name, " (%s)" % found[1] if found[1] else "",
                                                                frame.level(), frame.name() or "??")
                        break
                frame = frame.older()
            if found is None:
                raise gdb.GdbError("vmm vhost-mem: no BackendMemoryTable, BackendHandler or Daemon in this frame or "
                                   "its callers: give one, e.g. `vmm vhost-mem this->memory_`")
        rows = _backend_table_rows(table)
        if rows is None:
            raise gdb.GdbError("vmm vhost-mem: the table is not constructed yet")
        total = sum(r["size"] for r in rows)
        print("vhost-user memory table %s: %d region%s, %s" % (where, len(rows), "" if len(rows) == 1 else "s",
                                                              format_size(total)))
        pid = gdb.selected_inferior().pid
        for i, r in enumerate(rows):
            maps = _maps_line(pid, r["host"]) if r["host"] else None
            print("region %d: gpa [%#x, %#x) %s, frontend uaddr %#x, fd %d -> %s at offset %#x, mapped here at %#x%s"
                  % (i, r["gpa"], r["gpa"] + r["size"], format_size(r["size"]), r["uaddr"], r["fd"],
                     _fd_target(r["fd"]), r["mmap_offset"], r["host"], " (%s)" % maps if maps else ""))


def _eventfd_ids(pid):
    """{fd number: (eventfd id, count)} for the eventfds of process `pid` (from /proc/PID/fd and fdinfo)."""
    out = {}
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return out
    for name in names:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, name)) != "anon_inode:[eventfd]":
                continue
            fields = {}
            with open("/proc/%d/fdinfo/%s" % (pid, name)) as info:
                for line in info:
                    key, _, value = line.partition(":")
                    fields[key.strip()] = value.strip()
            if "eventfd-id" in fields:
                out[int(name)] = (int(fields["eventfd-id"]), int(fields.get("eventfd-count", "0"), 16))
        except (OSError, ValueError):
            continue
    return out


def _children_of(pid):
    """The PIDs whose parent is `pid` (from /proc/*/stat)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(children)


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as comm:
            return comm.read().strip()
    except OSError:
        return "?"


class VmmVhostFds(gdb.Command):
    """vmm vhost-fds [PID...]: the eventfds of the process being debugged next to those of other processes (by
    default its children: the vhost-user daemon a VMM started), matched by the kernel's eventfd id. An eventfd passed
    over a unix socket (SCM_RIGHTS) is the same kernel object on both sides, with the same id and counter, under
    different fd numbers:

      eventfd id 12 (count 0): stage07-vhost-u fd 17, 23 | vhost-user-rng fd 9

    Eventfds only one process holds are listed after the shared ones, marked "(only NAME)". Reads /proc only."""

    def __init__(self):
        super().__init__("vmm vhost-fds", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        own = gdb.selected_inferior().pid
        others = [int(word) for word in arg.split()] if arg.strip() else _children_of(own)
        processes = [own] + [p for p in others if p != own]
        by_id = {}
        for pid in processes:
            for fd, (ident, count) in sorted(_eventfd_ids(pid).items()):
                entry = by_id.setdefault(ident, {"count": count, "holders": {}})
                entry["holders"].setdefault(pid, []).append(fd)
        print("eventfds of %s" % ", ".join("%s (pid %d)" % (_comm(p), p) for p in processes))
        shared = [i for i in sorted(by_id) if len(by_id[i]["holders"]) > 1]
        alone = [i for i in sorted(by_id) if len(by_id[i]["holders"]) == 1]
        for ident in shared + alone:
            entry = by_id[ident]
            holders = " | ".join("%s fd %s" % (_comm(pid), ", ".join(str(fd) for fd in entry["holders"][pid]))
                                 for pid in processes if pid in entry["holders"])
            alone_note = "" if ident in shared else " (only %s)" % _comm(next(iter(entry["holders"])))
            print("eventfd id %d (count %d): %s%s" % (ident, entry["count"], holders, alone_note))


VmmPrefix()
VmmExitName()
VmmFds()
VmmRegs()
VmmKvmRun()
VmmMemmap()
VmmBus()
VmmPci()
VmmVq()
VmmVhostMem()
VmmVhostFds()
