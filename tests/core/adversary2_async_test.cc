// Regression tests: each reproduces a defect an adversarial review found
// (its comment tells the defect); each failed before its fix.
// Adversarial review 2 (of d2030a5): GetAsync's deadline timer.
// docs/consistency.md "Liveness": "GetAsync's future completes by its hard
// timeout counted from the call, also while the call still waits in the
// async queue behind slower ones (a timer completes it)". The timer holds at
// most 65536 pending deadlines (cache_impl.h) and Schedule() refuses more
// silently, but async_queue is validated only >= 1: with a larger queue, a
// call beyond the timer's capacity has no timer and waits in the queue.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <vector>

#include "tiercache/cache.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;

TEST(Adversary2Async, DeadlineHoldsWhenMoreCallsAreQueuedThanTheTimerHolds) {
  CacheOptions o;
  o.l2 = MakeInMemoryL2Store();
  o.ttl_jitter = 0;
  o.early_refresh_beta = 0;
  o.async_threads = 1;
  o.async_queue = 70000;
  o.hard_timeout = 3000ms;
  o.soft_timeout = 3000ms;
  o.max_load_age = 3000ms;
  auto made = Cache::Create(o);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  std::unique_ptr<Cache> cache = std::move(*made);

  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  Loader hung = [&](std::string_view) -> Result<LoadResult> {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return open; });
    return LoadResult{std::string("v"), 1};
  };
  std::vector<std::future<Result<CachedValue>>> slow;
  slow.reserve(65536);
  for (int i = 0; i < 65536; ++i) slow.push_back(cache->GetAsync("hung", hung));  // 3 s each
  GetOptions quick;
  quick.hard_timeout = 100ms;
  quick.soft_timeout = 100ms;
  const auto t0 = std::chrono::steady_clock::now();
  std::future<Result<CachedValue>> f = cache->GetAsync("other", hung, quick);
  const std::future_status st = f.wait_for(1000ms);
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  EXPECT_EQ(st, std::future_status::ready)
      << "a GetAsync with a 100 ms hard timeout was not complete after " << waited.count() << " ms";
  {
    std::lock_guard<std::mutex> l(mu);
    open = true;
  }
  cv.notify_all();
  f.wait();
  for (auto& s : slow) s.wait();
}

}  // namespace
}  // namespace tiercache
