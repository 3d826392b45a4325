// The Lua scripts tiercache runs in Redis. Each touches keys of one hash slot
// only (a value key, its lease key and its fence key share the slot), so each
// runs on one node of a cluster, atomically.
//
// Versions are read from the envelope (docs/envelope.md): bytes 9..16
// (1-based), big-endian, compared as two 32-bit halves because Lua numbers
// are doubles. A stored value that fails any structural check of the C++
// decoder (magic, format, kind, reserved bytes, length; all but the CRC,
// which is too costly in Lua) is not trusted and may be overwritten; one that
// passes them but fails the CRC is removed by kRemoveCorrupt when the cache
// meets it (l2_store.h).
//
// The fence (l2_store.h, docs/consistency.md): the fence key holds a random
// epoch replaced by each invalidation and write-through; a fill carries the
// epoch and the server time (TIME, ms) its load saw before reading the source.
#ifndef TIERCACHE_CORE_SCRIPTS_H_
#define TIERCACHE_CORE_SCRIPTS_H_

#include <string_view>

namespace tiercache::scripts {

// Fenced fill (or write-through) of a value or negative entry.
//   KEYS[1]  value key
//   KEYS[2]  fence key
//   KEYS[3]  (optional) lease key, released if it still holds ARGV[7]
//   KEYS[4]  (optional) group key: the envelope is then format 2, and it is
//            stored only if the group is still at the envelope's generation
//            (else reason 2); KEYS[3], KEYS[5] and ARGV[7] ('' for none)
//            come with it
//   KEYS[5]  (with KEYS[4]) the group's floor key: a canonical decimal; an
//            envelope of a lower version, or unversioned, is refused with
//            reason 1 and the floor, as by the key's floor. Foreign bytes
//            there refuse every member (reason 1, version 2^64 - 1) until a
//            versioned group invalidation replaces them.
//   ARGV[1]  envelope (format 1, or 2 with a group key)
//   ARGV[2]  physical TTL, ms
//   ARGV[3]  'f' (fill: check the snapshot) or 'w' (write-through: install
//            ARGV[4] as the new epoch when stored)
//   ARGV[4]  fill: the snapshot's epoch ('' = none); write-through: new epoch
//   ARGV[5]  fill: the snapshot's server time, ms
//   ARGV[6]  fill: max age, ms; write-through: fence TTL, ms
//   ARGV[7]  (optional) lease token
// Returns {1} when stored, or {0, reason, <8 bytes: stored version>} with
// reason 1 (a higher version is stored, or the key's or group's floor is
// higher), 2 (the epoch or the group moved), 3 (too old).
extern const std::string_view kFill;

// Invalidation: a tombstone, and a new fence epoch when it applies.
//   KEYS[1]  value key, KEYS[2] fence key
//   ARGV[1]  tombstone envelope of version v (0: unversioned)
//   ARGV[2]  tombstone TTL, ms
//   ARGV[3]  new epoch
//   ARGV[4]  fence TTL, ms
// Returns {1} when applied; {0, 1, <version>} when nothing was dropped: the
// key's version floor is above v (an older event), or the stored entry is at
// v or newer (then the floor rises to v if it was lower). The fence value is
// "<epoch>|<8-byte big-endian floor>".
extern const std::string_view kInvalidate;

// kInvalidate for n keys of one slot, applied in order, then group moves.
//   KEYS     value key 1, fence key 1, ..., value key n, fence key n, then
//            per group: generation key, recent-events key, floor key
//   ARGV[1]  fence TTL, ms; ARGV[2] n; then per key: tombstone, tombstone
//            TTL ms, new epoch; then per group: the moving event's id ('' for
//            none; an id among the group's recent ones moves nothing) and
//            the group's version (canonical decimal; '0': none), which
//            raises its floor if higher (or if the floor key holds foreign
//            bytes; no TTL): a raise moves the group even for a recent id
// Returns one kInvalidate reply per key ({-1} for a tombstone argument that
// is not a tombstone envelope), then per group {1, new generation} or {0,
// current generation} (the event had moved it already, and the floor did
// not rise).
extern const std::string_view kInvalidateMany;

// Fence snapshots of keys of one slot.
//   KEYS     fence keys[, then a group key]
//   ARGV[1]  'g' with a group key (then its generation ends the reply, given
//            one if it had none)
// Returns {server time ms, epoch or false, ...[, group generation]}.
extern const std::string_view kSnapshot;

// Takes a lease if free, reads the value and snapshots the fence, atomically.
//   KEYS[1] value key, KEYS[2] lease key, KEYS[3] fence key[, KEYS[4] group key]
//   ARGV[1] token, ARGV[2] lease TTL ms.
// Returns {1 if taken else 0, value or false, epoch or false, server time
// ms[, group generation]}.
extern const std::string_view kLeaseAcquire;

// Releases a lease if it still holds the caller's token.
//   KEYS[1] lease key, ARGV[1] token. Returns 1 if released, else 0.
extern const std::string_view kLeaseRelease;

// Extends a lease if it still holds the caller's token.
//   KEYS[1] lease key, ARGV[1] token, ARGV[2] new TTL ms. Returns 1 or 0.
extern const std::string_view kLeaseExtend;

// Deletes a key if it holds exactly ARGV[1]. KEYS[1] key. Returns 1 or 0.
extern const std::string_view kRemoveCorrupt;

}  // namespace tiercache::scripts

#endif  // TIERCACHE_CORE_SCRIPTS_H_
