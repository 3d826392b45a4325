// Reply: a Redis reply as a plain value (no hiredis type), as returned by
// RedisClient's generic calls.
//
// Error replies never reach the caller as a Reply: the client turns them into a
// non-OK Status (see redis_client.h). A Reply therefore holds nil, a bulk or
// status string, an integer, or an array of replies.
//
// Thread-safety: a value type; see status.h for the usual rules.
#ifndef TIERCACHE_REDIS_REPLY_H_
#define TIERCACHE_REDIS_REPLY_H_

#include <cstdint>
#include <string>
#include <vector>

namespace tiercache::redis {

struct Reply {
  enum class Type : uint8_t { kNil, kString, kStatus, kInteger, kArray, kError };

  Type type = Type::kNil;
  std::string str;              // kString, kStatus and kError: the bytes.
  int64_t integer = 0;          // kInteger.
  std::vector<Reply> elements;  // kArray.

  bool IsNil() const noexcept { return type == Type::kNil; }
  bool IsString() const noexcept { return type == Type::kString; }
  bool IsStatus() const noexcept { return type == Type::kStatus; }
  bool IsInteger() const noexcept { return type == Type::kInteger; }
  bool IsArray() const noexcept { return type == Type::kArray; }
  bool IsError() const noexcept { return type == Type::kError; }

  static Reply Nil() { return Reply{}; }
  static Reply String(std::string s) { return Reply{Type::kString, std::move(s), 0, {}}; }
  static Reply StatusReply(std::string s) { return Reply{Type::kStatus, std::move(s), 0, {}}; }
  static Reply Integer(int64_t n) { return Reply{Type::kInteger, {}, n, {}}; }
  static Reply Error(std::string s) { return Reply{Type::kError, std::move(s), 0, {}}; }
  static Reply Array(std::vector<Reply> e) { return Reply{Type::kArray, {}, 0, std::move(e)}; }

  // Renders the reply for logs and test messages ("(nil)", "\"abc\"", "[1, 2]").
  std::string ToString() const;
};

}  // namespace tiercache::redis

#endif  // TIERCACHE_REDIS_REPLY_H_
