# Lab 07, gdb walkthrough 2: the backend's side. Attach to the vhost-user-rng daemon and watch it map guest memory.
#
#   labs/gdb/vmm-gdb -x labs/07-vhost-user/memtable.gdb --args build/dev/stage07-vhost-user/vhost-user-rng
#
# gdb runs the daemon (`--socket <a new directory>/rng.sock --once`: one frontend, then exit). Once it listens, the
# script starts the VMM, stage07-vhost-user --socket <that path>, as the frontend, in the background (the program
# next to the daemon, or $VMMLAB_DEMO). Then it stops where the backend handles SET_MEM_TABLE and where its queue
# worker first serves the guest. The VMM is not under gdb: it goes on running while the daemon is stopped, and it waits
# at most 5 seconds for each answer, so do not linger at the SET_MEM_TABLE stop when you step through by hand.
# Answer the questions (Q1..Q8) as you go; the answers are in labs/07-vhost-user/README.md, "gdb answers". The
# "# CHECK" lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off

python
import atexit, os, shutil, subprocess, tempfile
lab07_dir = tempfile.mkdtemp(prefix="vmmlab-lab07-")
lab07_socket = os.path.join(lab07_dir, "rng.sock")
lab07_frontend = None
def lab07_cleanup():
    if lab07_frontend is not None and lab07_frontend.poll() is None:
        lab07_frontend.kill()
    shutil.rmtree(lab07_dir, ignore_errors=True)
atexit.register(lab07_cleanup)
gdb.execute("set args --socket %s --once" % lab07_socket)
end

# The daemon has bound its socket and waits for a frontend (Daemon::create bound it; serve_one accepts).
break vmm::vhost::Daemon::serve_one
run
# CHECK: vhost-user-rng: listening on {{.*}}/rng.sock
# CHECK: Breakpoint 1, vmm::vhost::Daemon::serve_one
python
demo = os.environ.get("VMMLAB_DEMO") or os.path.join(os.path.dirname(gdb.current_progspace().filename),
                                                      "stage07-vhost-user")
lab07_frontend = subprocess.Popen([demo, "--socket", lab07_socket, "--timeout", "60"], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
print("frontend started: %s --socket %s (pid %d)" % (os.path.basename(demo), lab07_socket, lab07_frontend.pid))
end
# CHECK: frontend started: stage07-vhost-user --socket {{.*}}/rng.sock (pid {{[0-9]+}})

# The memory-table handler. (It stops at the first instruction: the caller's frame has the message.)
delete
break vmm::vhost::BackendHandler::set_mem_table_locked
continue
# CHECK: Breakpoint 2, vmm::vhost::BackendHandler::set_mem_table_locked

# Q1. Which thread of the daemon handles messages, and where did it wait for them? (bt) What has the frontend done
#     before this message (the handshake; and which guest action started the activation)?
bt -frame-info short-location 6
# CHECK: #0 vmm::vhost::BackendHandler::set_mem_table_locked
# CHECK-NEXT: #1 {{.*}}vmm::vhost::BackendHandler::dispatch_locked
# CHECK-NEXT: #2 {{.*}}vmm::vhost::BackendHandler::handle
# CHECK-NEXT: #3 {{.*}}vmm::vhost::BackendHandler::serve
# CHECK-NEXT: #4 {{.*}}vmm::vhost::Daemon::session
# CHECK-NEXT: #5 {{.*}}vmm::vhost::Daemon::serve_one
# Q2. The message as the backend received it. The fd numbers are not the ones the VMM sent (see messages.gdb): why
#     not? What do the two fds refer to, and why can this process map them at all?
up
print request
# CHECK: ${{[0-9]+}} = Message {SET_MEM_TABLE need_reply 2 regions: gpa=0x0 size=0x1000000 uaddr=[[UADDR0:0x[0-9a-f]+]] off=0x0; gpa=0x80000000 size=0x20000 uaddr=[[UADDR1:0x[0-9a-f]+]] off=0x0 fds=[{{[0-9]+}} -> /memfd:vmmlab-guest-ram (deleted), {{[0-9]+}} -> /memfd:vmmlab-guest-ram (deleted)]}
print memory_
# CHECK: ${{[0-9]+}} = BackendMemoryTable {empty}

# Q3. Let the handler run: it maps each region (BackendMemoryTable::create -> GuestMemoryRegion::map_file: mmap of
#     the fd at mmap_offset, MAP_SHARED). For each region: where is it for the guest, for the frontend, and for this
#     process? Which of the three addresses appears in descriptors, which in SET_VRING_ADDR, and which does nobody
#     but this process ever see? Where in the memfd is guest-physical 0x80000010 (exercise 1c)?
down
finish
# CHECK: Value returned is ${{[0-9]+}} = Result {ok: std::optional<vmm::vhost::Message> [no contained value]}
vmm vhost-mem
# CHECK: vhost-user memory table `this` (its memory_) in frame #0 (vmm::vhost::BackendHandler::dispatch_locked): 2 regions, 16512 KiB
# CHECK-NEXT: region 0: gpa [0x0, 0x1000000) 16 MiB, frontend uaddr [[UADDR0]], fd {{[0-9]+}} -> /memfd:vmmlab-guest-ram (deleted) at offset 0x0, mapped here at 0x{{[0-9a-f]+}} (rw-s /memfd:vmmlab-guest-ram (deleted))
# CHECK-NEXT: region 1: gpa [0x80000000, 0x80020000) 128 KiB, frontend uaddr [[UADDR1]], fd {{[0-9]+}} -> /memfd:vmmlab-guest-ram (deleted) at offset 0x0, mapped here at 0x{{[0-9a-f]+}} (rw-s /memfd:vmmlab-guest-ram (deleted))
print memory_
# CHECK: ${{[0-9]+}} = BackendMemoryTable {2 regions, 16512 KiB} = {MemoryRegion {gpa [0x0, 0x1000000) 16 MiB, uaddr [[UADDR0]], mmap_offset 0x0}, MemoryRegion {gpa [0x80000000, 0x80020000) 128 KiB, uaddr [[UADDR1]], mmap_offset 0x0}}
print *memory_.memory_
# CHECK: ${{[0-9]+}} = GuestMemory {2 regions, 16512 KiB} = {GuestMemoryRegion {guest [0x0, 0x1000000) 16 MiB -> host 0x{{[0-9a-f]+}}, shared_file, huge pages: none}, GuestMemoryRegion {guest [0x80000000, 0x80020000) 128 KiB -> host 0x{{[0-9a-f]+}}, shared_file, huge pages: none}}
# Q4. The request's fds are gone from the message (print request again): who owns the memfds now? How many times is
#     one memfd's memory mapped on this host, and how many copies of the guest's RAM exist?
print request
# CHECK: ${{[0-9]+}} = Message {SET_MEM_TABLE need_reply 2 regions: {{.*}} off=0x0}

# Q5. The first kick. The ring's worker thread wakes up because its kick eventfd became readable: who wrote it (the
#     VMM is not under gdb, but it did not do it either: see the demo's "exited to the VMM" line), and where did this
#     process get the descriptor from? Its counter is in /proc/<pid>/fdinfo (hex); nobody has read it yet.
delete
break vmm::vhost::VringWorker::Subscriber::kick
continue
# CHECK: Thread {{[0-9]+}} "vu-rng-q0" hit Breakpoint 3, vmm::vhost::VringWorker::Subscriber::kick
up
print fd
# CHECK: ${{[0-9]+}} = [[KICK:[0-9]+]]
python print(open("/proc/%d/fdinfo/%d" % (gdb.selected_inferior().pid, int(gdb.parse_and_eval("fd")))).read())
# CHECK: eventfd-count: {{ *}}{{[1-9a-f][0-9a-f]*$}}
# Q6. Everything this process holds: which descriptors came over the socket (SET_MEM_TABLE, SET_VRING_KICK, CALL,
#     ERR), and which did it make itself? Which one is the connection to the VMM?
vmm fds all
# CHECK: -> socket:[{{[0-9]+}}]
# CHECK: -> /memfd:vmmlab-guest-ram (deleted)
# CHECK: fd [[KICK]] -> anon_inode:[eventfd] (count {{[1-9][0-9]*}}, id {{[0-9]+}})

# Q7. The device's code, on the worker: `vmm vq` decodes the ring from this process's own mapping of the memfd. The
#     descriptors hold guest-physical addresses, which the device turns into pointers here through the memory table.
#     Compare the ring's addresses with SET_VRING_ADDR's (messages.gdb, message 10): which translation did the backend
#     do when that message arrived (exercise 1b), and which one does it do for every descriptor?
delete
tbreak vmm::virtio::rng::RngDevice::queue_notify
continue
# CHECK: Thread {{[0-9]+}} "vu-rng-q0" hit Temporary breakpoint 4, vmm::virtio::rng::RngDevice::queue_notify
next
vmm vq
# CHECK: SplitQueue `this` (RngDevice, queue 0 of its activation) in frame #0 (vmm::virtio::rng::RngDevice::queue_notify)
# CHECK-NEXT: size 16, features EVENT_IDX, next_avail {{[0-4]}}, next_used {{[0-4]}}
# CHECK-NEXT: descriptor table at 0x{{[0-9a-f]+}}, available ring at 0x{{[0-9a-f]+}}, used ring at 0x{{[0-9a-f]+}}
# CHECK-NEXT: available ring: flags 0x0 (none), idx {{[1-4]}}, used_event {{[0-9]+}}
# CHECK: descriptors (the chains of the heads above):
# CHECK-NEXT: [0] addr 0x{{[0-9a-f]+}} len 16 flags WRITE

# Q8. Two threads. Which one is which, and where is each waiting or working? What would this process look like
#     with two queues? And after the guest's reset at the end of its first phase?
info threads
# CHECK: "vhost-user-rng" {{.*}}poll
# CHECK: * {{[0-9]+}} Thread {{0x[0-9a-f]+}} (LWP {{[0-9]+}}) "vu-rng-q0" vmm::virtio::rng::RngDevice::queue_notify

# Let both sides finish: the guest runs its two phases, the VMM disconnects, and a --once daemon exits.
delete
continue
# CHECK: vhost-user-rng: session 1 ended: frontend disconnected
# CHECK: vhost-user-rng: 512 bytes served
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
python
output, _ = lab07_frontend.communicate(timeout=90)
print("----- the frontend (stage07-vhost-user) printed -----")
print(output.decode(errors="replace"), end="")
print("----- the frontend exited with status %d -----" % lab07_frontend.returncode)
end
# CHECK: ----- the frontend (stage07-vhost-user) printed -----
# CHECK: PASS
# CHECK: interrupts the guest took
# CHECK-NEXT: of which the VMM relayed {{ *}}0
# CHECK-NEXT: of which the VMM wrote to an irqfd {{ *}}0
# CHECK: ----- the frontend exited with status 0 -----
