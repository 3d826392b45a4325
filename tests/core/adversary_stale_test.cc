// Regression tests: each reproduces a defect an adversarial review found
// (its comment tells the defect); each failed before its fix.
// Adversarial review: the stale-serving paths and GetAsync's deadline.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "core/cache_test_util.h"
#include "tiercache/cache.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;

CacheOptions Base(std::shared_ptr<L2Store> l2, Clock* clock = nullptr) {
  CacheOptions o;
  o.l2 = std::move(l2);
  o.clock = clock;
  o.ttl_jitter = 0;
  o.early_refresh_beta = 0;
  o.l1.default_ttl = 10s;
  return o;
}

using ::tiercache::testing::Describe;

// docs/consistency.md §2: "What is known to be invalidated is never served,
// not even as a fail-safe stale value." A get holding a stale copy wins the
// lease and loads; another pod invalidates during the load; the fill is
// refused, LoadAndFill re-reads L2 and sees the tombstone, reloads, and the
// reload fails. WaitFor once served the stale copy the tombstone superseded,
// after Invalidate returned; a load the fence refused now ends in kAborted,
// which never falls back to a stale copy.
TEST(AdversaryStale, StaleCopyIsNotServedAfterTheLoadSawItsTombstone) {
  FakeClock clock;
  auto l2 = MakeInMemoryL2Store(&clock);
  auto a = Cache::Create(Base(l2, &clock));
  auto b = Cache::Create(Base(l2, &clock));
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string key = "row:stale";
  GetOptions short_ttl;
  short_ttl.ttl = 1s;
  ASSERT_TRUE((*a)->Get(key, [](std::string_view) -> Result<LoadResult> {
                      return LoadResult{std::string("old"), std::nullopt};
                    }, short_ttl).ok());
  clock.Advance(2s);  // expired, well within max_stale

  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, open = false;
  std::atomic<int> calls{0};
  Loader loader = [&](std::string_view) -> Result<LoadResult> {
    if (calls.fetch_add(1) == 0) {
      std::unique_lock<std::mutex> l(mu);
      entered = true;
      cv.notify_all();
      cv.wait(l, [&] { return open; });
      return LoadResult{std::string("read-before-invalidation"), std::nullopt};
    }
    return Status::Unavailable("source brownout");
  };
  Result<CachedValue> got = Status::Internal("not run");
  std::thread pod_a([&] { got = (*a)->Get(key, loader); });
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return entered; });
  }
  ASSERT_TRUE((*b)->Invalidate(key).ok());
  {
    std::lock_guard<std::mutex> l(mu);
    open = true;
    cv.notify_all();
  }
  pod_a.join();
  EXPECT_EQ(calls.load(), 2);
  EXPECT_FALSE(got.ok() && got->found() && got->payload() == "old")
      << "served after the load saw the tombstone: " << Describe(got);
}

// cache.h GetAsync: "The hard timeout counts from this call". A get with a
// short per-call hard timeout queued behind one with a long one once
// completed only when the async thread was free, past its deadline; a timer
// now completes it at the deadline.
TEST(AdversaryStale, GetAsyncWithAShortDeadlineIsNotHeldByALongerOne) {
  CacheOptions o = Base(MakeInMemoryL2Store());
  o.async_threads = 1;
  o.hard_timeout = 2s;
  o.soft_timeout = 2s;
  auto made = Cache::Create(o);
  ASSERT_TRUE(made.ok());
  std::unique_ptr<Cache> cache = std::move(*made);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  Loader slow = [released](std::string_view k) -> Result<LoadResult> {
    released.wait_for(3s);
    return LoadResult{std::string(k), std::nullopt};
  };
  auto long_one = cache->GetAsync("async:long", slow);
  GetOptions quick;
  quick.hard_timeout = 50ms;
  quick.soft_timeout = 50ms;
  const auto t0 = std::chrono::steady_clock::now();
  auto short_one = cache->GetAsync("async:short", slow, quick);
  const bool ready = short_one.wait_until(t0 + 300ms) == std::future_status::ready;
  const auto waited = std::chrono::steady_clock::now() - t0;
  release.set_value();
  EXPECT_TRUE(ready) << "GetAsync with a 50 ms hard timeout still pending after "
                     << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() << " ms";
  (void)long_one.get();
  (void)short_one.get();
}

}  // namespace
}  // namespace tiercache
