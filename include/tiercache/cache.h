// Cache: the tiered get-or-load cache. L1 (in-process) → L2 (Redis Cluster or
// any L2Store) → the loader (the service that owns the data).
//
// What it guarantees, and how:
//   * One load per key across all pods: in-process single-flight, then a
//     distributed lease in L2 (SET NX PX with a random token, in the key's
//     slot; released only by a token-checked script). Callers that lose the
//     lease serve the stale value if they have one, else poll L2 with
//     backoff until the value appears, the lease frees up (its holder died:
//     they take it), or their lease wait ends (then they load anyway or fail,
//     as configured).
//   * Probabilistic early refresh (XFetch): on a fresh hit, when
//     now − δ·β·ln(u) ≥ expiry (δ = the measured load time kept in the
//     envelope), the value is reloaded in the background under the lease
//     while callers keep getting the current value at hit latency.
//   * Fenced fills (docs/consistency.md): a load first snapshots its key's
//     fence in L2 (with the lease, in the same round trip), then reads the
//     source, then fills. Invalidate(key, v) writes a tombstone of version v
//     and replaces the key's fence epoch; the fill script refuses a value
//     whose snapshot is no longer current (an invalidation came after it),
//     whose load is older than max_load_age, or whose version is lower than
//     what is stored or than the key's version floor (the highest version
//     an invalidation named), or for a group member than the group's floor
//     (InvalidateGroup). So no value read before an invalidation is ever stored
//     after it, however long the load took and whether or not the tombstone
//     still exists; the epoch is a server-side token, so pods' clocks do not
//     matter. L1 follows L2's verdict: a loaded value enters this pod's L1
//     only when L2 stored it (or there is no L2). When a fill is refused
//     because the source moved on during the load, the cache reloads once.
//   * Never serves what is known to be invalidated: a stale copy (L1 or L2)
//     is dropped when L2 shows a tombstone or a newer version, also when the
//     copy would have been served as a fail-safe; a load the fence refused
//     never falls back to a stale copy.
//   * What this pod has seen, L2 cannot take back: once this pod has seen a
//     versioned invalidation of a key (its own Invalidate / InvalidateMany,
//     or its L1Follower's InvalidateLocal), no get on this pod returns an
//     older version of it from L1 or L2 for tombstone_ttl, even while L2 has
//     not applied the invalidation (its slot had no master, the consumer
//     lags) or lost it in a failover: an L2 value or negative entry below
//     that version (an unversioned one included) is a miss, in Get,
//     GetAsync, GetMany and the lease wait; the loader answers, its fill
//     passes over the older entry, and counter kL2BehindLocal counts it.
//     The same for a group member while this pod's move of its group failed
//     (poisoned), or when L2 shows the group below a generation this pod saw
//     it reach (L2 lost the move). Unversioned invalidations record nothing
//     (they drop this pod's L1 only). A pod that has not seen the event
//     reads L2 as it is until the consumer applies it
//     (docs/consistency.md §3c).
//   * Fail-safe: when the loader fails, or runs past the soft timeout, and a
//     stale value younger than max_stale exists, that value is returned
//     (CachedValue::stale() == true) and the load finishes in the background.
//     The hard timeout ends any wait with kDeadlineExceeded. Nothing older
//     than max_stale past its expiry is ever served.
//   * Redis trouble: a circuit breaker opens after repeated L2 failures; then
//     gets are served from L1 and the loader (single-flight still holds), the
//     breaker probes, and closes when L2 answers again.
//   * Negative caching: a loader's "not found" is cached (negative_ttl).
//
// Versions: a loader returns the source's version of the entity (e.g. the
// row's version column, starting at 1, bumped on every write), and for "not
// found" nothing: an unversioned "not found" takes the version of the
// tombstone it replaces. Version 0 (or none) means "unversioned": such keys
// are still fenced against slow loads by the fence epoch, and
// Invalidate(key) without a version drops every copy; only the protection
// against replicas that lag behind an invalidation needs versions. Do not
// mix versioned and unversioned values on one key.
//
// Consistency across pods: another pod's L1 copy may outlive an
// invalidation by up to that pod's L1 TTL (until Kafka fan-out reaches
// every L1); this pod's own Invalidate reaches its L1 at once.
//
// Keys are bytes, 1..L1Options::max_key_bytes long, and not shaped like the
// lease or fence key the cache keeps beside each key, in its hash slot
// (IsCompanionKeyName: no ":lease" / ":fence" suffix).
//
// Thread-safety: every method may be called from any thread at once.
// Loaders run on the cache's loader threads (never the caller's), with no
// cache lock held; they must be thread-safe and should bound their own time.
#ifndef TIERCACHE_CACHE_H_
#define TIERCACHE_CACHE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tiercache/clock.h"
#include "tiercache/codec.h"
#include "tiercache/envelope.h"
#include "tiercache/l1_cache.h"
#include "tiercache/l2_store.h"
#include "tiercache/metrics.h"
#include "tiercache/status.h"

namespace tiercache {

using std::chrono::milliseconds;

// What a loader returns for one key.
struct LoadResult {
  // The value's bytes (encoded by the cache's codec); nullopt: the key does
  // not exist in the source, cached as a negative entry.
  std::optional<std::string> payload;
  // The source's version of the entity (e.g. the row's version column).
  // nullopt or 0: unversioned (see "Versions" above).
  std::optional<uint64_t> version;
};

// Loads one key. Runs on a cache loader thread. May return any error; an
// exception is caught and becomes kInternal.
using Loader = std::function<Result<LoadResult>(std::string_view key)>;
// Loads many keys at once; returns one LoadResult per key, in order.
using BatchLoader = std::function<Result<std::vector<LoadResult>>(const std::vector<std::string>& keys)>;

enum class LeaseWaitTimeoutAction : uint8_t {
  kFail,  // return kDeadlineExceeded
  kLoad,  // load without the lease (more loads, but an answer)
};

struct LeaseOptions {
  // Lifetime of a lease. Bounds how long others wait when its holder dies;
  // should exceed the hard timeout. > 0.
  milliseconds ttl{3000};
  // How long a caller without a stale value waits for another pod's load.
  // Capped by the hard timeout. > 0.
  milliseconds max_wait{1000};
  LeaseWaitTimeoutAction on_wait_timeout = LeaseWaitTimeoutAction::kLoad;
  // Polling of L2 while waiting: starts at poll_min, doubles, capped at
  // poll_max. 0 < poll_min <= poll_max.
  milliseconds poll_min{5};
  milliseconds poll_max{50};
};

struct CacheOptions {
  // The L1. Its default_ttl is the L1 TTL (an L1 copy never outlives the L2
  // entry's logical expiry either); its clock is replaced by `clock`.
  bool use_l1 = true;
  L1Options l1;

  // The shared tier; null means no L2 (L1 + loader only).
  std::shared_ptr<L2Store> l2;
  // Bound on one L2 call (read, fill, lease). > 0.
  milliseconds l2_timeout{100};

  // Logical TTL of values and of negative entries in L2. > 0.
  milliseconds ttl{60000};
  milliseconds negative_ttl{5000};
  // Each TTL is scaled by a uniform factor in [1 - jitter, 1 + jitter]. [0, 0.5].
  double ttl_jitter = 0.1;
  // Lifetime of a tombstone: how long a versioned invalidation refuses older
  // versions read from a replica that lags behind it. The fence against
  // loads in flight does not depend on it (see max_load_age). Also how long
  // this pod refuses L2 entries older than an invalidation (or group move)
  // it has seen, in case L2 has not applied it or lost it (docs/
  // consistency.md §3c): L2 is trusted again after it. > 0.
  milliseconds tombstone_ttl{30000};

  // Oldest a load may be when it fills (from its fence snapshot, by L2's
  // clock): an older result is cached nowhere, and its callers still waiting
  // get kAborted. A key's fence lives kFenceLifetime (l2_store.h) after its
  // last change, and a lease is not kept alive past max_load_age, so a hung
  // load holds its key's lease for at most max_load_age + lease.ttl.
  // In [hard_timeout, kFenceLifetime / 2].
  milliseconds max_load_age{30000};

  // XFetch eagerness β (0: no early refresh). >= 0.
  double early_refresh_beta = 1.0;

  // Fail-safe: a stale value is served when the loader fails or passes
  // soft_timeout, if it expired at most max_stale ago. The L2 key lives
  // ttl + max_stale. The hard timeout bounds every get. 0 < soft <= hard.
  milliseconds soft_timeout{200};
  milliseconds hard_timeout{2000};
  milliseconds max_stale{300000};

  LeaseOptions lease;

  // L2 circuit breaker: opens after this many consecutive L2 failures, stays
  // open this long, then probes. >= 1, > 0.
  int breaker_failure_threshold = 5;
  milliseconds breaker_open_duration{1000};

  // Background threads for loads and refreshes, and their queue. >= 1.
  int loader_threads = 4;
  size_t loader_queue = 1024;
  // Bulkhead: a load running past the hard timeout stops counting against
  // loader_threads, and a replacement thread is started, so hung loads of
  // some keys do not stop the loads of others. At most this many
  // replacements at once (then hung loads do take the pool). A key has at
  // most one load running per process however many gets arrive. >= 0.
  int max_hung_loads = 16;
  // Threads serving get_async() calls that miss L1, and their queue. >= 1.
  int async_threads = 4;
  size_t async_queue = 4096;

  // Largest payload stored in L2. A loaded value above it is returned to the
  // callers but not shared through L2 (L1 applies its own byte bounds);
  // set() refuses it. In [1, kEnvelopeMaxPayload].
  size_t max_value_bytes = size_t{8} << 20;

  // Codec id written into envelopes and required when reading them.
  uint8_t codec_id = kCodecBytes;

  // Not owned; must outlive the cache. Null: Metrics::Noop() / Clock::Real().
  Metrics* metrics = nullptr;
  Clock* clock = nullptr;

  // Fencing on (the default). Off only to demonstrate the races it prevents:
  // fills are then plain SETs and the fence epoch is neither read nor checked.
  bool version_fencing = true;
};

// Per-call overrides; unset fields take the cache's options.
struct GetOptions {
  std::optional<milliseconds> ttl;
  std::optional<milliseconds> negative_ttl;
  std::optional<milliseconds> soft_timeout;
  std::optional<milliseconds> hard_timeout;
  std::optional<milliseconds> max_stale;
  std::optional<double> early_refresh_beta;
  // The group the key belongs to (e.g. "feed:{community:42}" for every page
  // of that feed); empty: none. InvalidateGroup(group) then invalidates the
  // key with every other member, in one round trip however many there are;
  // a versioned one also refuses members loaded below its version (or
  // unversioned) from then on.
  // A group name has a hash tag and every member is in its hash slot
  // (kInvalidArgument otherwise); a cache without L2 has no groups
  // (kFailedPrecondition). Pass the same group on every get of a key: an
  // entry stored in a group is a miss for a get without it, and vice versa.
  // GetMany: every key of the call is a member of this group.
  std::string group;

  bool operator==(const GetOptions&) const = default;
};

enum class ValueSource : uint8_t { kL1, kL2, kLoader };

// A value as the cache returns it. Shares the stored bytes: copying is cheap
// and the payload stays valid as long as a copy lives.
class CachedValue {
 public:
  CachedValue() = default;
  // False: the source said the key does not exist (a negative entry).
  bool found() const noexcept { return found_; }
  // The payload bytes; empty when !found().
  std::string_view payload() const noexcept { return payload_; }
  uint64_t version() const noexcept { return version_; }
  // Served past its logical expiry (fail-safe or stale-while-revalidate).
  bool stale() const noexcept { return stale_; }
  ValueSource source() const noexcept { return source_; }
  WallTime expires_at() const noexcept { return expires_at_; }
  std::chrono::microseconds load_duration() const noexcept { return load_duration_; }

 private:
  friend class Cache;
  std::shared_ptr<const std::string> envelope_;  // null for an L1 negative entry
  std::string_view payload_;
  bool found_ = false;
  bool stale_ = false;
  uint64_t version_ = 0;
  ValueSource source_ = ValueSource::kLoader;
  WallTime expires_at_{};
  std::chrono::microseconds load_duration_{0};
  uint64_t group_generation_ = 0;  // a group member: the generation it was filled under; 0: none
};

class Cache {
 public:
  // Validates `options` and builds the cache.
  // Errors: kInvalidArgument naming the first nonsensical option.
  static Result<std::unique_ptr<Cache>> Create(CacheOptions options);

  // Stops background work: queued loads are cancelled, running ones finish.
  ~Cache();
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  // L1 → L2 → loader. Blocks up to the hard timeout.
  // A key whose loads are at their cap in this process (two: one begun
  // before a local invalidation of the key, and a newer one) serves its stale
  // copy if it has one; otherwise the caller waits, up to the hard timeout,
  // for one of them to end and then joins or starts a load (fenced from
  // then on). For GetAsync that wait holds one of its async threads.
  // Errors: kInvalidArgument (bad key or option), kDeadlineExceeded (hard
  // timeout, a lease wait that ran out with on_wait_timeout == kFail, or the
  // key's loads at their cap until the hard timeout), kResourceExhausted
  // (loader queue full), kAborted (the source kept moving: a fill was refused
  // twice), or the loader's own error when nothing stale can be served.
  // `loader` is copied: a load may outlive the call (soft or hard timeout).
  Result<CachedValue> Get(std::string_view key, const Loader& loader, const GetOptions& options);
  // Get() with the cache's options: the same, without building a GetOptions
  // (about 130 bytes to zero and destroy) on every call of the hot path.
  // (Being overloaded, &Cache::Get needs a cast to pick one.)
  Result<CachedValue> Get(std::string_view key, const Loader& loader);

  // Get() without blocking the caller: an L1 hit completes at once; anything
  // else runs on the cache's async threads. The hard timeout counts from this
  // call, not from when a thread picks it up. Errors as Get(), plus
  // kResourceExhausted when the async queue is full and kCancelled when the
  // cache is destroyed first.
  std::future<Result<CachedValue>> GetAsync(std::string key, Loader loader, GetOptions options = {});

  // One result per key, in order (a repeated key gets the same result). L1
  // first, then one L2 round trip per slot group for the misses (a failed
  // shard fails only its own keys, which are then loaded but not cached),
  // then one `loader` call for what is still missing and not already being
  // loaded in this process (keys loading for a Get or another GetMany are
  // waited for, not loaded twice). Fills are pipelined. Soft timeout and
  // fail-safe per key as in Get. No distributed lease is taken for batches.
  // A key at its cap of loads (see Get) is loaded alone, by `loader` called
  // with that one key, once one of its loads ends (up to the hard timeout).
  // Errors per key as Get(); the call itself fails only for an empty key list.
  Result<std::vector<Result<CachedValue>>> GetMany(const std::vector<std::string>& keys,
                                                   const BatchLoader& loader,
                                                   const GetOptions& options = {});

  // Writes a value through both tiers, fenced by `version` (nullopt or 0:
  // unversioned), and fences loads in flight as Invalidate does.
  // Errors: kInvalidArgument (bad key, payload above max_value_bytes),
  // kAborted (a newer version or tombstone is stored, or `version` is below
  // the key's floor or, for a group member, the group's floor, or the group
  // moved during the call), kUnavailable /
  // kDeadlineExceeded (L2; the value is then in this pod's L1 only).
  Status Set(std::string_view key, std::string_view payload, std::optional<uint64_t> version,
             const GetOptions& options = {});

  // Invalidates `key` at `version` in both tiers: a tombstone of that version
  // and a new fence epoch (nullopt or 0: unversioned, drops every copy).
  // Idempotent: a version at or below the key's floor writes nothing; one
  // at or below the stored entry's drops nothing but raises the floor, so
  // loads of older versions stay refused (docs/consistency.md §4).
  // Once it returns OK, no get on any pod returns a version below `version`
  // from L2 or a loader, nor from this pod's L1 (other pods' L1: see above).
  // Whatever L2 did, no get on this pod returns a version below `version`
  // from L1 or L2 for tombstone_ttl (§3c).
  // Errors: kInvalidArgument, kUnavailable / kDeadlineExceeded (L2; this
  // pod's L1 is invalidated regardless).
  Status Invalidate(std::string_view key, std::optional<uint64_t> version = std::nullopt);

  // One invalidation of InvalidateMany.
  struct Invalidation {
    std::string key;  // or a group's name, with `group`
    // 0: unversioned. A group: the version its floor rises to (0: none), as
    // InvalidateGroup(group, version).
    uint64_t version = 0;
    bool group = false;  // `key` names a group: InvalidateGroup
    // A group's moving event (e.g. the Kafka event's id): the group moves
    // once per event id however many pods apply it (kIgnored after the
    // first, which keeps the group's members cached, unless `version`
    // raises its floor); empty: always moves.
    std::string event_id = {};
  };
  enum class InvalidationResult : uint8_t {
    kApplied,  // L2 took the tombstone (or there is no L2); a group moved
    kIgnored,  // L2 dropped nothing: it held this version or newer, or had seen
               // an invalidation at or above it (an old or redelivered event);
               // a group: its event_id had moved it already (its floor did
               // not rise)
  };

  // Invalidate for many keys at once, in order (a key named twice sees its
  // first invalidation): one atomic script per hash-slot group, the groups
  // pipelined, so one round trip per shard. This pod's L1 and loads as
  // Invalidate. Groups (Invalidation::group) as InvalidateGroup, moved once
  // per event_id. One result per invalidation. Errors per key:
  // kInvalidArgument (bad key or group name), kFailedPrecondition (a group
  // without L2), kUnavailable / kDeadlineExceeded (its shard; not applied in
  // L2, this pod's L1 is invalidated regardless).
  std::vector<Result<InvalidationResult>> InvalidateMany(const std::vector<Invalidation>& invalidations);

  // Invalidates every member of `group` (GetOptions::group) in both tiers at
  // once, in one round trip: the group moves to its next generation, and a
  // member filled under an earlier one is neither served (not even as
  // stale) nor stored (a load that began before the move is refused). This
  // pod's L1 stops serving members of earlier generations at once; other
  // pods' L1 when their L1Follower sees the event (which applies it too,
  // with the event's id: InvalidateMany). Without an event id a group
  // invalidation always moves the group. Returns the new generation.
  //
  // With a `version` > 0 (e.g. the event's version, when the members'
  // versions count in the same sequence, like a community's feed_version)
  // it also raises the group's version floor to it (floors only rise): a
  // member whose load returns a lower version, e.g. read after the move from
  // a replica that lags behind the change, or no version at all, is then
  // refused as a load below a key's floor is (Get reloads once, then
  // kAborted, and never serves a stale copy instead; Set: kAborted). So a
  // versioned group needs versioned members, not-found included
  // (docs/consistency.md §3b). nullopt or 0: the floor stays as it is.
  // Errors: kInvalidArgument (bad group name), kFailedPrecondition (no L2),
  // kUnavailable / kDeadlineExceeded (L2; this pod's L1 then serves no
  // member of the group until an InvalidateGroup of it begun after this one
  // succeeds, and this pod serves none from L2 either until then or for
  // tombstone_ttl, whichever ends first: §3c). After a successful move this
  // pod also serves no member that L2 shows at an earlier generation (L2
  // lost the move) for tombstone_ttl.
  Result<uint64_t> InvalidateGroup(std::string_view group, std::optional<uint64_t> version = std::nullopt);

  // This pod only (L2 is not written): drops `key` from L1, and with a
  // version > 0 leaves an L1 tombstone refusing L1 fills below it for
  // tombstone_ttl (so an L2 that has not applied the invalidation yet cannot
  // refill L1); for as long, this pod serves no L2 entry of `key` below
  // `version` (it loads instead: §3c). Version 0 drops L1 only. Loads of
  // `key` in flight here do not fill L1. For the per-pod follower of the
  // invalidation stream (kafka::L1Follower). Errors: kInvalidArgument.
  Status InvalidateLocal(std::string_view key, uint64_t version);

  // Gap-awareness: when this pod cannot be sure it saw every invalidation,
  // FenceL1 stops reading and filling its L1 (gets go to L2) until TrustL1.
  // With `drop` (events may be lost for good, e.g. an offset reset) it also
  // empties L1, and fills in flight do not survive it; without, L1 is kept
  // for when the follower has caught up with the events it missed.
  void FenceL1(bool drop = true);
  void TrustL1();
  bool l1_trusted() const;

  // The L1 (null when use_l1 is false), for stats and tests. Do not Set
  // into it: a value the cache did not write there is at best a miss. Such a
  // value is a miss (never read out of bounds) unless its L1Fill::user_data
  // carries the cache's mark (bit 63), which only the cache's own fills set:
  // then its bytes are served as an envelope of that description, checked
  // for length only.
  L1Cache* l1() const;

 private:
  struct Impl;
  explicit Cache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// TypedCache<C>: the same cache over values of C::Value, encoded by codec C.
// Hits decode the payload (a copy for the bytes and string codecs).
template <Codec C>
class TypedCache {
 public:
  using Value = typename C::Value;
  struct Loaded {
    std::optional<Value> value;  // nullopt: not found
    std::optional<uint64_t> version;
  };
  using TypedLoader = std::function<Result<Loaded>(std::string_view key)>;
  struct Got {
    std::optional<Value> value;  // nullopt: not found (negative)
    uint64_t version = 0;
    bool stale = false;
    ValueSource source = ValueSource::kLoader;
  };

  static Result<std::unique_ptr<TypedCache>> Create(CacheOptions options) {
    options.codec_id = C::kId;
    Result<std::unique_ptr<Cache>> cache = Cache::Create(std::move(options));
    if (!cache.ok()) return cache.status();
    return std::unique_ptr<TypedCache>(new TypedCache(std::move(*cache)));
  }

  // As Cache::Get; also kDataLoss if a stored payload cannot be decoded.
  // `loader` is copied (a load may outlive the call).
  Result<Got> Get(std::string_view key, const TypedLoader& loader, const GetOptions& options = {}) {
    Result<CachedValue> v = cache_->Get(
        key,
        [loader](std::string_view k) -> Result<LoadResult> {
          Result<Loaded> loaded = loader(k);
          if (!loaded.ok()) return loaded.status();
          LoadResult out;
          out.version = loaded->version;
          if (loaded->value) {
            Result<std::string> bytes = C::Encode(*loaded->value);
            if (!bytes.ok()) return bytes.status();
            out.payload = std::move(*bytes);
          }
          return out;
        },
        options);
    if (!v.ok()) return v.status();
    Got got;
    got.version = v->version();
    got.stale = v->stale();
    got.source = v->source();
    if (v->found()) {
      Result<Value> decoded = C::Decode(v->payload());
      if (!decoded.ok()) return decoded.status();
      got.value = std::move(*decoded);
    }
    return got;
  }

  Status Set(std::string_view key, const Value& value, std::optional<uint64_t> version) {
    Result<std::string> bytes = C::Encode(value);
    if (!bytes.ok()) return bytes.status();
    return cache_->Set(key, *bytes, version);
  }

  Status Invalidate(std::string_view key, std::optional<uint64_t> version = std::nullopt) {
    return cache_->Invalidate(key, version);
  }

  Cache& untyped() { return *cache_; }

 private:
  explicit TypedCache(std::unique_ptr<Cache> cache) : cache_(std::move(cache)) {}
  std::unique_ptr<Cache> cache_;
};

}  // namespace tiercache

#endif  // TIERCACHE_CACHE_H_
