# Lab 07, gdb walkthrough 1: the conversation. Every vhost-user message the VMM's frontend sends, decoded.
#
#   labs/gdb/vmm-gdb -x labs/07-vhost-user/messages.gdb --args \
#       build/dev/stage07-vhost-user/stage07-vhost-user --timeout 60
#
# The demo starts the vhost-user-rng daemon (a child process: gdb detaches from it and follows the VMM) and connects
# its frontend to it. This script stops each time the frontend hands a message to its socket
# (vmm::vhost::Connection::send) and prints it with vmmlab's printer for vmm::vhost::Message: the request by name,
# the flags, the payload decoded, and each fd with what it is in this process. Compare with the --trace-vhost-user
# output, which shows the same messages from both sides. Answer the questions (Q1..Q7) as you go; the answers are in
# labs/07-vhost-user/README.md, "gdb answers". The "# CHECK" lines are what CTest expects this script to print.
set pagination off
set confirm off
set breakpoint pending off
# The VMM kicks its vCPU thread out of KVM_RUN with SIGUSR1 when it stops: not a bug, let it through.
handle SIGUSR1 nostop noprint pass

break vmm::vhost::Connection::send
run
# CHECK: Breakpoint 1, vmm::vhost::Connection::send

# Q1. gdb stopped at send's first instruction, before its arguments are stored: the "hit Breakpoint" line shows
#     garbage for `message`. Where is a complete copy? (Look one frame up.) Which function of the frontend sends, and
#     why does every message go through it?
bt -frame-info short-location 3
# CHECK: #0 vmm::vhost::Connection::send
# CHECK-NEXT: #1 {{.*}}vmm::vhost::VhostUserFrontend::exchange_locked
# CHECK-NEXT: #2 {{.*}}vmm::vhost::VhostUserFrontend::exchange

# The first 16 messages, each printed from the caller's frame, with the thread that sent it. (`continue` runs
# quietly: the demo's own output still appears, from the guest, between the messages.)
python
def frontend_message():
    # The caller, VhostUserFrontend::exchange_locked, holds the message by value: its frame is complete.
    return gdb.selected_frame().older().read_var("message")

for n in range(1, 17):
    if n > 1:
        gdb.execute("continue", to_string=True)
    print("message %2d on %-15s %s" % (n, gdb.selected_thread().name, frontend_message()))
end
# Q2. Messages 1 to 5 are the handshake, sent while the VMM builds the machine (which thread?), before the guest
#     runs. Why GET_PROTOCOL_FEATURES at all (what did message 1's answer contain)? Why is SET_PROTOCOL_FEATURES the
#     first message without need_reply, and SET_OWNER the first with it?
# CHECK: message  1 on stage07-vhost-u Message {GET_FEATURES}
# CHECK: message  2 on stage07-vhost-u Message {GET_PROTOCOL_FEATURES}
# CHECK: message  3 on stage07-vhost-u Message {SET_PROTOCOL_FEATURES u64=0x9 (MQ REPLY_ACK)}
# CHECK: message  4 on stage07-vhost-u Message {GET_QUEUE_NUM}
# CHECK: message  5 on stage07-vhost-u Message {SET_OWNER need_reply}
# Q3. Messages 6 to 14 are the activation. Which guest action triggered them, on which thread, and what is that
#     thread not doing while it waits for nine acks? SET_FEATURES carries bit 30 again: whose feature is it?
# CHECK: message  6 on vcpu0           Message {SET_FEATURES need_reply u64=0x160000000 (EVENT_IDX PROTOCOL_FEATURES VERSION_1)}
# Q4. SET_MEM_TABLE: how many regions, where does each sit for the guest (gpa) and for this process (uaddr), and
#     what travels with the message so that the backend can map them? Could the backend use the uaddr values to
#     read guest memory?
# CHECK: message  7 on vcpu0           Message {SET_MEM_TABLE need_reply 2 regions: gpa=0x0 size=0x1000000 uaddr=[[RAM:0x[0-9a-f]+]] off=0x0; gpa=0x80000000 size=0x20000 uaddr=0x{{[0-9a-f]+}} off=0x0 fds=[{{[0-9]+}} -> /memfd:vmmlab-guest-ram (deleted), {{[0-9]+}} -> /memfd:{{.*}} (deleted)]}
# CHECK: message  8 on vcpu0           Message {SET_VRING_NUM need_reply index=0 num=16}
# CHECK: message  9 on vcpu0           Message {SET_VRING_BASE need_reply index=0 num=0}
# Q5. SET_VRING_ADDR: these are not the guest-physical addresses the driver wrote to the common configuration.
#     Which address space are they in, and which region holds them (compare with message 7's uaddr)? What does the
#     backend do to use them?
# CHECK: message 10 on vcpu0           Message {SET_VRING_ADDR need_reply index=0 flags=0x0 desc=0x{{[0-9a-f]+}} used=0x{{[0-9a-f]+}} avail=0x{{[0-9a-f]+}} log=0x0}
# Q6. The three eventfds. Which one will KVM signal, which one will the backend write to interrupt the guest, and
#     which one means "I give up on this queue"? Whose eventfd is the call fd here (`vmm fds all` shows eventfd ids;
#     eventfds.gdb matches them with MsixRoutes' irqfds)?
# CHECK: message 11 on vcpu0           Message {SET_VRING_KICK need_reply index=0 fds=[{{[0-9]+}} -> anon_inode:[eventfd]]}
# CHECK: message 12 on vcpu0           Message {SET_VRING_CALL need_reply index=0 fds=[{{[0-9]+}} -> anon_inode:[eventfd]]}
# CHECK: message 13 on vcpu0           Message {SET_VRING_ERR need_reply index=0 fds=[{{[0-9]+}} -> anon_inode:[eventfd]]}
# CHECK: message 14 on vcpu0           Message {SET_VRING_ENABLE need_reply index=0 num=1}
# Q7. The guest resets the device at the end of its first phase. What does the frontend ask, and what does the
#     answer (in the trace: GET_VRING_BASE reply) tell it? Why does the next activation send SET_VRING_BASE 0 anyway?
# CHECK: message 15 on vcpu0           Message {SET_VRING_ENABLE need_reply index=0 num=0}
# CHECK: message 16 on vcpu0           Message {GET_VRING_BASE index=0 num=0}

delete
continue
# CHECK: PASS
# CHECK: vhost-user messages sent by the frontend {{ *}}27
# CHECK: [Inferior 1 (process {{[0-9]+}}) exited normally]
