// A hiredis protocol reader (redisReader) that builds tiercache's Reply
// directly, without an intermediate redisReply. Internal.
#ifndef TIERCACHE_SRC_REDIS_REPLY_READER_H_
#define TIERCACHE_SRC_REDIS_REPLY_READER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tiercache/redis/reply.h"
#include "tiercache/status.h"

struct redisReader;

namespace tiercache::redis::internal {

// A new reader whose redisReaderGetReply hands out heap-allocated Reply
// objects (the caller owns them: std::unique_ptr<Reply>). Free the reader
// with redisReaderFree.
redisReader* NewReplyReader();

// One connection's reply stream, for the I/O thread's reads and a
// borrower's direct exchange alike: bytes go in (FeedReplies), whole replies
// come out in order (NextReply).
enum class ReplyState : uint8_t {
  kReply,          // *out holds the next reply
  kNeedMore,       // no whole reply yet: feed more bytes
  kProtocolError,  // the stream is unusable; *error says why
};
// Appends `n` bytes read from the connection. False (with *error) when the
// reader refuses them: a protocol error.
bool FeedReplies(redisReader* reader, const char* bytes, size_t n, std::string* error);
// The next whole reply, if one is complete.
ReplyState NextReply(redisReader* reader, Reply* out, std::string* error);

// Parses every complete reply in `chunks`, fed one after the other (a reply
// may span chunks). kInternal on a protocol error. For tests and tools.
Result<std::vector<Reply>> ParseReplies(const std::vector<std::string_view>& chunks);

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_REPLY_READER_H_
