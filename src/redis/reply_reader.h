// ReplyReader: a RESP2 reply parser that builds tiercache's Reply directly
// from the bytes read off a connection. Internal.
//
// It replaced hiredis's redisReader on the hot path: that reader copied every
// read into a buffer of its own, moved the unread rest to its front every
// kilobyte (quadratic in the replies one read carries), and handed each reply
// out as a heap-allocated object. Here a reply is parsed where the bytes lie;
// a value is copied once, into its Reply's string.
//
// Incremental: bytes go in as they arrive (Feed), whole replies come out in
// order (Next). A reply that is not complete yet costs nothing to look at
// again: the elements of an array already parsed stay parsed (the frames
// below), and a bulk string waits until all of its bytes are there.
//
// Bounds: a bulk string or an array header must announce at most
// kMaxBulkBytes / kMaxElements (Redis's own proto-max-bulk-len default and
// hiredis's element limit); arrays may nest kMaxDepth deep; array elements
// are allocated as their bytes arrive, not as announced; a number's line
// ends within kMaxNumberLine bytes and a status or error line within
// kMaxLineBytes (else a stream without CRLF would grow the buffer for ever,
// rescanned at every read). Anything else is a protocol error
// (kProtocolError), after which the reader is unusable. Not bounded: the
// total size of one array reply (its elements' count and sizes are each
// bounded, their product is not), as with hiredis.
//
// Thread-safety: none; one connection's thread at a time.
#ifndef TIERCACHE_SRC_REDIS_REPLY_READER_H_
#define TIERCACHE_SRC_REDIS_REPLY_READER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tiercache/redis/reply.h"
#include "tiercache/status.h"

namespace tiercache::redis::internal {

enum class ReplyState : uint8_t {
  kReply,          // *out holds the next reply
  kNeedMore,       // no whole reply yet: feed more bytes
  kProtocolError,  // the stream is unusable; *error says why
};

class ReplyReader {
 public:
  static constexpr int64_t kMaxBulkBytes = int64_t{512} * 1024 * 1024;
  static constexpr int64_t kMaxElements = (int64_t{1} << 31) - 1;
  static constexpr size_t kMaxDepth = 64;
  static constexpr size_t kMaxNumberLine = 24;  // type byte, "-9223372036854775808", CRLF
  static constexpr size_t kMaxLineBytes = 1024 * 1024;

  ReplyReader() = default;
  // Not movable: frames_[0] may point at root_.
  ReplyReader(const ReplyReader&) = delete;
  ReplyReader& operator=(const ReplyReader&) = delete;

  // Back to a fresh reader (a new connection), memory released.
  void Reset() {
    std::string().swap(buf_);
    pos_ = 0;
    root_ = Reply();
    std::vector<Frame>().swap(frames_);
  }
  // Appends `n` bytes read from the connection.
  void Feed(const char* bytes, size_t n);
  // The next whole reply, if one is complete.
  ReplyState Next(Reply* out, std::string* error);
  // Bytes fed and not yet handed out as (part of) a reply.
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  // An array being filled: its Reply (the root, or an element of the array
  // of the frame below, whose elements never move while this one fills),
  // how many elements it announced and how many are not whole yet.
  struct Frame {
    Reply* array;
    int64_t announced;
    int64_t left;
  };

  // Parses one value's header (and a bulk string's bytes) at pos_ into
  // *target. kReply when the value is whole, or an array was opened (a new
  // frame); kNeedMore without consuming anything when bytes are missing.
  ReplyState ParseValue(Reply* target, std::string* error);
  // The Reply the next value goes into: the next element of the array
  // being filled, else `out` (a top-level value).
  Reply* NextTarget(Reply* out);

  std::string buf_;
  size_t pos_ = 0;  // bytes of buf_ consumed
  Reply root_;  // a top-level array being filled
  std::vector<Frame> frames_;
};

// Parses every complete reply in `chunks`, fed one after the other (a reply
// may span chunks). kInternal on a protocol error. For tests and tools.
Result<std::vector<Reply>> ParseReplies(const std::vector<std::string_view>& chunks);

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_REPLY_READER_H_
