// Cache::Impl: the machinery behind tiercache::Cache (cache.h). Internal.
//
// Where each part lives:
//   read_path.cc      L1 and L2 reads, what L2's bytes mean (Interpret), which
//                     stale copy may still be served (BestStale)
//   load_path.cc      after an L1 miss: single-flight, the lease, starting or
//                     joining the one load of a key (LoadRegistry), waiting
//                     for it with soft/hard timeouts, the fenced fill
//   early_refresh.cc  XFetch: background reloads of fresh values near expiry
//   batch.cc          GetMany
//   write_path.cc     Set, Invalidate
//   l2_guard.h        every L2 call: time bound and per-shard breakers
//   local_fence.h     this process's fence for L1
//   seen_versions.h   versions this process invalidated at, checked on L2 reads
//   load_registry.h   the load running for each key in this process
// The consistency model they implement is docs/consistency.md.
#ifndef TIERCACHE_CORE_CACHE_IMPL_H_
#define TIERCACHE_CORE_CACHE_IMPL_H_

#include <atomic>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>

#include "core/cache_options.h"
#include "core/deadline_timer.h"
#include "core/executor.h"
#include "core/group_table.h"
#include "core/l2_guard.h"
#include "core/lease_keeper.h"
#include "core/load_registry.h"
#include "core/local_fence.h"
#include "core/seen_versions.h"
#include "tiercache/cache.h"
#include "tiercache/single_flight.h"

namespace tiercache {
namespace cache_internal {

// One get: what was asked and by when.
struct Call {
  std::string key;
  Loader loader;
  CallSettings settings;
  Clock::TimePoint start;     // when the caller called
  Clock::TimePoint deadline;  // start + hard timeout
};

// What one L2 read found.
struct L2Read {
  // User-provided: a defaulted one would zero all ~250 bytes first (one
  // rep stos per value interpreted, half of Interpret's time in a GetMany).
  L2Read() {}
  bool ok = false;                     // L2 answered
  std::optional<CachedValue> fresh;    // a fresh value or negative entry
  std::optional<CachedValue> stale;    // expired, within max_stale
  std::optional<uint64_t> tombstone;   // a tombstone of this version is stored
  std::optional<uint64_t> newest;      // version of the value/negative entry stored
  std::optional<std::string> corrupt;  // bytes that failed to decode
  // A group read: the group's generation now (nullopt: it has none).
  std::optional<uint64_t> group_generation;
  bool not_current = false;  // a member of an earlier generation (or of another grouping) is stored
};

// The fence a load runs under, taken before it reads the source.
struct LoadTicket {
  // The L2 fence snapshot; has_fence false when L2 could not be asked (then
  // the result is served to the load's callers but stored in no tier).
  bool has_fence = false;
  FenceSnapshot fence;
  bool l2_absent = false;    // the cache has no L2: only the local fence counts
  std::string lease_token;   // non-empty: this load holds the key's lease
  uint64_t local_epoch = 0;  // LocalFence::Read before the source was read
  Clock::TimePoint taken{};  // when (this process's clock)
};

// What became of a fill.
enum class FillResult : uint8_t {
  kStored,     // in L2 (or no L2) and L1
  kNotStored,  // outcome unknown or not attempted: served, cached nowhere
  kRefused,    // the fence refused it: the source moved on (or the load was too old)
};

// A random 128-bit token in hex (lease tokens, fence epochs).
std::string NewToken();

// Calls a user's loader; an exception becomes kInternal (none crosses the API).
template <typename Fn, typename Arg>
auto SafeLoad(const Fn& loader, const Arg& arg) noexcept -> decltype(loader(arg)) {
  try {
    return loader(arg);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("loader threw: ") + e.what());
  } catch (...) {
    return Status::Internal("loader threw a non-std exception");
  }
}

}  // namespace cache_internal

class Cache::Impl {
 public:
  static constexpr size_t kGroupsTracked = 1 << 16;
  // Keys whose local versioned invalidation is remembered (SeenVersions):
  // 65,536 within tombstone_ttl, i.e. ~2,000 invalidations/s at 30 s.
  static constexpr size_t kKeysSeen = 1 << 16;

  using Call = cache_internal::Call;
  using L2Read = cache_internal::L2Read;
  using LoadTicket = cache_internal::LoadTicket;
  using FillResult = cache_internal::FillResult;

  Impl(CacheOptions options, std::unique_ptr<L1Cache> l1);
  ~Impl();

  // The entry points (cache.h).
  Result<CachedValue> Get(std::string_view key, const Loader& loader, const GetOptions& g);
  // The cache's defaults (no GetOptions built, no settings resolved).
  // Inline, defined in read_path.cc with the hit path it belongs to: only
  // that file may call it (as ReadL1Into and GetWith).
  inline Result<CachedValue> Get(std::string_view key, const Loader& loader);
  std::future<Result<CachedValue>> GetAsync(std::string key, Loader loader, const GetOptions& g);
  Result<std::vector<Result<CachedValue>>> GetMany(const std::vector<std::string>& keys, const BatchLoader& loader,
                                                   const GetOptions& g);
  Status Set(std::string_view key, std::string_view payload, std::optional<uint64_t> version,
             const GetOptions& g);
  Status Invalidate(std::string_view key, std::optional<uint64_t> version);
  std::vector<Result<Cache::InvalidationResult>> InvalidateMany(const std::vector<Cache::Invalidation>& list,
                                                                std::vector<uint64_t>* generations = nullptr);
  Result<uint64_t> InvalidateGroup(std::string_view group, std::optional<uint64_t> version);
  Status InvalidateLocal(std::string_view key, uint64_t version);
  void FenceL1(bool drop);
  void TrustL1() { l1_trusted_.store(true, std::memory_order_release); }
  bool l1_trusted() const { return l1_trusted_.load(std::memory_order_acquire); }
  L1Cache* l1() const { return l1_.get(); }

 private:
  // ---- read_path.cc ----
  Status CheckKey(std::string_view key) const;
  // True when CheckKey() and CheckMember() would surely pass: a key of an
  // acceptable size, not companion shaped by the two byte tests, outside any
  // group. Inline, for the hit path; the others take the full checks.
  bool PassesChecksFast(std::string_view key, const CallSettings& s) const {
    return !key.empty() && key.size() <= o_.l1.max_key_bytes && s.group.empty() && !MaybeCompanionKeyName(key);
  }
  // kOk unless `key` cannot be a member of s.group (another hash slot).
  Status CheckMember(std::string_view key, const CallSettings& s) const;
  // A fresh L1 entry, or nullopt (an expired one goes to *stale).
  std::optional<CachedValue> ReadL1(std::string_view key, const CallSettings& s, std::optional<CachedValue>* stale);
  // The same into *out (kFresh, kStale), for the hot path: no optional to
  // build and clear on every hit.
  enum class L1Read { kMiss, kFresh, kStale };
  // What an L1 hit on one of FillL1's copies saw, for FarFromEarlyRefresh: the
  // copy's expiry (FillL1 caps it at the logical expiry, on the monotonic
  // clock) and the lookup's clock reading. Zero read_at: not such a copy.
  struct L1Seen {
    Clock::TimePoint expiry{};
    Clock::TimePoint read_at{};
  };
  // Inline, defined in read_path.cc: only that file may call it.
  inline L1Read ReadL1Into(std::string_view key, const CallSettings& s, CachedValue* out, L1Seen* seen = nullptr);
  L2Read ReadL2(std::string_view key, const CallSettings& s, Clock::TimePoint deadline, uint64_t local_epoch);
  // True when `v`, read from L2, is older than what this pod has seen: below
  // the version of a local invalidation of `key` within tombstone_ttl
  // (SeenVersions), or a member of a group this pod's table says L2 is
  // behind on (GroupTable::ServesFromL2). Such an entry is not served.
  bool BehindLocal(std::string_view key, const CachedValue& v, const CallSettings& s) const;
  // What bytes read from L2 mean now. A fresh value is also copied to L1; a
  // tombstone is applied to L1. count_misses == false for re-reads.
  // `group_generation`: the group's generation read with `raw` (group
  // calls only). `now`: the wall time to judge expiry by (read once by a
  // caller interpreting a whole MGET reply); null reads the clock.
  L2Read Interpret(std::string_view key, std::optional<std::string>&& raw, std::optional<uint64_t> group_generation,
                   const CallSettings& s, uint64_t local_epoch, bool count_misses = true,
                   const WallTime* now = nullptr);
  // The stale copy that may still be served: not known to be superseded by
  // what L2 showed (a tombstone, or a newer version), the newest of the two.
  static std::optional<CachedValue> BestStale(std::optional<CachedValue> mine, L2Read& read);
  // Builds a CachedValue over envelope bytes; nullopt for a tombstone.
  // `bytes` is moved into the value returned, and left as it was otherwise
  // (an error, a tombstone): no reference count is taken and dropped.
  Result<std::optional<CachedValue>> FromEnvelope(std::shared_ptr<const std::string>&& bytes, ValueSource source,
                                                  bool verify) const;
  // Copies `v` into L1 (never past its L2 expiry) unless a local
  // invalidation of `key` (or of its group) came after `local_epoch`.
  void FillL1(std::string_view key, const CachedValue& v, const CallSettings& s, uint64_t local_epoch);
  // This process's fence for `key` (LocalFence): a group member's moves
  // with the key's stripe and with its group's (bumped by every move of the
  // group here). Both only grow, so the sum changes whenever either does.
  uint64_t LocalEpoch(std::string_view key, const CallSettings& s) const {
    return local_fence_.Read(key) + (s.group.empty() ? 0 : local_fence_.Read(s.group));
  }
  void PrefetchLocalEpoch(uint64_t key_hash) const { local_fence_.PrefetchHashed(key_hash); }
  // LocalEpoch(key, s), given key_hash == LocalFence::Hash(key).
  uint64_t LocalEpochHashed(uint64_t key_hash, const CallSettings& s) const {
    return local_fence_.ReadHashed(key_hash) + (s.group.empty() ? 0 : local_fence_.Read(s.group));
  }
  Result<CachedValue> ServeStale(const CachedValue& v);

  // ---- load_path.cc ----
  Result<CachedValue> AfterL1Miss(Call call, std::optional<CachedValue> stale);
  Result<CachedValue> Fetch(const Call& call, std::optional<CachedValue> stale);
  Result<CachedValue> LoadUnderLease(const Call& call, std::optional<CachedValue> stale, uint64_t local_epoch);
  // Joins the load of call.key running in this process, or starts one under
  // `ticket`; then waits for it as the call's timeouts allow.
  Result<CachedValue> Load(const Call& call, std::optional<CachedValue> stale, LoadTicket ticket);
  // Starts a load of call.key under `ticket` in the background; the running
  // load of the key when there is one (then `ticket`'s lease is released).
  // Errors: kResourceExhausted / kCancelled from the loader pool.
  // With `wait_for_room`, a key at its cap of loads (LoadRegistry) makes the
  // caller wait, up to call.deadline, for one of them to end (kDeadlineExceeded
  // if none does; kCancelled when the cache is destroyed meanwhile), and the
  // load it then starts gets a new ticket; without, it is refused at once
  // (kResourceExhausted). *at_cap (if given): whether it ended refused at the
  // cap (else a kResourceExhausted is the loader pool's).
  Result<std::shared_ptr<LoadRegistry::Load>> StartOrJoin(const Call& call, LoadTicket ticket, bool wait_for_room,
                                                          bool* at_cap = nullptr);
  Result<CachedValue> WaitFor(const Call& call, LoadRegistry::Load& load, const std::optional<CachedValue>& stale);
  // Runs on a loader thread: the loader, then the fenced fill; once more
  // when the fence refused it.
  Result<CachedValue> LoadAndFill(const Call& call, LoadTicket ticket);
  // A fresh ticket (fence snapshot) for `key`, without a lease.
  LoadTicket NewTicket(const std::string& key, const CallSettings& s, Clock::TimePoint deadline);
  // `group_generation`: a group member's envelope (format 2) at it.
  Result<CachedValue> MakeValue(const LoadResult& r, std::chrono::nanoseconds took, const CallSettings& s,
                                std::optional<uint64_t> group_generation) const;
  // AcquireLease, or AcquireLeaseInGroup for a group member.
  Result<LeaseOutcome> AcquireLease(const Call& call, const std::string& token);
  // Fills may change a value: an unversioned not-found that L2 stored at a
  // tombstone's version (or the floor) takes that version here too.
  FillResult Fill(const std::string& key, CachedValue& v, const CallSettings& s, const LoadTicket& ticket);
  std::vector<FillResult> FillMany(const std::vector<std::string>& keys, std::vector<CachedValue>& values,
                                   const CallSettings& s, const std::vector<LoadTicket>& tickets);
  // Removes `key`'s L2 entry if it is well-formed but fails its CRC (it
  // would fence every write; l2_store.h). True when removed.
  bool RemoveIfCorrupt(const std::string& key, Clock::TimePoint deadline);
  // Gives `key`'s lease held by `token` back in the background (the lease
  // keeper's thread): never blocks the caller. At worst the lease expires.
  void ReleaseLease(const std::string& key, const std::string& token);
  int ShardOf(std::string_view key) const { return o_.l2 ? o_.l2->ShardOf(key) : 0; }

  // ---- batch.cc ----
  // Runs on a loader thread: one loader call for `keys`, fills pipelined.
  std::vector<Result<CachedValue>> LoadBatch(const std::vector<std::string>& keys, const BatchLoader& loader,
                                             const CallSettings& s, const std::vector<LoadTicket>& tickets);

  // ---- read_path.cc ----
  // Get() once the key and `s` passed their checks: L1, then AfterL1Miss.
  // Inline: only read_path.cc may call it.
  inline Result<CachedValue> GetWith(std::string_view key, const Loader& loader, const CallSettings& s);
  // Get() past an L1 miss (l1_stale null) or an L1 stale hit (*l1_stale,
  // moved from).
  Result<CachedValue> GetAfterL1(std::string_view key, const Loader& loader, const CallSettings& s,
                                 CachedValue* l1_stale);

  // ---- early_refresh.cc ----
  // True when no XFetch draw could refresh `v`, an L1 hit on one of
  // FillL1's copies that saw `seen` (see L1Seen), so that MaybeRefreshEarly
  // would return without a clock read: the copy expires no later than the
  // logical expiry (FillL1 caps it there, on the monotonic clock; kFillSlack
  // covers the microseconds between its two clock readings) and the lookup's
  // reading is behind the real time by at most kCoarseLag, so while the
  // copy's expiry is further than the reach (δ β (-ln u) for the largest
  // -ln u a draw can give, kMaxMinusLnU) beyond that reading and the lag, no
  // draw can refresh. A wall clock stepped or slewed since the fill shifts
  // this by as much, delaying draws at most until the copy expires; it never
  // serves a copy longer. False (ask MaybeRefreshEarly) when `seen` is not
  // such a hit's, and for a huge or NaN reach. Inline: decided on every hit.
  static constexpr double kMaxMinusLnU = 36.75;  // -ln(u) for the smallest u drawn, 2^-53: 36.74
  static constexpr std::chrono::nanoseconds kFillSlack = std::chrono::milliseconds(1);
  static bool FarFromEarlyRefresh(const L1Seen& seen, const CachedValue& v, const CallSettings& s) {
    if (seen.read_at == Clock::TimePoint{}) return false;
    const Clock::Duration margin = seen.expiry - seen.read_at - Clock::kCoarseLag - kFillSlack;
    if (margin <= Clock::Duration::zero()) return false;
    const double reach_ns =
        static_cast<double>(std::chrono::nanoseconds(v.load_duration_).count()) * s.beta * kMaxMinusLnU;
    return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(margin).count()) > reach_ns;
  }
  void MaybeRefreshEarly(std::string_view key, const CachedValue& v, const Loader& loader, const CallSettings& s);
  // The settings of a call: the cache's defaults (not copied) when `g`
  // overrides nothing, else `g` applied into *storage.
  // Errors: kInvalidArgument / kFailedPrecondition as ResolveCallSettings.
  Result<const CallSettings*> Settings(const GetOptions& g, CallSettings* storage) const;
  void RefreshNow(const Call& call, WallTime seen_expiry);

  friend class Cache;

  const CacheOptions o_;
  Clock* const clock_;
  Metrics* const metrics_;
  // False when metrics_ is the no-op one: the L1 hit then skips its call.
  const bool metrics_on_;
  const std::unique_ptr<L1Cache> l1_;
  L2Guard guard_;
  LocalFence local_fence_;
  GroupTable groups_{kGroupsTracked};  // the group generations this pod's L1 (and L2 reads) may serve
  // Versions of this pod's invalidations, for tombstone_ttl: L2 reads below
  // them are not served (L2 has not applied them, or lost them).
  SeenVersions seen_{kKeysSeen, o_.tombstone_ttl};
  // False while this pod cannot be sure it saw every invalidation (FenceL1):
  // L1 is then neither read nor filled.
  std::atomic<bool> l1_trusted_{true};
  LoadRegistry running_;
  CallSettings default_settings_;  // ResolveCallSettings(o_, {}), set once in the constructor
  SingleFlight<CachedValue> flights_;  // per key and call settings
  std::mutex refresh_mu_;
  std::unordered_set<std::string> refreshing_;  // GUARDED_BY(refresh_mu_): early refreshes in flight
  std::unique_ptr<BoundedExecutor> loaders_;
  std::unique_ptr<BoundedExecutor> async_;
  std::unique_ptr<DeadlineTimer> timer_;  // GetAsync deadlines; room for every call the async pool can hold
  std::unique_ptr<LeaseKeeper> keeper_;  // null without L2
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_CACHE_IMPL_H_
