// L2Store: the shared tier as the tiered cache sees it.
//
// The production store is Redis (cluster or standalone) through tiercache's
// own client: MakeRedisL2Store(). The in-memory store has the same semantics
// inside one process; unit tests of the cache's logic use it, and it can back
// a cache that has no Redis at all.
//
// Per value key K the store keeps, all in K's hash slot:
//   K          the envelope (value, negative entry or tombstone; docs/envelope.md)
//   K's lease  LeaseKeyFor(K): the token of the pod loading K
//   K's fence  FenceKeyFor(K): the fence epoch, a random token replaced by
//              every invalidation and write-through of K, and K's version
//              floor, the highest version an invalidation or write-through
//              named ("<epoch>|<8-byte big-endian floor>"); it lives
//              `fence_ttl` after the last change.
// Per group G (a name with a hash tag; its members are keys of G's slot):
//   G's generation  GroupKeyFor(G): a decimal integer in [1, 2^53), no TTL.
//              Invalidating G moves it to the next number (INCR), which
//              invalidates every member at once, however many there are. A
//              member's envelope (format 2) carries the generation it was
//              filled under; it is current only while G is still at that
//              generation. A group without a valid generation (never seen,
//              its key lost, foreign bytes there) starts at the store's
//              clock in microseconds: above every generation it had before,
//              since a group moves far less than once a microsecond, so a
//              lost key never makes an old member current again.
//   G's recent events  RecentEventsKeyFor(G): the ids of the last 256 events
//              that moved G (10 minutes): an event moves G once, however
//              many pods apply it.
//   G's floor  GroupFloorKeyFor(G): G's version floor, the highest version a
//              group invalidation named (a canonical decimal in [1, 2^64),
//              no TTL; absent: none). A member's fill (or write) of a lower
//              version, or unversioned, is refused (kOlderVersion), as a
//              fill below the key's own floor is. The floor only rises, and
//              never without G moving in the same atomic step, so every
//              member stored under G's current generation is at or above
//              it (reads need not check it). Anything else stored there
//              (foreign bytes) refuses every member's fill until a
//              versioned group invalidation replaces it (and moves G).
//
// The fence (docs/consistency.md). A load first takes a FenceSnapshot of K
// (the fence, and the store's clock in ms), then reads the source, then
// fills. A fill is refused when:
//   * kInvalidated: K's epoch differs from the snapshot's (an invalidation or
//     write-through came after the snapshot, so the load may have read data
//     it superseded), or
//   * kTooOld: the store's clock says the snapshot is older than `max_age`,
//     or
//   * kOlderVersion: the stored envelope (of any kind), or K's floor, has a
//     higher version than the fill's (versioned fills only), or, for a
//     group member, the group's floor does (unversioned fills too).
// Because an epoch outlives its invalidation by fence_ttl >= max_age, a load
// that started before an invalidation can never fill after it, however long
// it ran and whether or not the tombstone still exists. The cache passes
// kFenceLifetime as fence_ttl, and every pod's max_load_age is at most half
// of it, so pods configured differently still fence each other.
//
// Other rules every implementation keeps:
//   * Version 0 means "unversioned". A tombstone of version v > 0 means "the
//     source is at v": fills of version >= v pass (their epoch permitting).
//     A versioned invalidation at v <= K's floor is older or redelivered:
//     it writes nothing. One at v over a stored entry of version >= v drops
//     nothing but raises the floor to v, which refuses versioned loads below
//     v and unversioned loads that snapshotted the lower floor, whatever
//     becomes of the entry (expiry, eviction, removal as corrupt). An unversioned invalidation always
//     applies: it tombstones at version 0, or over a versioned entry at that
//     entry's version (so it is idempotent; the new epoch refuses the loads
//     that began before it).
//   * An unversioned not-found (a negative entry of version 0: "no row, so no
//     version") that passes the epoch check over a versioned tombstone or
//     negative entry is stored at that entry's version (or the floor, if
//     higher): it was read after that entry was written, and versions never
//     go down. Over a versioned value it is refused (kOlderVersion).
//   * A stored value that is not a well-formed envelope (by every structural
//     check of DecodeEnvelope except the CRC) never blocks a write. A stored
//     entry that passes those checks but fails the CRC is removed by
//     RemoveCorrupt; the cache does so when such an entry refuses a fill.
//   * Leases: AcquireLease is SET NX PX of the lease key and, in the same
//     atomic step, a read of the value key and a fence snapshot; a fill
//     releases the lease it names if that still holds its token, whatever
//     the outcome; ReleaseLease deletes only the caller's token.
//   * Groups: GetInGroup reads members and G's generation in one round trip;
//     SnapshotInGroup and AcquireLeaseInGroup also take G's generation (and
//     give G one if it has none); a member's fill (FillRequest::group) is
//     refused (kInvalidated) unless G is still at the envelope's generation,
//     and (kOlderVersion) when G has a floor above its version or it is
//     unversioned. A group invalidation moves G unless its event id is
//     among G's recent ones; with a version v > 0 it also raises G's floor
//     to v if that is higher (or the floor is foreign bytes), and then G
//     moves even for a recent event id: so a redelivered event is harmless
//     (idempotent max), and the floor never rises without a move.
//   * Every call ends within `timeout` (kDeadlineExceeded) or fails with
//     kUnavailable when the store cannot be reached. Calls over many keys
//     return one result per key: a failed shard fails only its own keys.
//
// Thread-safety: implementations are safe to call from any thread at once.
#ifndef TIERCACHE_L2_STORE_H_
#define TIERCACHE_L2_STORE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tiercache/clock.h"
#include "tiercache/status.h"

namespace tiercache {

using std::chrono::milliseconds;

namespace redis {
class RedisClient;
}

// The lease key, and the fence key, of `key`: in the same hash slot.
std::string LeaseKeyFor(std::string_view key);
std::string FenceKeyFor(std::string_view key);
// The generation key of `group`: `group` + ":group" (its slot), and the key
// of its recent events: `group` + ":group:recent".
std::string GroupKeyFor(std::string_view group);
std::string RecentEventsKeyFor(std::string_view group);
// The key of its version floor: `group` + ":group:floor".
std::string GroupFloorKeyFor(std::string_view group);
// The largest generation (exclusive) a store keeps: Lua's exact integers.
inline constexpr uint64_t kMaxGroupGeneration = uint64_t{1} << 53;
// kOk if `group` can name a group: non-empty, with a hash tag (so its
// members can share its slot), not shaped like a companion key.
Status CheckGroupName(std::string_view group);
// True when `key` has the shape of a lease, fence or group key (ends with
// ":lease", ":fence", ":group", ":group:recent" or ":group:floor", or
// "{tag}:lease:" / "{tag}:fence:" follows its first tag): the cache refuses
// such keys (kInvalidArgument) so a user's key can never be another key's
// companion.
bool IsCompanionKeyName(std::string_view key);
// False only for keys IsCompanionKeyName() refuses for sure to be companion
// shaped: two byte tests that decide most keys (first byte not '{', last byte
// none of the suffixes' last letters), inline for the hit path.
inline bool MaybeCompanionKeyName(std::string_view key) {
  if (key.empty()) return false;
  const char last = key.back();
  return key[0] == '{' || last == 'e' || last == 'p' || last == 't' || last == 'r';
}

// How long the cache keeps a key's fence after its last change (fence_ttl).
// Fixed, not configurable, so that no pod's max_load_age (<= half of it, by
// validation) can outlive another pod's fence.
inline constexpr milliseconds kFenceLifetime{10 * 60 * 1000};

// A key's fence as a load saw it before reading the source.
struct FenceSnapshot {
  std::string epoch;      // the fence value then (epoch and floor); empty: none existed
  int64_t store_ms = 0;   // the store's clock then (Unix ms on Redis' TIME)
  // Taken in a group (SnapshotInGroup, AcquireLeaseInGroup): the group's
  // generation then; a member filled under it carries it.
  std::optional<uint64_t> group_generation;
};

// Members of one group and the group's generation, read in one round trip.
struct GroupRead {
  std::vector<std::optional<std::string>> values;  // per key, in order
  // nullopt: the group has no generation, so no member is current.
  std::optional<uint64_t> generation;
};

struct LeaseOutcome {
  bool won = false;                  // the lease was free and is now ours
  std::optional<std::string> value;  // the value key's bytes at that moment
  FenceSnapshot fence;               // taken in the same atomic step
};

enum class FillVerdict : uint8_t {
  kStored = 0,
  kOlderVersion = 1,  // the stored envelope, the key's floor or the group's floor is higher
  kInvalidated = 2,   // the fence epoch moved since the snapshot
  kTooOld = 3,        // the snapshot is older than max_age by the store's clock
};

struct FenceOutcome {
  FillVerdict verdict = FillVerdict::kStored;
  // kOlderVersion: the version that won. kStored (fills): the version
  // stored, which differs from the fill's for an unversioned not-found that
  // took a tombstone's version or the floor (0 when the store does not say).
  uint64_t stored_version = 0;
  bool stored() const { return verdict == FillVerdict::kStored; }
};

// One fenced fill.
struct FillRequest {
  std::string key;
  std::string envelope;  // a value or negative envelope
  milliseconds physical_ttl{1};
  // A fill checks `fence` (and max_age); a write-through (Cache::Set) does
  // not: it replaces the epoch with `new_epoch` when it stores.
  bool write_through = false;
  FenceSnapshot fence;
  std::string new_epoch;
  // Released (if it still holds lease_token) whatever the outcome; empty: none.
  std::string lease_key;
  std::string lease_token;
  // Non-empty: the key is a member of this group; `envelope` is format 2 and
  // is stored only while the group is at its generation (else kInvalidated)
  // and its version is at or above the group's floor (else kOlderVersion,
  // with the floor as stored_version; an unversioned member is refused by
  // any floor).
  std::string group;
};

// One invalidation.
struct InvalidateRequest {
  std::string key;
  std::string tombstone;  // a tombstone envelope (version 0: unversioned)
  milliseconds tombstone_ttl{1};
  std::string new_epoch;  // the fence epoch it installs when it applies
  // True: `key` names a group, which moves to its next generation (the
  // fields above are unused): kStored with the new generation as
  // stored_version, or kOlderVersion with the current one when `event_id`
  // already moved it (and group_floor raised nothing). Only InvalidateMany
  // takes group requests.
  bool group = false;
  std::string event_id = {};  // a group's moving event; empty: always moves
  // A group: raise its version floor to this (0: leave it). A rise moves
  // the group, also for an event id that moved it already.
  uint64_t group_floor = {};
};

class L2Store {
 public:
  virtual ~L2Store() = default;

  // The stored bytes of `key`, or nullopt when there are none.
  virtual Result<std::optional<std::string>> Get(std::string_view key, milliseconds timeout) = 0;

  // Get for many keys, one result per key in their order; one round trip per
  // slot group on a cluster, all sent together.
  virtual std::vector<Result<std::optional<std::string>>> GetMany(const std::vector<std::string>& keys,
                                                                  milliseconds timeout) = 0;

  // Fence snapshots of many keys (one round trip per slot group).
  virtual std::vector<Result<FenceSnapshot>> Snapshot(const std::vector<std::string>& keys,
                                                      milliseconds timeout) = 0;

  // See the class comment; `max_age` bounds the snapshot's age. Pipelined:
  // one result per request, in order.
  // Errors per request: also kInvalidArgument if the envelope is not a
  // value/negative envelope.
  virtual std::vector<Result<FenceOutcome>> Fill(const std::vector<FillRequest>& fills, milliseconds max_age,
                                                 milliseconds fence_ttl, milliseconds timeout) = 0;

  // Stores `envelope` without any fence (CacheOptions::version_fencing off:
  // only to demonstrate the race the fence prevents).
  virtual Status Put(std::string_view key, std::string_view envelope, milliseconds physical_ttl,
                     milliseconds timeout) = 0;

  // Applies an invalidation (class comment). kStored when it applied (the
  // tombstone is written and the epoch replaced); kOlderVersion when it
  // dropped nothing (older than the floor, or the stored entry is at its
  // version or newer; the floor may have risen).
  virtual Result<FenceOutcome> Invalidate(const InvalidateRequest& request, milliseconds fence_ttl,
                                          milliseconds timeout) = 0;

  // Invalidate for many requests: one atomic script per slot group, the
  // groups pipelined; requests for one key apply in order. One result per
  // request (a failed shard fails only its own requests). The default calls
  // Invalidate for each request in turn, each with the whole `timeout`.
  virtual std::vector<Result<FenceOutcome>> InvalidateMany(const std::vector<InvalidateRequest>& requests,
                                                           milliseconds fence_ttl, milliseconds timeout);

  // Deletes `key` if it still holds exactly `bytes` (a corrupt entry). True
  // when deleted.
  virtual Result<bool> RemoveCorrupt(std::string_view key, std::string_view bytes, milliseconds timeout) = 0;

  // Takes `key`'s lease if free, reads `key` and snapshots its fence.
  virtual Result<LeaseOutcome> AcquireLease(std::string_view key, std::string_view token, milliseconds ttl,
                                            milliseconds timeout) = 0;

  // Pushes the lease's expiry to `ttl` from now if it still holds `token`.
  // True when extended.
  virtual Result<bool> ExtendLease(std::string_view key, std::string_view token, milliseconds ttl,
                                   milliseconds timeout) = 0;

  // True when the lease held `token` and was released.
  virtual Result<bool> ReleaseLease(std::string_view key, std::string_view token, milliseconds timeout) = 0;

  // ---- Groups (class comment). Every key named must be in `group`'s hash
  // slot (one round trip). The defaults fail with kFailedPrecondition: a
  // store without groups.

  // The bytes of `keys` and the group's generation, read together.
  virtual Result<GroupRead> GetInGroup(const std::vector<std::string>& keys, std::string_view group,
                                       milliseconds timeout);

  // Snapshot of `keys`, each with the group's generation (set first if the
  // group has none).
  virtual Result<std::vector<FenceSnapshot>> SnapshotInGroup(const std::vector<std::string>& keys,
                                                             std::string_view group, milliseconds timeout);

  // AcquireLease, also taking the group's generation into the snapshot.
  virtual Result<LeaseOutcome> AcquireLeaseInGroup(std::string_view key, std::string_view group,
                                                   std::string_view token, milliseconds ttl, milliseconds timeout);

  // Which failure domain serves `key` (a Redis master; stable ids in
  // [0, 4096)), so health is tracked per shard. Cheap; no I/O.
  virtual int ShardOf(std::string_view key) const = 0;
};

// The L2Store over Redis (cluster or standalone): GET, MGET per slot group,
// and the Lua scripts of src/core/scripts.cc (EVALSHA, loaded on NOSCRIPT).
// REQUIRES: client non-null; shared, it may serve others.
std::shared_ptr<L2Store> MakeRedisL2Store(std::shared_ptr<redis::RedisClient> client);

// An L2Store inside this process. `clock` (null: Clock::Real()) drives TTLs
// and the fence's age; not owned, must outlive the store.
std::shared_ptr<L2Store> MakeInMemoryL2Store(Clock* clock = nullptr);

// Test hooks of the in-memory store. REQUIRES: `store` came from
// MakeInMemoryL2Store.
// Overwrites `key` with raw bytes (e.g. a corrupt payload).
void InMemoryL2StorePutRaw(L2Store* store, std::string_view key, std::string_view bytes);
// Makes every call on keys of shard `shard` (ShardOf: the key's first byte
// modulo 4) fail with kUnavailable while `down`.
void InMemoryL2StoreSetShardDown(L2Store* store, int shard, bool down);

}  // namespace tiercache

#endif  // TIERCACHE_L2_STORE_H_
