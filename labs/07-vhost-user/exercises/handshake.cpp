// Lab 07, exercise 2: the frontend's side of the handshake. See labs/07-vhost-user/README.md.
#include "lab07.hpp"

namespace lab07 {

vmm::Result<Negotiated> negotiate(vmm::vhost::Connection& connection, std::uint64_t wanted) {
  // TODO: build each request as a vmm::vhost::Message (request, flags = kVersion, payload), send it with
  // connection.send, and read its reply with connection.receive(Direction::ToFrontend, timeout, the request you
  // sent): a reply's payload is a u64 (Message::u64). The order is in lab07.hpp and in the README's table.
  // SET_OWNER has no reply of its own: ask for an ack (kNeedReply) only when REPLY_ACK was negotiated, and then
  // receive it with `ack` = true. Then delete the return below.
  (void)connection;
  (void)wanted;
  return vmm::logic_error("negotiate", "not implemented yet (lab 07, exercise 2)");
}

}  // namespace lab07
