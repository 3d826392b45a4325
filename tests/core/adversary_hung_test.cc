// Regression tests: each reproduces a defect an adversarial review found
// (its comment tells the defect); each failed before its fix.
// Adversarial review: "a hung loader holds at most one thread per key"
// (docs/consistency.md Liveness: at most two loads of one key at once).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "core/load_registry.h"
#include "tiercache/cache.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;

struct HungSource {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  std::atomic<int> running{0}, max_running{0}, started{0};
  Loader Get() {
    return [this](std::string_view) -> Result<LoadResult> {
      started.fetch_add(1);
      int now = running.fetch_add(1) + 1;
      int m = max_running.load();
      while (now > m && !max_running.compare_exchange_weak(m, now)) {
      }
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return open; });
      running.fetch_sub(1);
      return LoadResult{std::string("late"), std::nullopt};
    };
  }
  void Open() {
    std::lock_guard<std::mutex> l(mu);
    open = true;
    cv.notify_all();
  }
};

CacheOptions Options(std::shared_ptr<L2Store> l2) {
  CacheOptions o;
  o.l2 = std::move(l2);
  o.ttl_jitter = 0;
  o.early_refresh_beta = 0;
  o.hard_timeout = 100ms;
  o.soft_timeout = 50ms;
  o.lease.max_wait = 20ms;
  o.lease.poll_min = 1ms;
  o.lease.poll_max = 5ms;
  o.loader_threads = 2;
  o.max_hung_loads = 1;
  return o;
}

// One key's source hangs. Writes to that row keep arriving, so this pod
// invalidates it now and then, and readers keep asking. A Get after a local
// invalidation cannot join the hung load (it began before the invalidation),
// so it waits out the lease and starts another load; that one hangs too.
// Without a cap, loader_threads + max_hung_loads invalidations filled the
// pool with one key's loads and every other key's get timed out. The
// LoadRegistry caps loads of one key at kMaxLoadsPerKey (the newest and one
// superseded).
TEST(AdversaryHung, InvalidationsOfAHungKeyDoNotMultiplyItsLoadsOrStarveOtherKeys) {
  HungSource src;
  auto l2 = MakeInMemoryL2Store();
  auto made = Cache::Create(Options(l2));
  ASSERT_TRUE(made.ok());
  std::unique_ptr<Cache> cache = std::move(*made);
  const std::string key = "hung:row";
  EXPECT_FALSE(cache->Get(key, src.Get()).ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(cache->Invalidate(key).ok());
    EXPECT_FALSE(cache->Get(key, src.Get()).ok());
  }
  std::this_thread::sleep_for(150ms);  // the executor's monitor marks them overdue
  Result<CachedValue> other = cache->Get("other:row", [](std::string_view) -> Result<LoadResult> {
    return LoadResult{std::string("fine"), std::nullopt};
  });
  const int max_running = src.max_running.load();
  const int started = src.started.load();
  src.Open();
  EXPECT_LE(max_running, LoadRegistry::kMaxLoadsPerKey)
      << "loads of ONE hung key running at once (started " << started << ")";
  EXPECT_TRUE(other.ok()) << "another key's get: " << other.status().ToString();
}

// The local epoch is a stripe shared by unrelated keys (local_fence.h,
// 4096 stripes): invalidating an unrelated key that shares the stripe also
// makes the next get of the hung key start another load of it; the cap
// bounds those too.
TEST(AdversaryHung, InvalidatingAnUnrelatedKeyStartsASecondLoadOfAHungKey) {
  HungSource src;
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = Options(l2);
  o.loader_threads = 4;
  auto made = Cache::Create(o);
  ASSERT_TRUE(made.ok());
  std::unique_ptr<Cache> cache = std::move(*made);
  const std::string key = "hung:row";
  const size_t stripe = std::hash<std::string_view>{}(key) % 4096;
  std::string neighbour;
  for (int n = 0;; ++n) {
    neighbour = "unrelated:" + std::to_string(n);
    if (std::hash<std::string_view>{}(neighbour) % 4096 == stripe) break;
  }
  EXPECT_FALSE(cache->Get(key, src.Get()).ok());
  ASSERT_TRUE(cache->Invalidate(neighbour).ok());
  EXPECT_FALSE(cache->Get(key, src.Get()).ok());
  const int max_running = src.max_running.load();
  src.Open();
  EXPECT_LE(max_running, LoadRegistry::kMaxLoadsPerKey)
      << "invalidating '" << neighbour << "' piled up loads of '" << key << "'";
}

}  // namespace
}  // namespace tiercache
