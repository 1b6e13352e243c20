# Lab 07, gdb walkthrough 3: where the eventfds go. The same kernel eventfds, seen from the VMM and from its backend.
#
#   labs/gdb/vmm-gdb -x labs/07-vhost-user/eventfds.gdb --args \
#       build/dev/stage07-vhost-user/stage07-vhost-user --timeout 60
#
# Stops in the VMM right after the frontend has activated the device (the guest wrote DRIVER_OK; every SET_VRING_*
# was acknowledged), and looks at the descriptors of both processes: the VMM under gdb, and the vhost-user-rng daemon
# it started (a child process, not under gdb: /proc shows its descriptors anyway). An eventfd passed over the socket
# is the same kernel object on both sides, under different numbers; /proc/<pid>/fdinfo gives each eventfd an id that
# is the same wherever it is seen. Answer the questions (Q1..Q5) as you go; the answers are in
# labs/07-vhost-user/README.md, "gdb answers". The "# CHECK" lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off
# The VMM kicks its vCPU thread out of KVM_RUN with SIGUSR1 when it stops: not a bug, let it through.
handle SIGUSR1 nostop noprint pass

break vmm::vhost::VhostUserFrontend::activate
run
# CHECK: Thread {{[0-9]+}} "vcpu0" hit Breakpoint 1, vmm::vhost::VhostUserFrontend::activate
# (The first instruction: one `next` and the arguments are stored.)
next
set $frontend = this
finish
# CHECK: Value returned is ${{[0-9]+}} = Result {ok}

# Q1. The VMM's descriptors. Find KVM's three kinds, the guest RAM's memfds, the vhost-user socket, and the eventfds.
#     Several eventfds appear twice with one id: which, and why?
vmm fds all
# CHECK: -> anon_inode:kvm-vm
# CHECK: -> /memfd:vmmlab-guest-ram (deleted)
# CHECK: -> anon_inode:kvm-vcpu:0
# CHECK: -> socket:[{{[0-9]+}}]

# Q2. Both processes side by side, matched by eventfd id. Which eventfds does the daemon share with the VMM, and which
#     stayed in the VMM? Does the daemon hold anything of KVM's (kvm-vm, kvm-vcpu)? Could it?
vmm vhost-fds
# CHECK: eventfds of stage07-vhost-u (pid {{[0-9]+}}), vhost-user-rng (pid {{[0-9]+}})
# (Ids come from one counter for the whole host, lowest free first: the order of the lines is not the order of creation.)
# CHECK-DAG: eventfd id {{[0-9]+}} (count {{[0-9]+}}): stage07-vhost-u fd {{[0-9]+}}, {{[0-9]+}} | vhost-user-rng fd {{[0-9]+}}
# CHECK-DAG: eventfd id {{[0-9]+}} (count {{[0-9]+}}): stage07-vhost-u fd {{[0-9]+}} (only stage07-vhost-u)

# Q3. Each eventfd by its role: the frontend's own per-queue eventfds (kick, relay, err; made at connect) and the
#     irqfds of the MSI-X vectors (stage06's MsixRoutes; bound to GSIs 24 and 25 with KVM_IRQFD). Which one did the
#     backend get as its call fd, and why that one (the driver chose a vector for queue 0: which)? Who writes each,
#     and who reads it: a process, or KVM?
python
own = gdb.selected_inferior().pid
backend_pids = _children_of(own)
ids_here = _eventfd_ids(own)
ids_there = {}
for pid in backend_pids:
    for fd, (ident, _) in _eventfd_ids(pid).items():
        ids_there.setdefault(ident, []).append((pid, fd))

def where(fd):
    ident = ids_here[fd][0]
    there = ", ".join("%s fd %d" % (_comm(pid), n) for pid, n in sorted(ids_there.get(ident, [])))
    return "VMM fd %d, eventfd id %d -> %s" % (fd, ident, there or "not in the backend")

frontend = gdb.parse_and_eval("$frontend").dereference()
queue = _vector_elements(frontend["queue_fds_"])[0]
main = next(t for t in gdb.selected_inferior().threads() if t.num == 1)
main.switch()
frame = gdb.newest_frame()
while frame is not None and frame.name() != "main":
    frame = frame.older()
machine = frame.read_var("machine")
routes = _deref_all(_deref_all(machine["msi_"])["routes_"])
vectors = _vector_elements(routes["vectors_"])
vector = int(_vector_elements(_deref_all(machine["transport_"])["queues_"])[0]["msix_vector"])
print("queue 0 kick (KVM writes it: ioeventfd)  %s" % where(int(queue["kick"]["fd_"]["fd_"])))
print("queue 0 relay call (unused: irqfd on)    %s" % where(int(queue["relay"]["fd_"]["fd_"])))
print("queue 0 err                              %s" % where(int(queue["err"]["fd_"]["fd_"])))
for v, entry in enumerate(vectors):
    role = "queue 0's vector" if v == vector else "configuration"
    print("MSI-X vector %d irqfd, GSI %d (%s)%s %s" % (v, int(entry["gsi"]), role,
                                                     " " * (17 - len(role)), where(int(entry["irqfd"]["fd_"]["fd_"]))))
end
# CHECK: queue 0 kick (KVM writes it: ioeventfd)  VMM fd {{[0-9]+}}, eventfd id [[KICK:[0-9]+]] -> vhost-user-rng fd {{[0-9]+}}
# CHECK-NEXT: queue 0 relay call (unused: irqfd on)    VMM fd {{[0-9]+}}, eventfd id {{[0-9]+}} -> not in the backend
# CHECK-NEXT: queue 0 err                              VMM fd {{[0-9]+}}, eventfd id {{[0-9]+}} -> vhost-user-rng fd {{[0-9]+}}
# CHECK-NEXT: MSI-X vector 0 irqfd, GSI 24 (configuration)    VMM fd {{[0-9]+}}, eventfd id {{[0-9]+}} -> not in the backend
# CHECK-NEXT: MSI-X vector 1 irqfd, GSI 25 (queue 0's vector) VMM fd {{[0-9]+}}, eventfd id {{[0-9]+}} -> vhost-user-rng fd {{[0-9]+}}

# Q4. The kick eventfd has two descriptors in the VMM (the frontend's, and the Ioeventfd's clone) and one in the
#     daemon, and KVM holds a reference too (KVM_IOEVENTFD): four holders of one counter. Which of them ever reads
#     it? Run the demo with --no-ioeventfd: who writes it then, and how much does that cost per kick?
# Q5. Run with --no-irqfd: which eventfd would the backend get as its call fd, who reads it, and how does the guest's
#     interrupt get out of the VMM then? Why is that path still needed with irqfds (what does call_fd_for return for
#     a masked vector, and what does QEMU do when the guest masks one later)?
delete
continue
# CHECK: PASS
# CHECK: of which the VMM relayed {{ *}}0
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
