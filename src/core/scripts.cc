#include "core/scripts.h"

namespace tiercache::scripts {

// Shared prelude: version(e) -> hi, lo (nil if e is not a format-1 envelope);
// newer(ahi, alo, bhi, blo) -> a > b.
#define TIERCACHE_LUA_PRELUDE                                                      \
  "local function version(e)\n"                                                    \
  "  if not e or #e < 44 or string.sub(e, 1, 3) ~= 'TC\\1' then return nil end\n"  \
  "  local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(e, 9, 16)\n"               \
  "  return ((b1 * 256 + b2) * 256 + b3) * 256 + b4,\n"                            \
  "         ((b5 * 256 + b6) * 256 + b7) * 256 + b8\n"                             \
  "end\n"                                                                          \
  "local function newer(ahi, alo, bhi, blo)\n"                                     \
  "  return ahi > bhi or (ahi == bhi and alo > blo)\n"                             \
  "end\n"

const std::string_view kFencedFill =
    "-- tiercache fenced fill v1\n" TIERCACHE_LUA_PRELUDE
    "local nhi, nlo = version(ARGV[1])\n"
    "if not nhi then return redis.error_reply('ERR tiercache fill: not an envelope') end\n"
    "local function release()\n"
    "  if KEYS[2] and redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end\n"
    "end\n"
    "local old = redis.call('GET', KEYS[1])\n"
    "local ohi, olo = version(old)\n"
    "if ohi and newer(ohi, olo, nhi, nlo) then\n"
    "  release()\n"
    "  return {0, string.sub(old, 9, 16)}\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "release()\n"
    "return {1}\n";

const std::string_view kTombstone =
    "-- tiercache tombstone v1\n" TIERCACHE_LUA_PRELUDE
    "local nhi, nlo = version(ARGV[1])\n"
    "if not nhi or string.byte(ARGV[1], 4) ~= 2 then\n"
    "  return redis.error_reply('ERR tiercache tombstone: not a tombstone envelope')\n"
    "end\n"
    "local old = redis.call('GET', KEYS[1])\n"
    "local ohi, olo = version(old)\n"
    "if ohi then\n"
    "  if newer(ohi, olo, nhi, nlo) then return {0, string.sub(old, 9, 16)} end\n"
    "  if ohi == nhi and olo == nlo and string.byte(old, 4) ~= 2 then\n"
    "    return {0, string.sub(old, 9, 16)}\n"
    "  end\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "return {1}\n";

const std::string_view kLeaseAcquire =
    "-- tiercache lease acquire v1\n"
    "local won = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])\n"
    "return {won and 1 or 0, redis.call('GET', KEYS[1])}\n";

const std::string_view kLeaseRelease =
    "-- tiercache lease release v1\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

const std::string_view kLeaseExtend =
    "-- tiercache lease extend v1\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
    "return 0\n";

#undef TIERCACHE_LUA_PRELUDE

}  // namespace tiercache::scripts
