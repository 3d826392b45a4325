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
void ConnFlush(Connection* c);
// Handles epoll events: connect completion, writability, replies.
void ConnOnEvent(Connection* c, uint32_t events);

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_CONNECTION_IO_H_
