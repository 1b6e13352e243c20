// Lab 07, exercise 2: the frontend's side of the handshake (reference). See labs/07-vhost-user/README.md.
#include <fmt/format.h>

#include <string>
#include <utility>

#include "lab07.hpp"

namespace lab07 {

namespace {

using vmm::vhost::Connection;
using vmm::vhost::Direction;
using vmm::vhost::Message;
using vmm::vhost::Payload;
using vmm::vhost::ProtocolFeature;
using vmm::vhost::Request;

Message make(Request request, Payload payload = std::monostate{}, std::uint32_t flags = vmm::vhost::kVersion) {
  Message message;
  message.request = request;
  message.flags = flags;
  message.payload = std::move(payload);
  return message;
}

std::string name_of(Request request) {
  return vmm::vhost::request_name(static_cast<std::uint32_t>(request));
}

// Sends `message`; if `reply` (a GET_*, or a SET_* sent with kNeedReply), waits for its answer, a u64 either way.
vmm::Result<std::uint64_t> exchange(Connection& connection, Message message, bool reply) {
  const Request request = message.request;
  const std::string step = fmt::format("negotiate: {}", name_of(request));
  if (auto sent = connection.send(message); !sent) {
    return std::unexpected(std::move(sent).error().with_context(step));
  }
  if (!reply) {
    return 0;
  }
  // The codec checks the answer: a reply flag, the same request, a u64 payload (an ack when one was asked for).
  auto answer = connection.receive(Direction::ToFrontend, Connection::kDefaultTimeout, request, message.needs_reply());
  if (!answer) {
    return std::unexpected(std::move(answer).error().with_context(step));
  }
  return answer->u64();
}

}  // namespace

vmm::Result<Negotiated> negotiate(Connection& connection, std::uint64_t wanted) {
  Negotiated result;

  auto features = exchange(connection, make(Request::GetFeatures), true);
  if (!features) {
    return std::unexpected(std::move(features).error());
  }
  result.features = *features;

  // Bit 30 is the backend saying "I know GET/SET_PROTOCOL_FEATURES". A backend without it may not even know the
  // request numbers: asking would be a protocol error.
  if ((result.features & (1ull << vmm::vhost::kProtocolFeaturesBit)) != 0) {
    auto offered = exchange(connection, make(Request::GetProtocolFeatures), true);
    if (!offered) {
      return std::unexpected(std::move(offered).error());
    }
    const std::uint64_t both = *offered & wanted;
    // No kNeedReply here even if REPLY_ACK is in `both`: the backend only knows REPLY_ACK once this message arrived.
    if (auto set = exchange(connection, make(Request::SetProtocolFeatures, both), false); !set) {
      return std::unexpected(std::move(set).error());
    }
    result.protocol_features = both;
  }

  if ((result.protocol_features & vmm::vhost::bit(ProtocolFeature::Mq)) != 0) {
    auto queues = exchange(connection, make(Request::GetQueueNum), true);
    if (!queues) {
      return std::unexpected(std::move(queues).error());
    }
    result.queue_num = *queues;
  }

  // With REPLY_ACK the backend answers a SET_* that asks for it: 0 is success. Without it, nothing comes back, and
  // waiting for an ack would wait for ever (or until the timeout).
  const bool ack = (result.protocol_features & vmm::vhost::bit(ProtocolFeature::ReplyAck)) != 0;
  const std::uint32_t flags = vmm::vhost::kVersion | (ack ? vmm::vhost::kNeedReply : 0u);
  auto owner = exchange(connection, make(Request::SetOwner, std::monostate{}, flags), ack);
  if (!owner) {
    return std::unexpected(std::move(owner).error());
  }
  if (*owner != 0) {
    return vmm::logic_error("negotiate: SET_OWNER",
                            fmt::format("the backend refused it (REPLY_ACK status {})", *owner));
  }
  return result;
}

}  // namespace lab07
