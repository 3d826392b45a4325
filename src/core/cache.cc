#include "tiercache/cache.h"

#include <atomic>
#include <cassert>

#include "core/cache_impl.h"

namespace tiercache {

// ---- Cache ------------------------------------------------------------------

Result<std::unique_ptr<Cache>> Cache::Create(CacheOptions options) {
  TIERCACHE_RETURN_IF_ERROR(ValidateCacheOptions(options));
  std::unique_ptr<L1Cache> l1;
  if (options.use_l1) {
    L1Options l1o = options.l1;
    l1o.clock = options.clock;
    l1o.max_stale = std::max(l1o.max_stale, Clock::Duration(options.max_stale));
    Result<std::unique_ptr<L1Cache>> made = L1Cache::Create(l1o);
    if (!made.ok()) return Status::InvalidArgument("l1: " + std::string(made.status().message()));
    l1 = std::move(*made);
  }
  return std::unique_ptr<Cache>(new Cache(std::make_unique<Impl>(std::move(options), std::move(l1))));
}

Cache::Cache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Cache::~Cache() = default;

L1Cache* Cache::l1() const { return impl_->l1(); }

// Cache::Get: read_path.cc.

std::future<Result<CachedValue>> Cache::GetAsync(std::string key, Loader loader, GetOptions options) {
  return impl_->GetAsync(std::move(key), std::move(loader), options);
}

Result<std::vector<Result<CachedValue>>> Cache::GetMany(const std::vector<std::string>& keys,
                                                        const BatchLoader& loader, const GetOptions& options) {
  return impl_->GetMany(keys, loader, options);
}

Status Cache::Set(std::string_view key, std::string_view payload, std::optional<uint64_t> version,
                  const GetOptions& options) {
  return impl_->Set(key, payload, version, options);
}

Status Cache::Invalidate(std::string_view key, std::optional<uint64_t> version) {
  return impl_->Invalidate(key, version);
}

std::vector<Result<Cache::InvalidationResult>> Cache::InvalidateMany(const std::vector<Invalidation>& invalidations) {
  return impl_->InvalidateMany(invalidations);
}

Result<uint64_t> Cache::InvalidateGroup(std::string_view group, std::optional<uint64_t> version) {
  return impl_->InvalidateGroup(group, version);
}
Status Cache::InvalidateLocal(std::string_view key, uint64_t version) { return impl_->InvalidateLocal(key, version); }
void Cache::FenceL1(bool drop) { impl_->FenceL1(drop); }
void Cache::TrustL1() { impl_->TrustL1(); }
bool Cache::l1_trusted() const { return impl_->l1_trusted(); }

// ---- Cache::Impl ------------------------------------------------------------

Cache::Impl::Impl(CacheOptions options, std::unique_ptr<L1Cache> l1)
    : o_(std::move(options)),
      clock_(o_.clock ? o_.clock : Clock::Real()),
      metrics_(o_.metrics ? o_.metrics : Metrics::Noop()),
      metrics_on_(metrics_ != Metrics::Noop()),
      l1_(std::move(l1)),
      guard_({o_.breaker_failure_threshold, o_.breaker_open_duration}, o_.l2_timeout, clock_, metrics_),
      flights_(clock_) {
  // Create() validated the options, so the defaults resolve.
  Result<CallSettings> defaults = ResolveCallSettings(o_, GetOptions());
  assert(defaults.ok());
  if (defaults.ok()) default_settings_ = std::move(*defaults);
  ExecutorOptions eo;
  eo.threads = o_.loader_threads;
  eo.queue_capacity = o_.loader_queue;
  eo.overdue_after = o_.hard_timeout;
  eo.max_overdue = o_.max_hung_loads;
  loaders_ = std::make_unique<BoundedExecutor>(eo);
  async_ = std::make_unique<BoundedExecutor>(o_.async_threads, o_.async_queue);
  // A deadline per call queued or running, and calls whose task has ended
  // but not yet cancelled its timer: twice the pool's room is ample.
  timer_ = std::make_unique<DeadlineTimer>(2 * (o_.async_queue + o_.async_threads));
  if (o_.l2) {
    keeper_ = std::make_unique<LeaseKeeper>(
        std::max(milliseconds(1), o_.lease.ttl / 3), [this](const std::string& key, const std::string& token) {
          guard_.Run(ShardOf(key), clock_->Now() + o_.l2_timeout, [&](milliseconds dl) {
            return o_.l2->ExtendLease(key, token, o_.lease.ttl, dl);
          }).status().IgnoreError();  // a lease that cannot be extended simply expires
        },
        [this](const std::string& key, const std::string& token) {
          guard_.Run(ShardOf(key), clock_->Now() + o_.l2_timeout, [&](milliseconds dl) {
            return o_.l2->ReleaseLease(key, token, dl);
          }).status().IgnoreError();  // at worst the lease expires by itself
        });
  }
}

Cache::Impl::~Impl() {
  running_.Stop();       // gets waiting for room to load a key give up now
  timer_->Stop();        // no deadline fires into a cache being torn down
  async_->Shutdown();    // its tasks may still submit loads: stop it first
  loaders_->Shutdown();  // running loads finish (and unregister their leases)
  if (keeper_) keeper_->Stop();
}

Result<const CallSettings*> Cache::Impl::Settings(const GetOptions& g, CallSettings* storage) const {
  static const GetOptions kNoOverride;
  if (g == kNoOverride) return &default_settings_;  // every field, also one added later
  Result<CallSettings> s = ResolveCallSettings(o_, g);
  if (!s.ok()) return s.status();
  *storage = std::move(*s);
  return storage;
}

std::future<Result<CachedValue>> Cache::Impl::GetAsync(std::string key, Loader loader, const GetOptions& g) {
  auto promise = std::make_shared<std::promise<Result<CachedValue>>>();
  std::future<Result<CachedValue>> future = promise->get_future();
  Result<CallSettings> settings = ResolveCallSettings(o_, g);
  Status bad = CheckKey(key);
  if (bad.ok() && settings.ok()) bad = CheckMember(key, *settings);
  if (!bad.ok() || !settings.ok()) {
    promise->set_value(bad.ok() ? settings.status() : bad);
    return future;
  }
  const CallSettings s = *settings;
  std::optional<CachedValue> stale;
  if (std::optional<CachedValue> hit = ReadL1(key, s, &stale)) {
    MaybeRefreshEarly(key, *hit, loader, s);
    promise->set_value(std::move(*hit));
    return future;
  }
  // The deadline counts from this call, not from when a thread takes it up:
  // a timer completes the future at the deadline if the call is still
  // queued or running then (the call itself goes on and its result is
  // dropped).
  const Clock::TimePoint start = clock_->Now();
  Call call{std::move(key), std::move(loader), s, start, start + s.hard_timeout};
  struct Once {
    std::promise<Result<CachedValue>> promise;
    std::atomic<bool> done{false};
    std::atomic<uint64_t> timer{0};
    void Complete(Result<CachedValue> r) {
      if (!done.exchange(true)) promise.set_value(std::move(r));
    }
  };
  auto once = std::make_shared<Once>();
  future = once->promise.get_future();
  const std::string what = "get of '" + call.key + "' did not finish within the hard timeout";
  // The L1 stale copy is not served at the deadline: it was never checked
  // against L2 (it may have been invalidated since; BestStale), and there is
  // no time left to check it.
  once->timer = timer_->Schedule(std::chrono::steady_clock::now() + (call.deadline - start),
                                [once, what] { once->Complete(Status::DeadlineExceeded(what)); });
  if (once->timer == 0) {  // only when the async pool is full anyway
    once->Complete(Status::ResourceExhausted("too many GetAsync calls in flight"));
    return future;
  }
  Status submitted = async_->Submit([this, once, call, stale](bool cancelled) {
    if (cancelled) {
      once->Complete(Status::Cancelled("cache destroyed before the get ran"));
    } else if (clock_->Now() >= call.deadline) {
      once->Complete(Status::DeadlineExceeded("get of '" + call.key + "' queued past its deadline"));
    } else {
      once->Complete(AfterL1Miss(call, stale));
    }
    timer_->Cancel(once->timer);
  });
  if (!submitted.ok()) {
    timer_->Cancel(once->timer);
    once->Complete(submitted);
  }
  return future;
}

}  // namespace tiercache
