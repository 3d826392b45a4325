#include "tiercache/cache.h"

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

L1Cache* Cache::l1() const { return impl_->l1.get(); }

Result<CachedValue> Cache::get(std::string_view key, const Loader& loader, const GetOptions& options) {
  return impl_->Get(key, loader, options);
}

std::future<Result<CachedValue>> Cache::get_async(std::string key, Loader loader, GetOptions options) {
  auto promise = std::make_shared<std::promise<Result<CachedValue>>>();
  std::future<Result<CachedValue>> future = promise->get_future();
  Result<CallSettings> settings = ResolveCallSettings(impl_->o, options);
  Status bad = impl_->CheckKey(key);
  if (!bad.ok() || !settings.ok()) {
    promise->set_value(bad.ok() ? settings.status() : bad);
    return future;
  }
  const CallSettings s = *settings;
  std::optional<CachedValue> stale;
  if (std::optional<CachedValue> hit = impl_->ReadL1(key, s, &stale)) {
    impl_->MaybeRefreshEarly(key, *hit, loader, s);
    promise->set_value(std::move(*hit));
    return future;
  }
  Impl* impl = impl_.get();
  Status submitted = impl->async->Submit([impl, promise, key, loader, s, stale](bool cancelled) {
    if (cancelled) {
      promise->set_value(Status::Cancelled("cache destroyed before the get ran"));
    } else {
      promise->set_value(impl->AfterL1Miss(key, loader, s, stale));
    }
  });
  if (!submitted.ok()) promise->set_value(submitted);
  return future;
}

}  // namespace tiercache
