// A hiredis protocol reader (redisReader) that builds tiercache's Reply
// directly, without an intermediate redisReply. Internal.
#ifndef TIERCACHE_SRC_REDIS_REPLY_READER_H_
#define TIERCACHE_SRC_REDIS_REPLY_READER_H_

#include <memory>
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

// Parses every complete reply in `chunks`, fed one after the other (a reply
// may span chunks). kInternal on a protocol error. For tests and tools.
Result<std::vector<Reply>> ParseReplies(const std::vector<std::string_view>& chunks);

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_REPLY_READER_H_
