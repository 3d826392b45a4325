// Socket operations on a Connection (connection.cc). I/O thread only.
#ifndef TIERCACHE_SRC_REDIS_CONNECTION_IO_H_
#define TIERCACHE_SRC_REDIS_CONNECTION_IO_H_

#include <cstdint>
#include <string>

#include "redis/engine.h"

namespace tiercache::redis::internal {

// Starts a non-blocking connect; false (with `error`) when it fails at once.
bool ConnOpen(Connection* c, std::string* error);
// Closes the socket and the reader; queues are left to the caller.
void ConnClose(Connection* c);
// Sends as much of c->out as the socket takes; arms EPOLLOUT for the rest.
// Sends nothing while HoldForReplies. False when the connection is closed
// (it was, or a send failed and the observer closed it).
bool ConnFlush(Connection* c);

// Write coalescing: true when c->out should wait for replies already due on
// the connection (a whole command sent and unanswered, no partial write
// draining, less than kCoalesceMaxBytes waiting).
constexpr size_t kCoalesceMaxBytes = 16 * 1024;
bool HoldForReplies(const Connection& c, bool coalesce);
// Handles epoll events: connect completion, writability, replies. False
// when the connection is closed afterwards.
bool ConnOnEvent(Connection* c, uint32_t events);

enum class DirectResult : uint8_t {
  kReply,             // *reply holds the reply
  kNotSentInTime,     // the deadline passed before a byte was sent: the connection is intact
  kNotSentBroken,     // sending failed before a byte left: the connection is broken, resending is safe
  kTimedOut,          // sent; the deadline passed before the reply (one orphan reply due)
  kBrokenAfterSend,   // the connection failed after (part of) the command left
};

// Caller thread, on a borrowed connection: sends `cmd` and reads one reply,
// waiting at most until `deadline`. On failure, *error says why.
DirectResult DirectExchange(Connection* c, const std::string& cmd, TimePoint deadline, Reply* reply,
                            std::string* error);

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_CONNECTION_IO_H_
