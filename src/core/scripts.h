// The Lua scripts tiercache runs in Redis. Each touches keys of one hash slot
// only (a value key and its lease key share the slot), so each runs on one
// node of a cluster, atomically.
//
// Versions are read from the envelope (docs/envelope.md): bytes 9..16
// (1-based), big-endian, compared as two 32-bit halves because Lua numbers
// are doubles. A stored value that is not a format-1 envelope is not trusted
// and may be overwritten.
#ifndef TIERCACHE_CORE_SCRIPTS_H_
#define TIERCACHE_CORE_SCRIPTS_H_

#include <string_view>

namespace tiercache::scripts {

// Version-fenced fill of a value or negative entry.
//   KEYS[1]  value key
//   KEYS[2]  (optional) lease key, released if it still holds ARGV[3]
//   ARGV[1]  envelope (format 1)
//   ARGV[2]  physical TTL, milliseconds
//   ARGV[3]  (optional) lease token
// Returns {1} when stored, or {0, <8 bytes: the stored version>} when the
// stored entry (value, negative or tombstone) has a higher version.
extern const std::string_view kFencedFill;

// Tombstone at version v (invalidation).
//   KEYS[1]  value key
//   ARGV[1]  tombstone envelope of version v
//   ARGV[2]  physical TTL, milliseconds
// Returns {1} when written; {0, <stored version>} when the stored entry is
// newer, or is a value/negative entry of the same version (already fresh).
extern const std::string_view kTombstone;

// Takes a lease if it is free and reads the value, atomically.
//   KEYS[1] value key, KEYS[2] lease key, ARGV[1] token, ARGV[2] lease TTL ms.
// Returns {1 if taken else 0, value or nil}.
extern const std::string_view kLeaseAcquire;

// Releases a lease if it still holds the caller's token.
//   KEYS[1] lease key, ARGV[1] token. Returns 1 if released, else 0.
extern const std::string_view kLeaseRelease;

// Extends a lease if it still holds the caller's token.
//   KEYS[1] lease key, ARGV[1] token, ARGV[2] new TTL ms. Returns 1 or 0.
extern const std::string_view kLeaseExtend;

}  // namespace tiercache::scripts

#endif  // TIERCACHE_CORE_SCRIPTS_H_
