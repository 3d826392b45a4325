#include "core/scripts.h"

namespace tiercache::scripts {

// Group generations (l2_store.h): a canonical decimal integer in [1, 2^53),
// so Lua's doubles hold it exactly. Anything else stored there (foreign
// bytes, a number too large) counts as no generation.
//   group_now(k) -> the generation, or nil
//   group_ensure(k) -> the generation; a group without a valid one starts at
//     the server's clock in microseconds, above every generation it had
//     before (a group moves far less often than once a microsecond), so a
//     lost key can never make an old member current again
#define TIERCACHE_LUA_GROUP                                                          \
  "local function group_now(k)\n"                                                    \
  "  local v = redis.call('GET', k)\n"                                               \
  "  if not v or #v > 16 or not string.match(v, '^[1-9][0-9]*$') then return nil end\n" \
  "  local n = tonumber(v)\n"                                                        \
  "  if n >= 9007199254740992 then return nil end\n"                                 \
  "  return n\n"                                                                     \
  "end\n"                                                                            \
  "local function group_ensure(k)\n"                                                 \
  "  local n = group_now(k)\n"                                                       \
  "  if n then return n end\n"                                                       \
  "  local t = redis.call('TIME')\n"                                                 \
  "  n = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"                                \
  "  redis.call('SET', k, string.format('%.0f', n))\n"                               \
  "  return n\n"                                                                     \
  "end\n"                                                                            \
  /* a canonical decimal in [1, 2^64) as two 32-bit halves, else nil */              \
  "local function decimal(v)\n"                                                      \
  "  if type(v) ~= 'string' or #v > 20 or not string.match(v, '^[1-9][0-9]*$') then return nil end\n" \
  "  local hi, lo = 0, 0\n"                                                          \
  "  for i = 1, #v do\n"                                                             \
  "    local x = lo * 10 + string.byte(v, i) - 48\n"                                 \
  "    lo = x % 4294967296\n"                                                        \
  "    hi = hi * 10 + math.floor(x / 4294967296)\n"                                  \
  "    if hi >= 4294967296 then return nil end\n"                                    \
  "  end\n"                                                                          \
  "  return hi, lo\n"                                                                \
  "end\n"                                                                            \
  /* group_floor(k) -> hi, lo of the group's version floor (0, 0: none), and */     \
  /* true when the key holds anything the scripts never write (unknown floor) */    \
  "local function group_floor(k)\n"                                                  \
  "  local v = redis.pcall('GET', k)\n"                                              \
  "  if not v then return 0, 0, false end\n"                                         \
  "  local hi, lo = decimal(v)\n"                                                    \
  "  if not hi then return 0, 0, true end\n"                                         \
  "  return hi, lo, false\n"                                                         \
  "end\n"

// Shared prelude:
//   version(e) -> hi, lo, kind of a well-formed envelope (format 1 or 2), else nil
//   group_gen(e) -> the group generation of a format-2 envelope, else nil
//   newer(ahi, alo, bhi, blo) -> a > b
//   now_ms() -> the server's clock, Unix ms
#define TIERCACHE_LUA_PRELUDE                                                        \
  "local function version(e)\n"                                                      \
  "  if not e or #e < 44 or string.sub(e, 1, 2) ~= 'TC' then return nil end\n"      \
  "  local f, kind, _, r1, r2, r3 = string.byte(e, 3, 8)\n"                          \
  "  if (f ~= 1 and f ~= 2) or kind > 2 or r1 ~= 0 or r2 ~= 0 or r3 ~= 0 then return nil end\n" \
  "  local n1, n2, n3, n4 = string.byte(e, 37, 40)\n"                                \
  "  local h = f == 2 and 52 or 44\n"                                                \
  "  if #e ~= h + ((n1 * 256 + n2) * 256 + n3) * 256 + n4 then return nil end\n"     \
  "  local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(e, 9, 16)\n"                 \
  "  return ((b1 * 256 + b2) * 256 + b3) * 256 + b4,\n"                              \
  "         ((b5 * 256 + b6) * 256 + b7) * 256 + b8, kind\n"                         \
  "end\n"                                                                            \
  /* the group generation of a well-formed format-2 envelope, else nil */            \
  "local function group_gen(e)\n"                                                    \
  "  if string.byte(e, 3) ~= 2 then return nil end\n"                                \
  "  local g = 0\n"                                                                  \
  "  for i = 41, 48 do g = g * 256 + string.byte(e, i) end\n"                        \
  "  return g\n"                                                                     \
  "end\n"                                                                            \
  "local function newer(ahi, alo, bhi, blo)\n"                                       \
  "  return ahi > bhi or (ahi == bhi and alo > blo)\n"                               \
  "end\n"                                                                            \
  "local function now_ms()\n"                                                        \
  "  local t = redis.call('TIME')\n"                                                 \
  "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"             \
  "end\n"                                                                            \
  "local function pack(hi, lo)\n"                                                    \
  "  local b = {}\n"                                                                 \
  "  for i = 3, 0, -1 do b[#b + 1] = string.char(math.floor(hi / 256 ^ i) % 256) end\n" \
  "  for i = 3, 0, -1 do b[#b + 1] = string.char(math.floor(lo / 256 ^ i) % 256) end\n" \
  "  return table.concat(b)\n"                                                       \
  "end\n"                                                                            \
  /* a fence value: <epoch>|<8-byte big-endian version floor>, or a bare epoch */    \
  "local function fence_parts(f)\n"                                                  \
  "  if #f >= 9 and string.sub(f, -9, -9) == '|' then\n"                             \
  "    local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(f, -8, -1)\n"              \
  "    return string.sub(f, 1, -10), ((b1 * 256 + b2) * 256 + b3) * 256 + b4,\n"     \
  "           ((b5 * 256 + b6) * 256 + b7) * 256 + b8\n"                            \
  "  end\n"                                                                          \
  "  return f, 0, 0\n"                                                               \
  "end\n"                                                                            \
  /* CRC-32C (reflected 0x82F63B78) as 4 big-endian bytes, bit by bit: only */       \
  /* for the payload-less envelopes (tombstone, negative) re-versioned here */            \
  "local function crc32c(s)\n"                                                       \
  "  local crc = -1\n"                                                               \
  "  for i = 1, #s do\n"                                                             \
  "    crc = bit.bxor(crc, string.byte(s, i))\n"                                     \
  "    for _ = 1, 8 do\n"                                                            \
  "      crc = bit.bxor(bit.rshift(crc, 1), bit.band(0x82F63B78, -bit.band(crc, 1)))\n" \
  "    end\n"                                                                        \
  "  end\n"                                                                          \
  "  crc = bit.bnot(crc)\n"                                                          \
  "  return string.char(bit.band(bit.rshift(crc, 24), 255), bit.band(bit.rshift(crc, 16), 255),\n" \
  "                     bit.band(bit.rshift(crc, 8), 255), bit.band(crc, 255))\n"    \
  "end\n"                                                                            \
  "local function with_version(e, hi, lo)\n"                                         \
  "  local body = string.sub(e, 1, 8) .. pack(hi, lo) .. string.sub(e, 17, #e - 4)\n" \
  "  return body .. crc32c(body)\n"                                                  \
  "end\n"

// KEYS: value, fence, lease[, group, group floor]. ARGV: envelope, physical
// ttl ms, 'f' | 'w', snapshot fence | new epoch, snapshot server ms, max age
// ms | fence ttl ms, lease token ('' for none). With a group key the
// envelope is format 2 and is stored only while the group is at its
// generation and the envelope's version is at or above the group's floor.
const std::string_view kFill =
    "-- tiercache fill v5\n" TIERCACHE_LUA_PRELUDE TIERCACHE_LUA_GROUP
    "local nhi, nlo, nkind = version(ARGV[1])\n"
    "if not nhi or nkind == 2 then\n"
    "  return redis.error_reply('ERR tiercache fill: not a value or negative envelope')\n"
    "end\n"
    "local function release()\n"
    "  if KEYS[3] and ARGV[7] and ARGV[7] ~= '' and redis.call('GET', KEYS[3]) == ARGV[7] then\n"
    "    redis.call('DEL', KEYS[3])\n"
    "  end\n"
    "end\n"
    "local env = ARGV[1]\n"
    "local gen = group_gen(env)\n"
    "if (gen ~= nil) ~= (KEYS[4] ~= nil) then\n"
    "  release()\n"
    "  return redis.error_reply('ERR tiercache fill: a group member needs a format-2 envelope and its group key')\n"
    "end\n"
    "if KEYS[4] and group_now(KEYS[4]) ~= gen then\n"
    "  -- the group moved on since the fill's snapshot (or the write's read)\n"
    "  release()\n"
    "  return {0, 2, ''}\n"
    "end\n"
    "local write = ARGV[3] == 'w'\n"
    "local epoch, fhi, flo = fence_parts(redis.call('GET', KEYS[2]) or '')\n"
    "if not write then\n"
    "  if now_ms() - tonumber(ARGV[5]) > tonumber(ARGV[6]) then\n"
    "    release()\n"
    "    return {0, 3, ''}\n"
    "  end\n"
    "  local sepoch, shi, slo = fence_parts(ARGV[4])\n"
    "  -- an unversioned result cannot be ordered against versions: a floor\n"
    "  -- raised since the snapshot (an invalidation that dropped nothing here)\n"
    "  -- refuses it as a new epoch would\n"
    "  if epoch ~= sepoch or (nhi == 0 and nlo == 0 and (fhi ~= shi or flo ~= slo)) then\n"
    "    release()\n"
    "    return {0, 2, ''}\n"
    "  end\n"
    "end\n"
    "local unversioned = nhi == 0 and nlo == 0\n"
    "if not unversioned and newer(fhi, flo, nhi, nlo) then\n"
    "  release()\n"
    "  return {0, 1, pack(fhi, flo)}\n"
    "end\n"
    "if KEYS[5] then\n"
    "  -- the group's floor refuses as the key's does, and an unversioned\n"
    "  -- member too (it cannot be ordered against it); an unknown floor\n"
    "  -- (foreign bytes) refuses every member\n"
    "  local ghi, glo, unknown = group_floor(KEYS[5])\n"
    "  if unknown then\n"
    "    release()\n"
    "    return {0, 1, pack(4294967295, 4294967295)}\n"
    "  end\n"
    "  if (ghi ~= 0 or glo ~= 0) and (unversioned or newer(ghi, glo, nhi, nlo)) then\n"
    "    release()\n"
    "    return {0, 1, pack(ghi, glo)}\n"
    "  end\n"
    "end\n"
    "local old = redis.call('GET', KEYS[1])\n"
    "local ohi, olo, okind = version(old)\n"
    "local inherit = unversioned and nkind == 1 and #env == (gen and 52 or 44)\n"
    "if ohi and newer(ohi, olo, nhi, nlo) then\n"
    "  if not inherit or okind == 0 then\n"
    "    release()\n"
    "    return {0, 1, string.sub(old, 9, 16)}\n"
    "  end\n"
    "else\n"
    "  ohi, olo = 0, 0\n"
    "end\n"
    "if inherit then\n"
    "  -- an unversioned not-found read after every invalidation it could miss\n"
    "  -- (the fence held): it takes the version of the tombstone or negative\n"
    "  -- entry it replaces, or the floor, so versions never go down\n"
    "  local hi, lo = ohi, olo\n"
    "  if newer(fhi, flo, hi, lo) then hi, lo = fhi, flo end\n"
    "  if hi ~= 0 or lo ~= 0 then\n"
    "    env = with_version(env, hi, lo)\n"
    "    nhi, nlo = hi, lo\n"
    "  end\n"
    "end\n"
    "redis.call('SET', KEYS[1], env, 'PX', ARGV[2])\n"
    "if write then\n"
    "  if newer(nhi, nlo, fhi, flo) then fhi, flo = nhi, nlo end\n"
    "  redis.call('SET', KEYS[2], ARGV[4] .. '|' .. pack(fhi, flo), 'PX', ARGV[6])\n"
    "end\n"
    "release()\n"
    "return {1, pack(nhi, nlo)}\n";

// invalidate(key, fence key, tombstone, tombstone ttl ms, new epoch, fence
// ttl ms) -> {1} | {0, 1, <8-byte version>} | nil (not a tombstone)
#define TIERCACHE_LUA_INVALIDATE                                                     \
  "local function invalidate(key, fkey, tomb, tomb_ttl, new_epoch, fence_ttl)\n"     \
  "  local nhi, nlo, nkind = version(tomb)\n"                                        \
  "  if not nhi or nkind ~= 2 then return nil end\n"                                 \
  "  local epoch, fhi, flo = fence_parts(redis.call('GET', fkey) or '')\n"           \
  "  local old = redis.call('GET', key)\n"                                           \
  "  local ohi, olo = version(old)\n"                                                \
  "  if nhi == 0 and nlo == 0 then\n"                                                \
  /* unversioned: always applies; over a versioned entry the tombstone keeps */      \
  /* its version (the new epoch, not a version, refuses older loads) */              \
  "    if ohi and (ohi ~= 0 or olo ~= 0) then tomb = with_version(tomb, ohi, olo) end\n" \
  "  else\n"                                                                         \
  "    if not newer(nhi, nlo, fhi, flo) then\n"                                      \
  "      return {0, 1, pack(fhi, flo)}\n" /* older or redelivered: no write */       \
  "    end\n"                                                                        \
  "    if ohi and not newer(nhi, nlo, ohi, olo) then\n"                              \
  /* the entry is at this version or newer: nothing to drop, but the floor */        \
  /* rises, so a load of an older version in flight is refused even if that */       \
  /* entry goes (eviction, expiry); redelivered: no write */                         \
  "      if newer(nhi, nlo, fhi, flo) then\n"                                        \
  "        redis.call('SET', fkey, epoch .. '|' .. pack(nhi, nlo), 'PX', fence_ttl)\n" \
  "      end\n"                                                                      \
  "      return {0, 1, string.sub(old, 9, 16)}\n"                                    \
  "    end\n"                                                                        \
  "    fhi, flo = nhi, nlo\n"                                                        \
  "  end\n"                                                                          \
  "  redis.call('SET', key, tomb, 'PX', tomb_ttl)\n"                                 \
  "  redis.call('SET', fkey, new_epoch .. '|' .. pack(fhi, flo), 'PX', fence_ttl)\n" \
  "  return {1}\n"                                                                   \
  "end\n"

// KEYS: value, fence. ARGV: tombstone, tombstone ttl ms, new epoch, fence ttl ms.
const std::string_view kInvalidate =
    "-- tiercache invalidate v3\n" TIERCACHE_LUA_PRELUDE TIERCACHE_LUA_INVALIDATE
    "local r = invalidate(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])\n"
    "if not r then\n"
    "  return redis.error_reply('ERR tiercache invalidate: not a tombstone envelope')\n"
    "end\n"
    "return r\n";

// KEYS: value 1, fence 1, ..., value n, fence n, then per group: its
// generation key, its recent-events key and its floor key. ARGV: fence ttl
// ms, n, then per key: tombstone, tombstone ttl ms, new epoch; then per
// group: the id of the event moving it ('' for none) and the version its
// floor rises to (decimal, '0' for none). In order, so a key named twice
// sees its first invalidation. A group moves to its next generation (INCR):
// every member filled under an earlier one is invalidated at once. An event
// id already recorded among the group's recent 256 (for 10 minutes) moves
// nothing: the pods' followers and the service's consumer all apply each
// event, and it moves the group once. The floor only rises (max; a floor of
// foreign bytes is replaced), and a rise always moves the group, recent
// event id or not: so every member stored under the current generation was
// checked against the current floor.
const std::string_view kInvalidateMany =
    "-- tiercache invalidate many v4\n" TIERCACHE_LUA_PRELUDE TIERCACHE_LUA_GROUP TIERCACHE_LUA_INVALIDATE
    "local out = {}\n"
    "local n = tonumber(ARGV[2])\n"
    "for i = 1, n do\n"
    "  local a = 3 + (i - 1) * 3\n"
    "  out[i] = invalidate(KEYS[2 * i - 1], KEYS[2 * i], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[1]) or {-1}\n"
    "end\n"
    "for j = 1, (#KEYS - 2 * n) / 3 do\n"
    "  local k = 2 * n + 3 * (j - 1)\n"
    "  local g, recent, floor = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]\n"
    "  local id, v = ARGV[1 + 3 * n + 2 * j], ARGV[2 + 3 * n + 2 * j]\n"
    "  local gen = group_ensure(g)\n"
    "  local raised = false\n"
    "  local vhi, vlo = decimal(v)\n"
    "  if vhi then\n"
    "    local fhi, flo, unknown = group_floor(floor)\n"
    "    if unknown or newer(vhi, vlo, fhi, flo) then\n"
    "      redis.call('SET', floor, v)\n"
    "      raised = true\n"
    "    end\n"
    "  end\n"
    "  local seen = id ~= '' and redis.call('ZSCORE', recent, id)\n"
    "  if seen and not raised then\n"
    "    out[n + j] = {0, gen}\n"
    "  else\n"
    "    if id ~= '' and not seen then\n"
    "      redis.call('ZADD', recent, now_ms(), id)\n"
    "      redis.call('ZREMRANGEBYRANK', recent, 0, -257)\n"
    "      redis.call('PEXPIRE', recent, 600000)\n"
    "    end\n"
    "    out[n + j] = {1, redis.call('INCR', g)}\n"
    "  end\n"
    "end\n"
    "return out\n";

// KEYS: fence keys[, group key]. ARGV: ['g' with a group key]. Returns the
// server's ms, then each key's value (the group's generation, given one if
// it had none, last).
const std::string_view kSnapshot =
    "-- tiercache snapshot v3\n" TIERCACHE_LUA_GROUP
    "local gen = ARGV[1] == 'g' and group_ensure(KEYS[#KEYS])\n"
    "local t = redis.call('TIME')\n"
    "local out = {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}\n"
    "for i = 1, #KEYS do out[i + 1] = redis.call('GET', KEYS[i]) end\n"
    "if gen then out[#KEYS + 1] = gen end\n"
    "return out\n";

// KEYS: value, lease, fence[, group]. ARGV: token, lease ttl ms. Returns
// {won, value, fence, server ms[, group generation (given one if none)]}.
const std::string_view kLeaseAcquire =
    "-- tiercache lease acquire v4\n" TIERCACHE_LUA_GROUP
    "local won = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])\n"
    "local t = redis.call('TIME')\n"
    "local out = {won and 1 or 0, redis.call('GET', KEYS[1]), redis.call('GET', KEYS[3]),\n"
    "             tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}\n"
    "if KEYS[4] then out[5] = group_ensure(KEYS[4]) end\n"
    "return out\n";

const std::string_view kLeaseRelease =
    "-- tiercache lease release v1\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

const std::string_view kLeaseExtend =
    "-- tiercache lease extend v1\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
    "return 0\n";

const std::string_view kRemoveCorrupt =
    "-- tiercache remove corrupt v1\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

#undef TIERCACHE_LUA_GROUP
#undef TIERCACHE_LUA_PRELUDE
#undef TIERCACHE_LUA_INVALIDATE

}  // namespace tiercache::scripts
