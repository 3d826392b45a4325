// L1Cache: the per-process cache that absorbs the hottest reads.
//
// A sharded, bounded, thread-safe map from a string key to an L1Entry: an
// immutable shared value (a hit copies a pointer, never the bytes), a logical
// expiry, a domain version, a kind (value / negative / tombstone) and the
// duration of the load that produced it (the δ of XFetch early refresh).
//
// Rules the cache enforces:
//   * Bounds: at most `max_entries` entries and `max_bytes` of charge (from the
//     weigher). Each of the N shards holds 1/N of both bounds, so one entry may
//     charge at most max_entry_charge() == min(max_bytes / N, 2^32 - 1).
//   * Expiry: an entry is fresh while now < expiry. Get() never returns an
//     expired entry. (A hit on an entry more than Clock::kCoarseLag from its
//     expiry reads only the clock's cheap CoarseNow(); closer ones, Now().)
//     A value or negative entry is kept for `max_stale` after its expiry so
//     that GetStale() can serve it (fail-safe); after that it is dead and
//     dropped. A tombstone is dead at its expiry.
//   * Version guard: a fill (Set / SetNegative) whose version is lower than the
//     version of the live entry present (value, negative, stale or tombstone) is
//     refused with kAborted and counted in refused_fills. An EQUAL version is
//     accepted and replaces the entry: this is how a value is refilled after it
//     expires, and how the reader that loaded the version a writer invalidated
//     with stores it. Invalidate(key, v) replaces any live entry of version <= v
//     with a tombstone; with v lower than the present version it is a no-op.
//   * Eviction: LRU, or W-TinyLFU (a 1% LRU window in front of a segmented LRU
//     main space; a window victim enters the main space only if a count-min
//     sketch says it is used more often than the main space's victim), so a
//     one-off scan does not flush the hot set. The sketch forgets old
//     popularity over a period it adapts to the workload, and at once when
//     the hit rate drops (src/l1/frequency_sketch.h). A shard keeps its
//     sketch (8 bytes per entry of max_entries) from the time it is first
//     half full, by entries or bytes: admission contests only start when
//     it is full, and until then hits pay no sketch update.
//   * Single-flight: GetOrLoad() runs one loader per key at a time in this
//     process; concurrent callers wait for its result (see single_flight.h).
//
// Thread-safety: every method may be called concurrently from any thread.
// Reads (Get, GetStale, a GetOrLoad hit) take no lock: they announce
// themselves in a per-thread slot of the shard and only read; the recency /
// frequency update a hit implies is buffered and applied by the next writer,
// or by the reader whose buffer fills if that needs no waiting (buffers are
// lossy under heavy read load, which only makes eviction order approximate;
// counters stay exact). A read that meets a dead entry, or a writer in the
// shard, takes the shard's mutex instead. Writes (Set, Invalidate, Erase, eviction)
// take the shard's mutex and wait for in-flight reads of that shard to leave,
// for a few hundred nanoseconds. No lock is held while a loader, a weigher or
// any other user code runs, and none across I/O.
// Blocking: only GetOrLoad() blocks (running the loader, or waiting for
// another thread's load until the caller's deadline); writes wait briefly for
// the shard as above.
#ifndef TIERCACHE_L1_CACHE_H_
#define TIERCACHE_L1_CACHE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "tiercache/clock.h"
#include "tiercache/status.h"

namespace tiercache {

// The cached bytes: immutable and shared, so a hit copies only the pointer.
using L1Value = std::shared_ptr<const std::string>;

enum class L1EntryKind : std::uint8_t {
  kValue,      // a value; L1Entry::value is non-null.
  kNegative,   // the key is known not to exist at this version.
  kTombstone,  // invalidated at this version; refuses older fills. Never read.
};

// What a lookup returns. A copy: holding it keeps the value alive but pins
// nothing in the cache.
struct L1Entry {
  L1EntryKind kind = L1EntryKind::kValue;
  L1Value value;                              // non-null iff kind == kValue
  std::uint64_t version = 0;                  // the domain version
  Clock::TimePoint expiry{};                  // fresh while now < expiry
  // δ: how long its load took. Kept to the nanosecond below 2^31 ns (about
  // 2.1 s), to the microsecond above, at most 2^31 - 1 us (about 36 min); a
  // negative one reads as 0.
  Clock::Duration load_duration{};
  std::uint64_t tag = 0;                      // L1Fill::tag of the fill that stored it
  std::uint64_t user_data = 0;                // L1Fill::user_data of the fill that stored it
  // GetStale() only: true when the entry was past its expiry at the lookup
  // (then !FreshAt(now)); saves the caller a second reading of the clock.
  bool stale = false;
  // The clock reading the lookup judged the entry by: Clock::CoarseNow() on
  // the fast path (never ahead of Now(), behind it by at most
  // Clock::kCoarseLag), else Now(). Lets a caller compare horizons of its
  // own with `expiry` without reading the clock again.
  Clock::TimePoint read_at{};

  bool negative() const noexcept { return kind == L1EntryKind::kNegative; }
  bool FreshAt(Clock::TimePoint now) const noexcept { return now < expiry; }
};

// Per-fill parameters of Set() / SetNegative().
struct L1Fill {
  std::uint64_t version = 0;
  // Time to live; zero means the cache default (default_ttl for a value,
  // negative_ttl for a negative entry). Must be >= 0 and <= kL1MaxTtl. The
  // options' ttl_jitter is applied to it.
  Clock::Duration ttl{0};
  // If set, the expiry is capped at this point (e.g. the L2 entry's expiry, so
  // an L1 copy never outlives its source).
  std::optional<Clock::TimePoint> not_after;
  // δ: how long the load that produced this value took.
  Clock::Duration load_duration{0};
  // Opaque to the L1, returned with the entry (the tiered cache stores the
  // group generation of a group member here; 0 otherwise).
  std::uint64_t tag = 0;
  // Opaque to the L1, returned with the entry. The tiered cache describes
  // the envelope it stores here (payload offset, logical expiry), so that a
  // hit need not read the value's bytes; a Set through Cache::l1() must
  // leave it 0.
  std::uint64_t user_data = 0;
};

// What a GetOrLoad() loader returns.
struct L1Loaded {
  L1Value value;                 // null means "does not exist": cached as negative
  std::uint64_t version = 0;
  Clock::Duration ttl{0};        // zero: the cache default for the kind
};

// Runs on the calling thread of GetOrLoad(), with no lock held. May throw:
// an exception becomes kInternal and is not cached.
using L1Loader = std::function<Result<L1Loaded>()>;

// Charge of one entry against max_bytes. Called outside any lock, once per
// fill; `value` is empty for negative entries and tombstones. Must not throw
// (an exception makes the fill fail with kInternal).
using L1Weigher = std::function<std::size_t(std::string_view key, std::string_view value)>;

// Fixed per-entry overhead the default weigher adds to key and value sizes
// (node, table slot, list links, bookkeeping; extra value stripes excluded).
inline constexpr std::size_t kL1EntryOverheadBytes = 128;
// Largest accepted TTL (per fill or in the options).
inline constexpr Clock::Duration kL1MaxTtl = std::chrono::hours(24 * 365);

enum class L1Policy : std::uint8_t {
  kLru,      // plain LRU per shard.
  kTinyLfu,  // W-TinyLFU: LRU window + frequency-gated segmented LRU.
};

struct L1Options {
  // Bound on the number of entries (tombstones and negatives included). > 0.
  std::size_t max_entries = 100'000;
  // Bound on the sum of charges. > 0.
  std::size_t max_bytes = std::size_t{256} << 20;
  // Number of shards: a power of two in [1, 1024]. Reduced (to a power of
  // two) when there are fewer max_entries or max_bytes than shards.
  std::size_t num_shards = 16;
  L1Policy policy = L1Policy::kTinyLfu;
  // TinyLFU only: share of each shard's entries given to the LRU window, in
  // (0, 0.5]. At least one entry.
  double window_fraction = 0.01;

  // TTL of a value when the fill gives none. In (0, kL1MaxTtl].
  Clock::Duration default_ttl = std::chrono::seconds(5);
  // TTL of a negative entry when the fill gives none. In (0, kL1MaxTtl].
  Clock::Duration negative_ttl = std::chrono::seconds(1);
  // TTL of a tombstone when Invalidate() gives none. It should outlive the
  // slowest load plus replica lag. In (0, kL1MaxTtl].
  Clock::Duration tombstone_ttl = std::chrono::seconds(10);
  // How long an expired value / negative entry is retained for GetStale().
  // Zero: dropped at expiry. In [0, kL1MaxTtl].
  Clock::Duration max_stale = std::chrono::seconds(60);
  // Each value / negative TTL is multiplied by a uniform factor in
  // [1 - ttl_jitter, 1 + ttl_jitter], so keys filled together do not expire
  // together. In [0, 0.5]. Tombstones are not jittered.
  double ttl_jitter = 0.0;

  // Reference-count stripes per value: 0 (automatic) or a power of two in
  // [1, 16]. A hit hands out a shared_ptr, i.e. bumps a reference count;
  // when threads on several cores read the same hot key, that count's cache
  // line bounces between the cores on every hit. With N > 1, threads on
  // different CPUs use different ones of N reference counts: the value's
  // own, and N - 1 extra control blocks (one allocation each, about 48
  // bytes). An entry gets the extra ones only once hits on it from two CPUs
  // that use different counts have been applied (by the read buffers'
  // drains, so after some dozens of hits): the entry's node is then
  // replaced by a copy with room for them (16 bytes each), while the
  // shard's readers wait (once per entry, like a fill). Entries read from
  // one CPU only get none and have no room for them. Once a TinyLFU shard's
  // frequency sketch runs (from half full on), only entries it estimates at
  // its maximum (hot ones) are striped. A shard stripes at most max(128,
  // its max_entries / 64) entries at once (the first read that way among
  // those; an entry that leaves makes room, none is unstriped while it
  // stays, so a hot set that moves gets stripes as the old one is evicted
  // or overwritten), so reads from several CPUs cost a large cache about 2
  // bytes per entry. An overwrite drops them until the new value is read
  // that way again.
  // The returned pointers point to the same bytes; only use_count()
  // differs. Not counted by the default weigher. 0 picks the number of CPUs
  // rounded up to a power of two, at most 4. bench_l1 reports both
  // (l1_hit_2t, default; l1_hit_2t_unstriped): on the 2-core development
  // machine they are within run-to-run noise; the contention stripes remove
  // grows with the number of cores reading one key. Set 1 for none at all.
  std::size_t value_stripes = 0;

  // Keys must be 1..max_key_bytes bytes long. In [1, 1 MiB].
  std::size_t max_key_bytes = 1024;
  // Entry charge; empty means key.size() + value.size() + kL1EntryOverheadBytes.
  L1Weigher weigher;
  // Time source; null means Clock::Real(). Not owned; must outlive the cache.
  Clock* clock = nullptr;
};

// Counters since creation (entries and bytes: current). Each shard is read
// under its own lock, so the snapshot is per-shard consistent, not global.
struct L1Stats {
  std::uint64_t hits = 0;           // fresh entries returned
  std::uint64_t misses = 0;         // lookups that returned nothing
  std::uint64_t stale_hits = 0;     // expired entries returned by GetStale()
  std::uint64_t evictions = 0;      // entries dropped (or not admitted) for room
  std::uint64_t expirations = 0;    // dead entries dropped (past expiry + retention)
  std::uint64_t refused_fills = 0;  // fills refused by the version guard
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;
};

class L1Cache final {
 public:
  // Validates `options` and builds the cache.
  // Errors: kInvalidArgument naming the first nonsensical option.
  static Result<std::unique_ptr<L1Cache>> Create(const L1Options& options);

  L1Cache(const L1Cache&) = delete;
  L1Cache& operator=(const L1Cache&) = delete;
  ~L1Cache();

  // The fresh entry (value or negative) for `key`, or nullopt (absent, expired,
  // or a tombstone). Counts a hit or a miss; a hit counts as a use for
  // eviction. Takes no lock unless a writer is in the shard at that moment.
  // Errors: kInvalidArgument (empty or oversized key).
  Result<std::optional<L1Entry>> Get(std::string_view key);

  // Like Get(), but also returns an expired value / negative entry whose
  // expiry passed at most `max_stale` ago (further capped by options.max_stale).
  // Use FreshAt() on the result to tell fresh from stale. Counts a hit, a stale
  // hit or a miss.
  // Errors: kInvalidArgument (bad key, max_stale < 0).
  Result<std::optional<L1Entry>> GetStale(std::string_view key, Clock::Duration max_stale);

  // GetStale() for a hot path, without the Result and optional around the
  // entry: kFresh or kStale with *out assigned (every field), or kMiss with
  // *out untouched. Counts as GetStale() does. A key GetStale() would refuse
  // (empty, oversized) or a negative max_stale is a kMiss, not counted.
  enum class Read : std::uint8_t { kMiss, kFresh, kStale };
  Read GetStaleInto(std::string_view key, Clock::Duration max_stale, L1Entry* out);

  // Stores `value` under `key`. Evicts as needed to stay within the bounds.
  // Errors (the cache is unchanged):
  //   kInvalidArgument  bad key, null value, ttl < 0 or > kL1MaxTtl.
  //   kResourceExhausted the entry's charge exceeds max_entry_charge(), or
  //                     no memory could be allocated for it (its node, or
  //                     the shard's table or policy records growing).
  //   kAborted          version guard: a live entry of a higher version is
  //                     present (counted in refused_fills).
  //   kInternal         the weigher threw.
  Status Set(std::string_view key, L1Value value, const L1Fill& fill);

  // Records that `key` does not exist at fill.version. Same rules and errors
  // as Set().
  Status SetNegative(std::string_view key, const L1Fill& fill);

  // Replaces the entry of `key` with a tombstone of `version` living
  // `tombstone_ttl` (zero: options.tombstone_ttl), which refuses fills of a
  // lower version until it expires. A no-op (returning OK) when a live entry
  // of a higher version is present.
  // Errors: kInvalidArgument (bad key, ttl < 0 or > kL1MaxTtl), kInternal
  // (the weigher threw), kResourceExhausted (the tombstone's charge exceeds
  // max_entry_charge(), or no memory for it). On each of them but a bad key
  // the entry of `key` is erased, whatever its version, so no invalidated
  // value is served, but no tombstone refuses older fills.
  Status Invalidate(std::string_view key, std::uint64_t version,
                    Clock::Duration tombstone_ttl = Clock::Duration::zero());

  // Removes whatever `key` holds, tombstone included (so it also lifts the
  // version guard). OK whether or not the key was present.
  // Errors: kInvalidArgument (bad key).
  Status Erase(std::string_view key);

  // Removes every entry (tombstones included). Counters are kept.
  void Clear();

  // Drops every dead entry now (expired beyond its retention) and returns how
  // many. Dead entries are otherwise dropped when looked up or evicted; this
  // only frees their room earlier. O(entries); locks one shard at a time.
  std::size_t PurgeExpired();

  // The fresh entry for `key`; on a miss runs `loader` once for all concurrent
  // callers in this process (single-flight), measures its duration (δ),
  // stores the result (value, or negative when the loader returns a null
  // value) and returns it. Callers that find a load in flight wait for it
  // until `deadline` (by options.clock). The loader's error is returned to
  // all callers of that flight and is not cached: the next call loads again.
  // The caller that runs the loader is not bounded by `deadline`: the loader
  // should bound itself.
  // Errors:
  //   kInvalidArgument   bad key, or the loader returned a TTL < 0 or > kL1MaxTtl.
  //   kDeadlineExceeded  waited for another caller's load past `deadline`.
  //   kAborted           the loaded version was refused by the version guard
  //                      (a tombstone of a higher version) and no fresh entry
  //                      is present; retry later.
  //   kInternal          the loader or the weigher threw.
  //   any status the loader returned.
  // A loaded value too large to cache (kResourceExhausted from Set) is still
  // returned to the callers, uncached.
  Result<L1Entry> GetOrLoad(std::string_view key, const L1Loader& loader,
                              Clock::TimePoint deadline);

  L1Stats Stats() const;

  // Largest charge one entry may have: max_bytes / number of shards, at
  // most 2^32 - 1 (an entry keeps its charge in 32 bits).
  std::size_t max_entry_charge() const noexcept;
  // The number of shards actually used (see L1Options::num_shards).
  std::size_t shard_count() const noexcept;

 private:
  struct Impl;
  explicit L1Cache(std::unique_ptr<Impl> impl);

  // Validates, weighs and stores one entry. *built (if non-null) receives the
  // entry as stored once its expiry is known, even if storing then fails.
  Status Store(std::string_view key, L1Value value, L1EntryKind kind, const L1Fill& fill,
               L1Entry* built);
  Result<L1Entry> LoadAndFill(std::string_view key, const L1Loader& loader);
  Result<std::optional<L1Entry>> Lookup(std::string_view key,
                                        std::optional<Clock::Duration> stale_bound);

  std::unique_ptr<Impl> impl_;
};

}  // namespace tiercache

#endif  // TIERCACHE_L1_CACHE_H_
