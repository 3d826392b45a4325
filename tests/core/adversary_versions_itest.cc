// Regression tests: each reproduces a defect an adversarial review found
// (its comment tells the defect); each failed before its fix.
// Adversarial review, on the real Redis Cluster (the Lua scripts): the
// version findings of adversary_versions_test.cc.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "common/test_env.h"
#include "redis/redis_test_util.h"
#include "core/cache_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;

std::string Tag() { return ::tiercache::testing::UniqueTag(); }

using ::tiercache::testing::Describe;

class AdversaryVersionsCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    auto c = redis::RedisClient::Create(redis::testing::ClusterOptions());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::shared_ptr<redis::RedisClient>(std::move(*c));
  }
  std::unique_ptr<Cache> Make() {
    CacheOptions o;
    o.l2 = MakeRedisL2Store(client_);
    o.ttl_jitter = 0;
    o.early_refresh_beta = 0;
    auto c = Cache::Create(o);
    EXPECT_TRUE(c.ok());
    return c.ok() ? std::move(*c) : nullptr;
  }
  std::shared_ptr<redis::RedisClient> client_;
};

TEST_F(AdversaryVersionsCluster, DeletedRowInvalidatedWithItsVersionReadsAsNotFound) {
  auto a = Make();
  auto b = Make();
  ASSERT_TRUE(a && b);
  const std::string key = "adv:{" + Tag() + "}:deleted";
  ASSERT_TRUE(a->Get(key, [](std::string_view) -> Result<LoadResult> {
                 return LoadResult{std::string("body"), 4};
               }).ok());
  ASSERT_TRUE(a->Invalidate(key, 5).ok());
  Result<CachedValue> v = b->Get(key, [](std::string_view) -> Result<LoadResult> {
    return LoadResult{std::nullopt, std::nullopt};
  });
  EXPECT_TRUE(v.ok() && !v->found()) << Describe(v);
}

// The no-op invalidation (stored version >= v) replaces no epoch but raises
// the floor; the value key is then evicted (simulated with DEL:
// docs/consistency.md requires only fence keys and tombstones to be kept from
// eviction), and the older load in flight must still be refused.
TEST_F(AdversaryVersionsCluster, NoOpVersionedInvalidateThenEvictionLetsAnOlderLoadIn) {
  auto a = Make();
  auto b = Make();
  auto c = Make();
  ASSERT_TRUE(a && b && c);
  const std::string key = "adv:{" + Tag() + "}:noop";
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, open = false;
  Loader slow_v4 = [&](std::string_view) -> Result<LoadResult> {
    std::unique_lock<std::mutex> l(mu);
    entered = true;
    cv.notify_all();
    cv.wait(l, [&] { return open; });
    return LoadResult{std::string("v4"), 4};
  };
  std::thread pod_a([&] { (void)a->Get(key, slow_v4); });
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return entered; });
  }
  auto many = b->GetMany({key}, [](const std::vector<std::string>&) -> Result<std::vector<LoadResult>> {
    return std::vector<LoadResult>{LoadResult{std::string("v5"), 5}};
  });
  ASSERT_TRUE(many.ok() && (*many)[0].ok() && (*many)[0]->version() == 5);
  ASSERT_TRUE(c->Invalidate(key, 5).ok());  // a no-op: L2 holds 5
  ASSERT_TRUE(client_->Del({key}).ok());    // the value key is evicted
  {
    std::lock_guard<std::mutex> l(mu);
    open = true;
    cv.notify_all();
  }
  pod_a.join();
  for (int i = 0; i < 200; ++i) {
    auto raw = client_->Get(key);
    if (raw.ok() && raw->has_value()) break;
    std::this_thread::sleep_for(5ms);
  }
  Result<CachedValue> v = c->Get(key, [](std::string_view) -> Result<LoadResult> {
    return Status::Unavailable("source down");
  });
  EXPECT_FALSE(v.ok() && v->found() && v->version() < 5)
      << "after Invalidate(key, 5) returned, pod C got " << Describe(v);
}

}  // namespace
}  // namespace tiercache
