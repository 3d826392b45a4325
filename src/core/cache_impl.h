// Cache::Impl: the machinery behind tiercache::Cache (cache.h), shared by
// cache.cc (get, get_async) and cache_batch.cc (get_many, set, invalidate).
// Internal: not part of the public API.
#ifndef TIERCACHE_CORE_CACHE_IMPL_H_
#define TIERCACHE_CORE_CACHE_IMPL_H_

#include "tiercache/cache.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_set>

#include "core/cache_options.h"
#include "core/circuit_breaker.h"
#include "core/executor.h"
#include "core/lease_keeper.h"
#include "core/xfetch.h"
#include "tiercache/single_flight.h"

namespace tiercache {
namespace cache_internal {

using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::nanoseconds;

inline std::mt19937_64& Rng() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng;
}

// u uniform in (0, 1].
inline double UniformOpenZero() {
  return 1.0 - std::uniform_real_distribution<double>(0.0, 1.0)(Rng());
}

inline std::string NewToken() {
  static const char* kHex = "0123456789abcdef";
  std::string t(32, '0');
  uint64_t a = Rng()(), b = Rng()();
  for (int i = 0; i < 16; ++i) {
    t[i] = kHex[(a >> (4 * i)) & 15];
    t[16 + i] = kHex[(b >> (4 * i)) & 15];
  }
  return t;
}

// The version of an unversioned load or invalidation: wall-clock microseconds.
inline uint64_t WallStamp(WallTime t) {
  return static_cast<uint64_t>(duration_cast<microseconds>(t.time_since_epoch()).count());
}

// A background load's outcome, shared by the task and the caller waiting for it.
struct LoadState {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<CachedValue>> result;  // GUARDED_BY(mu)

  void Set(Result<CachedValue> r) {
    {
      std::lock_guard<std::mutex> lock(mu);
      result.emplace(std::move(r));
    }
    cv.notify_all();
  }
  // Waits (real time) at most `max_wait` for the result.
  std::optional<Result<CachedValue>> WaitFor(nanoseconds max_wait) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, max_wait, [this] { return result.has_value(); });
    return result;
  }
};

// What one L2 read found.
struct L2Read {
  bool ok = false;                    // L2 answered
  std::optional<CachedValue> fresh;   // a fresh value or negative entry
  std::optional<CachedValue> stale;   // expired, within max_stale
};

}  // namespace cache_internal

using namespace cache_internal;  // NOLINT: internal header

struct Cache::Impl {
  CacheOptions o;
  Clock* clock;
  Metrics* metrics;
  std::unique_ptr<L1Cache> l1;
  CircuitBreaker breaker;
  SingleFlight<CachedValue> flights;
  std::mutex refresh_mu;
  std::unordered_set<std::string> refreshing;  // GUARDED_BY(refresh_mu): early refreshes in flight
  std::unique_ptr<BoundedExecutor> loaders;
  std::unique_ptr<BoundedExecutor> async;
  std::unique_ptr<LeaseKeeper> keeper;  // null without L2

  Impl(CacheOptions options, std::unique_ptr<L1Cache> l1_cache)
      : o(std::move(options)),
        clock(o.clock ? o.clock : Clock::Real()),
        metrics(o.metrics ? o.metrics : Metrics::Noop()),
        l1(std::move(l1_cache)),
        breaker({o.breaker_failure_threshold, o.breaker_open_duration}, clock),
        flights(clock),
        loaders(std::make_unique<BoundedExecutor>(o.loader_threads, o.loader_queue)),
        async(std::make_unique<BoundedExecutor>(o.async_threads, o.async_queue)) {
    if (o.l2) {
      keeper = std::make_unique<LeaseKeeper>(
          std::max(milliseconds(1), o.lease.ttl / 3), [this](const std::string& lease_key, const std::string& token) {
            CallL2(clock->Now() + o.l2_timeout, [&](milliseconds dl) {
              return o.l2->ExtendLease(lease_key, token, o.lease.ttl, dl);
            }).status().IgnoreError();  // a lease that cannot be extended simply expires
          });
    }
  }

  ~Impl() {
    async->Shutdown();    // its tasks may still submit loads: stop it first
    loaders->Shutdown();  // running loads finish (and unregister their leases)
    if (keeper) keeper->Stop();
  }

  // ---- small helpers ------------------------------------------------------

  Status CheckKey(std::string_view key) const {
    if (key.empty()) return Status::InvalidArgument("empty key");
    if (key.size() > o.l1.max_key_bytes) {
      return Status::InvalidArgument("key of " + std::to_string(key.size()) + " bytes exceeds max_key_bytes " +
                                     std::to_string(o.l1.max_key_bytes));
    }
    return Status::Ok();
  }

  milliseconds Jittered(milliseconds ttl) const {
    if (o.ttl_jitter <= 0) return ttl;
    const double f = std::uniform_real_distribution<double>(1.0 - o.ttl_jitter, 1.0 + o.ttl_jitter)(Rng());
    return std::max(milliseconds(1), milliseconds(static_cast<int64_t>(static_cast<double>(ttl.count()) * f)));
  }

  // Runs one L2 call through the breaker. `call` takes its timeout: the
  // l2_timeout, or less when `deadline` is nearer.
  template <typename Call>
  auto CallL2(Clock::TimePoint deadline, Call&& call) -> decltype(call(milliseconds(1))) {
    const auto left = duration_cast<milliseconds>(std::min(deadline, clock->Now() + o.l2_timeout) - clock->Now());
    if (left < milliseconds(1)) return Status::DeadlineExceeded("no time left for an L2 call");
    if (!breaker.Allow()) return Status::Unavailable("L2 circuit breaker open");
    const uint64_t opened_before = breaker.times_opened();
    auto r = call(left);
    const Status& s = StatusOf(r);
    if (s.ok() || s.IsInvalidArgument() || s.IsAborted()) {
      breaker.RecordSuccess();
    } else {
      metrics->Add(Counter::kL2Error, Tier::kL2);
      breaker.RecordFailure();
    }
    if (breaker.times_opened() != opened_before) metrics->Add(Counter::kBreakerOpened, Tier::kL2);
    metrics->SetBreakerOpen(breaker.state() != BreakerState::kClosed);
    return r;
  }
  // True when the breaker keeps calls away from L2 (open, or probing).
  bool L2Down() const { return breaker.state() != BreakerState::kClosed; }

  static const Status& StatusOf(const Status& s) { return s; }
  template <typename T>
  static Status StatusOf(const Result<T>& r) { return r.status(); }

  // Builds a CachedValue over envelope bytes; nullopt for a tombstone.
  // Errors: kDataLoss (corrupt, foreign format or codec).
  Result<std::optional<CachedValue>> FromEnvelope(std::shared_ptr<const std::string> bytes, ValueSource source,
                                                  bool verify) const {
    Result<EnvelopeView> e = DecodeEnvelope(*bytes, verify);
    if (!e.ok()) return e.status();
    if (e->kind == EntryKind::kTombstone) return std::optional<CachedValue>();
    if (e->kind == EntryKind::kValue && e->codec_id != o.codec_id) {
      return Status::DataLoss("payload written by codec " + std::to_string(e->codec_id) + ", this cache uses " +
                              std::to_string(o.codec_id));
    }
    CachedValue v;
    v.found_ = e->kind == EntryKind::kValue;
    v.payload_ = v.found_ ? e->payload : std::string_view();
    v.version_ = e->version;
    v.expires_at_ = e->expires_at;
    v.load_duration_ = e->load_duration;
    v.source_ = source;
    v.envelope_ = std::move(bytes);
    return std::optional<CachedValue>(std::move(v));
  }

  static CachedValue AsStale(CachedValue v) {
    v.stale_ = true;
    return v;
  }

  // Copies a value into L1 for at most the L1 TTL and never past its L2 expiry.
  // Returns false when L1 refused it (version guard).
  bool FillL1(std::string_view key, const CachedValue& v) {
    if (!l1) return true;
    const auto left = v.expires_at_ - clock->WallNow();
    if (left <= WallTime::duration::zero()) return true;
    L1Fill fill;
    fill.version = v.version_;
    fill.not_after = clock->Now() + duration_cast<nanoseconds>(left);
    fill.load_duration = v.load_duration_;
    Status s = v.found_ ? l1->set(key, v.envelope_, fill) : l1->set_negative(key, fill);
    if (s.IsAborted()) {
      metrics->Add(Counter::kRefusedFill, Tier::kL1);
      return false;
    }
    return true;  // other L1 errors (too large) only mean it is not cached there
  }

  // ---- reads ---------------------------------------------------------------

  // L1 lookup. A fresh entry is returned; an expired one goes to *stale.
  std::optional<CachedValue> ReadL1(std::string_view key, const CallSettings& s, std::optional<CachedValue>* stale) {
    if (!l1) return std::nullopt;
    Result<std::optional<L1Entry>> r = l1->get_stale(key, s.max_stale);
    if (!r.ok() || !r->has_value()) {
      metrics->Add(Counter::kMiss, Tier::kL1);
      return std::nullopt;
    }
    const L1Entry& e = **r;
    CachedValue v;
    if (e.kind == L1EntryKind::kValue) {
      Result<std::optional<CachedValue>> fv = FromEnvelope(e.value, ValueSource::kL1, /*verify=*/false);
      if (!fv.ok() || !fv->has_value()) {
        metrics->Add(Counter::kMiss, Tier::kL1);
        return std::nullopt;
      }
      v = std::move(**fv);
    } else {  // negative
      v.version_ = e.version;
      v.source_ = ValueSource::kL1;
    }
    if (!clock->Before(e.expiry)) {  // expired: e.FreshAt(Now()), cheaper when far off
      metrics->Add(Counter::kMiss, Tier::kL1);
      *stale = AsStale(std::move(v));
      return std::nullopt;
    }
    metrics->Add(v.found_ ? Counter::kHit : Counter::kNegativeHit, Tier::kL1);
    return v;
  }

  L2Read ReadL2(std::string_view key, const CallSettings& s, Clock::TimePoint deadline) {
    if (!o.l2) return L2Read();
    Result<std::optional<std::string>> r =
        CallL2(deadline, [&](milliseconds dl) { return o.l2->Get(key, dl); });
    if (!r.ok()) return L2Read();
    return Interpret(key, std::move(*r), s);
  }

  // What bytes read from L2 mean now: fresh (then also copied to L1), stale
  // within max_stale, or a miss (absent, tombstone, expired, undecodable).
  // Re-reads of a key already counted as missed (the lease's read) pass
  // count_misses == false, so each get counts one L2 miss at most.
  L2Read Interpret(std::string_view key, std::optional<std::string> raw, const CallSettings& s,
                   bool count_misses = true) {
    L2Read out;
    out.ok = true;
    const uint64_t miss = count_misses ? 1 : 0;
    if (!raw) {
      metrics->Add(Counter::kMiss, Tier::kL2, miss);
      return out;
    }
    auto bytes = std::make_shared<const std::string>(std::move(*raw));
    Result<std::optional<CachedValue>> v = FromEnvelope(std::move(bytes), ValueSource::kL2, /*verify=*/true);
    if (!v.ok()) {
      metrics->Add(Counter::kDecodeError, Tier::kL2, miss);  // a miss; the next fill overwrites it
    }
    if (!v.ok() || !v->has_value()) {
      metrics->Add(Counter::kMiss, Tier::kL2, miss);
      return out;
    }
    CachedValue& got = **v;
    const WallTime now = clock->WallNow();
    if (now < got.expires_at_) {
      metrics->Add(got.found_ ? Counter::kHit : Counter::kNegativeHit, Tier::kL2);
      FillL1(key, got);
      out.fresh = std::move(got);
    } else {
      metrics->Add(Counter::kMiss, Tier::kL2, miss);
      if (now - got.expires_at_ <= s.max_stale) out.stale = AsStale(std::move(got));
    }
    return out;
  }

  // Takes the lease of `key` and reads its value in one atomic step.
  Result<LeaseOutcome> TryLease(std::string_view key, const std::string& lease_key, const std::string& token,
                                Clock::TimePoint deadline) {
    return CallL2(deadline, [&](milliseconds dl) {
      return o.l2->AcquireLease(key, lease_key, token, o.lease.ttl, dl);
    });
  }

  // ---- loads ---------------------------------------------------------------

  // Builds the envelope of a load result.
  Result<CachedValue> MakeValue(const LoadResult& r, uint64_t version, nanoseconds took, const CallSettings& s,
                                bool* negative) const {
    *negative = !r.payload.has_value();
    EnvelopeView e;
    e.kind = *negative ? EntryKind::kNegative : EntryKind::kValue;
    e.codec_id = o.codec_id;
    e.version = version;
    e.written_at = clock->WallNow();
    e.expires_at = e.written_at + Jittered(*negative ? s.negative_ttl : s.ttl);
    e.load_duration = duration_cast<microseconds>(took);
    if (!*negative) e.payload = *r.payload;
    Result<std::string> bytes = EncodeEnvelope(e);
    if (!bytes.ok()) return bytes.status();
    Result<std::optional<CachedValue>> v =
        FromEnvelope(std::make_shared<const std::string>(std::move(*bytes)), ValueSource::kLoader, false);
    if (!v.ok()) return v.status();
    return std::move(**v);
  }

  // Writes a value to L2 (fenced, releasing the lease) and L1. Returns
  // kAborted when a fence refused it.
  // With report_l2_errors, an L2 failure is returned (after L1 is filled).
  Status Fill(std::string_view key, const CachedValue& v, const CallSettings& s, std::string_view lease_key,
              std::string_view token, Clock::TimePoint deadline, bool report_l2_errors = false) {
    Status l2_status;
    if (o.l2 && v.payload_.size() > o.max_value_bytes) {
      ReleaseLease(lease_key, token);  // too large to share: served, kept in L1 if it fits there
    } else if (o.l2) {
      const milliseconds physical =
          duration_cast<milliseconds>(v.expires_at_ - clock->WallNow()) + s.max_stale + milliseconds(1);
      if (!o.version_fencing) {
        l2_status = CallL2(deadline, [&](milliseconds dl) { return o.l2->Put(key, *v.envelope_, physical, dl); });
        if (!lease_key.empty()) ReleaseLease(lease_key, token);
      } else {
        Result<FenceOutcome> r = CallL2(deadline, [&](milliseconds dl) {
          return o.l2->FencedFill(key, *v.envelope_, physical, lease_key, token, dl);
        });
        if (r.ok() && !r->stored) {
          metrics->Add(Counter::kRefusedFill, Tier::kL2);
          return Status::Aborted("fill of version " + std::to_string(v.version_) +
                                 " refused: L2 holds version " + std::to_string(r->stored_version));
        }
        l2_status = r.status();
      }
    }
    if (!o.version_fencing && l1) l1->erase(key).IgnoreError();
    if (!FillL1(key, v)) return Status::Aborted("fill refused by L1's version guard");
    // Otherwise L2 trouble only costs the shared copy: the value is served and kept in L1.
    return report_l2_errors ? l2_status : Status::Ok();
  }

  // get_many's loader call and fills (no lease, no reload on a refused fill).
  Result<std::vector<Result<CachedValue>>> LoadManyAndFill(const std::vector<std::string>& keys,
                                                           const BatchLoader& loader, const CallSettings& s) {
    const WallTime started = clock->WallNow();
    const Clock::TimePoint t0 = clock->Now();
    Result<std::vector<LoadResult>> r = SafeLoad(loader, keys);
    const nanoseconds took = clock->Now() - t0;
    metrics->Add(Counter::kLoad, Tier::kLoader);
    metrics->ObserveLoad(took);
    if (r.ok() && r->size() != keys.size()) {
      r = Status::Internal("batch loader returned " + std::to_string(r->size()) + " results for " +
                           std::to_string(keys.size()) + " keys");
    }
    if (!r.ok()) {
      metrics->Add(Counter::kLoadError, Tier::kLoader);
      return r.status();
    }
    std::vector<Result<CachedValue>> out;
    out.reserve(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      bool negative = false;
      Result<CachedValue> v = MakeValue((*r)[i], (*r)[i].version.value_or(WallStamp(started)), took, s, &negative);
      if (v.ok()) {
        Status filled = Fill(keys[i], *v, s, "", "", clock->Now() + o.l2_timeout);
        if (filled.IsAborted()) v = filled;
      }
      out.push_back(std::move(v));
    }
    return out;
  }

  void ReleaseLease(std::string_view lease_key, std::string_view token) {
    if (!o.l2 || lease_key.empty()) return;
    CallL2(clock->Now() + o.l2_timeout,
           [&](milliseconds dl) { return o.l2->ReleaseLease(lease_key, token, dl); })
        .status()
        .IgnoreError();  // at worst the lease expires by itself
  }

  // Runs the loader and fills both tiers. Runs on a loader thread. When a fence
  // refuses the fill (the source moved on during the load), takes the newer
  // value from L2 if there is one, else loads once more.
  Result<CachedValue> LoadAndFill(const std::string& key, const Loader& loader, const CallSettings& s,
                                  const std::string& lease_key, const std::string& token) {
    for (int attempt = 0;; ++attempt) {
      const WallTime started = clock->WallNow();
      const Clock::TimePoint t0 = clock->Now();
      const bool keep_lease = attempt == 0 && keeper && !lease_key.empty();
      if (keep_lease) keeper->Add(token, lease_key);  // extended while the loader runs
      Result<LoadResult> r = SafeLoad(loader, key);
      if (keep_lease) keeper->Remove(token);
      const nanoseconds took = clock->Now() - t0;
      metrics->Add(Counter::kLoad, Tier::kLoader);
      metrics->ObserveLoad(took);
      if (!r.ok()) {
        metrics->Add(Counter::kLoadError, Tier::kLoader);
        if (attempt == 0) ReleaseLease(lease_key, token);
        return r.status();
      }
      bool negative = false;
      Result<CachedValue> v = MakeValue(*r, r->version.value_or(WallStamp(started)), took, s, &negative);
      if (!v.ok()) {
        if (attempt == 0) ReleaseLease(lease_key, token);
        return v.status();
      }
      const Clock::TimePoint fill_deadline = clock->Now() + o.l2_timeout;
      Status filled = Fill(key, *v, s, attempt == 0 ? lease_key : "", token, fill_deadline);
      if (!filled.IsAborted()) return v;
      L2Read now = ReadL2(key, s, fill_deadline);
      if (now.fresh && now.fresh->version_ >= v->version_) return std::move(*now.fresh);
      if (attempt >= 1) return Status::Aborted("the source kept changing during the load of " + key);
    }
  }

  // Calls a user's loader; an exception becomes kInternal (none crosses the API).
  template <typename Fn, typename Arg>
  static auto SafeLoad(const Fn& loader, const Arg& arg) noexcept -> decltype(loader(arg)) {
    try {
      return loader(arg);
    } catch (const std::exception& e) {
      return Status::Internal(std::string("loader threw: ") + e.what());
    } catch (...) {
      return Status::Internal("loader threw a non-std exception");
    }
  }

  // Starts LoadAndFill in the background and waits for it: until it ends, or
  // until the soft timeout when a stale value can be served, or the deadline.
  Result<CachedValue> RunLoad(const std::string& key, const Loader& loader, const CallSettings& s,
                              const std::optional<CachedValue>& stale, const std::string& lease_key,
                              const std::string& token, Clock::TimePoint start, Clock::TimePoint deadline) {
    auto state = std::make_shared<LoadState>();
    Status submitted = loaders->Submit([this, state, key, loader, s, lease_key, token](bool cancelled) {
      if (cancelled) {
        ReleaseLease(lease_key, token);
        state->Set(Status::Cancelled("cache shut down before the load ran"));
        return;
      }
      state->Set(LoadAndFill(key, loader, s, lease_key, token));
    });
    if (!submitted.ok()) {
      ReleaseLease(lease_key, token);
      if (stale) return ServeStale(*stale);
      return submitted;
    }
    const Clock::TimePoint soft_at = start + s.soft_timeout;
    for (;;) {
      const Clock::TimePoint now = clock->Now();
      Clock::TimePoint until = stale ? std::min(soft_at, deadline) : deadline;
      std::optional<Result<CachedValue>> r =
          state->WaitFor(std::clamp<nanoseconds>(until - now, nanoseconds(0), std::chrono::milliseconds(5)));
      if (r) {
        if (!r->ok() && stale) return ServeStale(*stale);
        return std::move(*r);
      }
      if (clock->Now() >= until) {
        if (stale) return ServeStale(*stale);  // the load goes on in the background
        return Status::DeadlineExceeded("load of '" + key + "' did not finish within the hard timeout");
      }
    }
  }

  Result<CachedValue> ServeStale(const CachedValue& v) {
    metrics->Add(Counter::kStaleServe, v.source_ == ValueSource::kL1 ? Tier::kL1 : Tier::kL2);
    return v;
  }

  // Takes the lease and loads, or waits for the holder's value.
  Result<CachedValue> LoadUnderLease(const std::string& key, const Loader& loader, const CallSettings& s,
                                     std::optional<CachedValue> stale, Clock::TimePoint start,
                                     Clock::TimePoint deadline) {
    if (!o.l2) return RunLoad(key, loader, s, stale, "", "", start, deadline);
    const std::string lease_key = LeaseKeyFor(key);
    const std::string token = NewToken();
    const Clock::TimePoint wait_until = std::min(deadline, start + o.lease.max_wait);
    milliseconds backoff = o.lease.poll_min;
    bool counted_wait = false;
    for (;;) {
      Result<LeaseOutcome> lease = TryLease(key, lease_key, token, deadline);
      if (lease.ok()) {
        L2Read now = Interpret(key, std::move(lease->value), s, /*count_misses=*/false);
        if (now.fresh) {  // a load finished meanwhile: use it, free the lease if we took it
          if (lease->won) ReleaseLease(lease_key, token);
          return std::move(*now.fresh);
        }
        if (now.stale && (!stale || now.stale->version_ >= stale->version_)) stale = std::move(now.stale);
        if (lease->won) {
          metrics->Add(Counter::kLeaseWon, Tier::kL2);
          return RunLoad(key, loader, s, stale, lease_key, token, start, deadline);
        }
        if (!counted_wait) {
          metrics->Add(Counter::kLeaseWait, Tier::kL2);
          counted_wait = true;
        }
      } else if (L2Down()) {
        // L2 down (breaker open): availability first, load without the lease.
        return RunLoad(key, loader, s, stale, "", "", start, deadline);
      }
      // Lost the lease, or a transient L2 failure: wait for the holder.
      if (stale) return ServeStale(*stale);  // stale-while-revalidate: the holder refreshes
      const Clock::TimePoint now = clock->Now();
      if (now >= wait_until) {
        metrics->Add(Counter::kLeaseWaitTimeout, Tier::kL2);
        if (o.lease.on_wait_timeout == LeaseWaitTimeoutAction::kLoad && now < deadline) {
          return RunLoad(key, loader, s, stale, "", "", start, deadline);
        }
        return Status::DeadlineExceeded("waited for another pod's load of '" + key + "' past the lease wait");
      }
      std::this_thread::sleep_for(std::min<nanoseconds>(backoff, wait_until - now));
      backoff = std::min(backoff * 2, o.lease.poll_max);
    }
  }

  // Everything after an L1 miss, once per key per process (single-flight).
  Result<CachedValue> Fetch(const std::string& key, const Loader& loader, const CallSettings& s,
                            std::optional<CachedValue> stale, Clock::TimePoint start, Clock::TimePoint deadline) {
    L2Read read = ReadL2(key, s, deadline);
    if (read.fresh) {
      MaybeRefreshEarly(key, *read.fresh, loader, s);
      return std::move(*read.fresh);
    }
    if (read.stale && (!stale || read.stale->version_ >= stale->version_)) stale = std::move(read.stale);
    if (!read.ok && L2Down()) return RunLoad(key, loader, s, stale, "", "", start, deadline);  // no lease
    return LoadUnderLease(key, loader, s, stale, start, deadline);
  }

  // XFetch: maybe reload a fresh value in the background, under the lease.
  void MaybeRefreshEarly(std::string_view key, const CachedValue& v, const Loader& loader, const CallSettings& s) {
    if (!loader || !v.envelope_ || s.beta <= 0) return;
    if (!XFetchShouldRefresh(clock->WallNow(), v.expires_at_, nanoseconds(v.load_duration_), s.beta,
                             UniformOpenZero())) {
      return;
    }
    std::string k(key);
    {
      std::lock_guard<std::mutex> lock(refresh_mu);
      if (!refreshing.insert(k).second) return;  // one refresh per key per process
    }
    const WallTime seen_expiry = v.expires_at_;
    Status submitted = loaders->Submit([this, k, loader, s, seen_expiry](bool cancelled) {
      if (!cancelled) RefreshNow(k, loader, s, seen_expiry);
      std::lock_guard<std::mutex> lock(refresh_mu);
      refreshing.erase(k);
    });
    if (!submitted.ok()) {
      std::lock_guard<std::mutex> lock(refresh_mu);
      refreshing.erase(k);
    }
  }

  void RefreshNow(const std::string& key, const Loader& loader, const CallSettings& s, WallTime seen_expiry) {
    std::string lease_key, token;
    if (o.l2) {
      lease_key = LeaseKeyFor(key);
      token = NewToken();
      Result<LeaseOutcome> lease = TryLease(key, lease_key, token, clock->Now() + o.l2_timeout);
      if (!lease.ok() || !lease->won) return;  // another pod refreshes (or L2 is down)
      L2Read now = Interpret(key, std::move(lease->value), s, /*count_misses=*/false);
      if (now.fresh && now.fresh->expires_at_ > seen_expiry) {  // refreshed meanwhile
        ReleaseLease(lease_key, token);
        return;
      }
    }
    metrics->Add(Counter::kEarlyRefresh, Tier::kLoader);
    LoadAndFill(key, loader, s, lease_key, token).status().IgnoreError();
  }

  // ---- the entry points --------------------------------------------------

  Result<CachedValue> Get(std::string_view key, const Loader& loader, const GetOptions& g) {
    TIERCACHE_RETURN_IF_ERROR(CheckKey(key));
    Result<CallSettings> s = ResolveCallSettings(o, g);
    if (!s.ok()) return s.status();
    std::optional<CachedValue> stale;
    if (std::optional<CachedValue> hit = ReadL1(key, *s, &stale)) {
      MaybeRefreshEarly(key, *hit, loader, *s);
      return std::move(*hit);
    }
    return AfterL1Miss(std::string(key), loader, *s, std::move(stale));
  }

  // L2 and the loader, once per key per process (single-flight).
  Result<CachedValue> AfterL1Miss(const std::string& key, const Loader& loader, const CallSettings& s,
                                  std::optional<CachedValue> stale) {
    const Clock::TimePoint start = clock->Now();
    const Clock::TimePoint deadline = start + s.hard_timeout;
    return flights.Do(key, deadline, [&] { return Fetch(key, loader, s, stale, start, deadline); });
  }
};

}  // namespace tiercache

#endif  // TIERCACHE_CORE_CACHE_IMPL_H_
