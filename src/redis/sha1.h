// SHA-1 of a Lua script body, as Redis names scripts (EVALSHA). Internal.
#ifndef TIERCACHE_SRC_REDIS_SHA1_H_
#define TIERCACHE_SRC_REDIS_SHA1_H_

#include <string>
#include <string_view>

namespace tiercache::redis::internal {

// 40 lowercase hex digits.
std::string Sha1Hex(std::string_view data);

}  // namespace tiercache::redis::internal

#endif  // TIERCACHE_SRC_REDIS_SHA1_H_
