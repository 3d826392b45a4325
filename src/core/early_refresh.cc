// XFetch early refresh: a fresh value near its expiry is reloaded in the
// background, under the lease, while callers keep getting it at hit latency.
#include <random>

#include "core/cache_impl.h"
#include "core/xfetch.h"

namespace tiercache {

using std::chrono::nanoseconds;
using cache_internal::L2Read;
using cache_internal::LoadTicket;

namespace {

// u uniform in (0, 1].
double UniformOpenZero() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return 1.0 - std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

}  // namespace

void Cache::Impl::MaybeRefreshEarly(std::string_view key, const CachedValue& v, const Loader& loader,
                                    const CallSettings& s) {
  if (!loader || !v.envelope_ || s.beta <= 0) return;
  // Far from its logical expiry no draw can refresh (now - δβ ln u < expiry
  // for every u; -ln u <= kMaxMinusLnU for every u UniformOpenZero returns).
  // An L1 hit on one of FillL1's copies decides it with no clock read at all
  // (FarFromEarlyRefresh, which Get() asks before calling this); here, on
  // the coarse wall clock (never ahead of the wall clock, behind it by at
  // most kCoarseLag), without the precise reading and the draw. A huge or
  // NaN reach fails the test and draws as before.
  const double reach_ns = static_cast<double>(nanoseconds(v.load_duration_).count()) * s.beta * kMaxMinusLnU;
  const WallTime latest_now = clock_->CoarseWallNow() + std::chrono::duration_cast<WallTime::duration>(Clock::kCoarseLag);
  if (v.expires_at_ > latest_now &&
      static_cast<double>(std::chrono::duration_cast<nanoseconds>(v.expires_at_ - latest_now).count()) > reach_ns) {
    return;
  }
  if (!XFetchShouldRefresh(clock_->WallNow(), v.expires_at_, nanoseconds(v.load_duration_), s.beta,
                           UniformOpenZero())) {
    return;
  }
  Call call{std::string(key), loader, s, clock_->Now(), Clock::TimePoint::max()};  // deadline: set when it runs
  {
    std::lock_guard<std::mutex> lock(refresh_mu_);
    if (!refreshing_.insert(call.key).second) return;  // one refresh per key per process
  }
  const WallTime seen_expiry = v.expires_at_;
  Status submitted = loaders_->Submit([this, call, seen_expiry](bool cancelled) {
    if (!cancelled) RefreshNow(call, seen_expiry);
    std::lock_guard<std::mutex> lock(refresh_mu_);
    refreshing_.erase(call.key);
  });
  if (!submitted.ok()) {
    std::lock_guard<std::mutex> lock(refresh_mu_);
    refreshing_.erase(call.key);
  }
}

void Cache::Impl::RefreshNow(const Call& queued, WallTime seen_expiry) {
  if (running_.Running(queued.key)) return;  // a load of the key is already on its way
  Call call = queued;
  call.start = clock_->Now();
  call.deadline = call.start + o_.l2_timeout;  // for the lease call; the load itself is not bounded
  LoadTicket ticket;
  ticket.local_epoch = LocalEpoch(call.key, call.settings);
  ticket.taken = clock_->Now();
  if (!o_.l2) {
    ticket.l2_absent = true;
  } else {
    const std::string token = cache_internal::NewToken();
    Result<LeaseOutcome> lease = AcquireLease(call, token);
    if (!lease.ok() || !lease->won) return;  // another pod refreshes (or L2 is down)
    L2Read now = Interpret(call.key, std::move(lease->value), lease->fence.group_generation, call.settings,
                           ticket.local_epoch, /*count_misses=*/false);
    if (now.fresh && now.fresh->expires_at_ > seen_expiry) {  // refreshed meanwhile
      ReleaseLease(call.key, token);
      return;
    }
    ticket.fence = std::move(lease->fence);
    ticket.has_fence = true;
    ticket.lease_token = token;
  }
  metrics_->Add(Counter::kEarlyRefresh, Tier::kLoader);
  // Runs here, on this loader thread, but registered, so gets of the key
  // join it instead of loading again.
  auto [load, fresh] = running_.Join(call.key, ticket.local_epoch);
  if (!fresh) {  // running already (or too many loads of it are)
    ReleaseLease(call.key, ticket.lease_token);
    return;
  }
  if (keeper_ && !ticket.lease_token.empty()) {
    keeper_->Add(ticket.lease_token, call.key, std::chrono::steady_clock::now() + o_.max_load_age);
  }
  Result<CachedValue> r = LoadAndFill(call, ticket);
  if (keeper_ && !ticket.lease_token.empty()) keeper_->Remove(ticket.lease_token);
  running_.Finish(call.key, load, std::move(r));
}

}  // namespace tiercache
