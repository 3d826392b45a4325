// Cache::InvalidateMany on the real cluster: one script per slot group,
// versions never regress whatever the order or the repetitions, the floor
// outlives evicted entries, and each key's result says applied or ignored.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common/test_env.h"
#include "redis/redis_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using R = Cache::InvalidationResult;

class InvalidateManyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    Result<std::unique_ptr<redis::RedisClient>> c = redis::RedisClient::Create(redis::testing::ClusterOptions());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::shared_ptr<redis::RedisClient>(std::move(*c));
    CacheOptions o;
    o.l2 = MakeRedisL2Store(client_);
    o.ttl_jitter = 0;
    Result<std::unique_ptr<Cache>> cache = Cache::Create(o);
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    cache_ = std::move(*cache);
    tag_ = std::to_string(std::mt19937_64(std::random_device{}())() % 1000000000000ULL);
  }

  // The tombstone's (or entry's) version in Redis, or -1.
  int64_t StoredVersion(const std::string& key) {
    Result<std::optional<std::string>> raw = client_->Get(key);
    if (!raw.ok() || !raw->has_value()) return -1;
    Result<EnvelopeView> e = DecodeEnvelope(**raw);
    return e.ok() ? static_cast<int64_t>(e->version) : -1;
  }
  bool IsTombstone(const std::string& key) {
    Result<std::optional<std::string>> raw = client_->Get(key);
    if (!raw.ok() || !raw->has_value()) return false;
    Result<EnvelopeView> e = DecodeEnvelope(**raw);
    return e.ok() && e->kind == EntryKind::kTombstone;
  }

  std::shared_ptr<redis::RedisClient> client_;
  std::unique_ptr<Cache> cache_;
  std::string tag_;
};

TEST_F(InvalidateManyTest, ManyKeysAcrossSlotsAreAppliedInOneCall) {
  std::vector<Cache::Invalidation> list;
  for (int community = 0; community < 20; ++community) {
    for (int post = 0; post < 10; ++post) {
      list.push_back({"post:{c" + tag_ + ":" + std::to_string(community) + "}:" + std::to_string(post),
                      static_cast<uint64_t>(post + 1)});
    }
  }
  std::vector<Result<R>> r = cache_->InvalidateMany(list);
  ASSERT_EQ(r.size(), list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    SCOPED_TRACE(list[i].key);
    ASSERT_TRUE(r[i].ok()) << r[i].status().ToString();
    EXPECT_EQ(*r[i], R::kApplied);
    EXPECT_TRUE(IsTombstone(list[i].key));
    EXPECT_EQ(StoredVersion(list[i].key), static_cast<int64_t>(list[i].version));
  }
}

// v3, v2, v3, v1 in every order, with duplicates, in one batch or one by
// one: the tombstone ends at v3 and never regresses; only the first v3 applies.
TEST_F(InvalidateManyTest, ReorderedAndRedeliveredVersionsNeverRegress) {
  std::vector<uint64_t> order = {1, 2, 3, 3};
  int run = 0;
  do {
    for (bool one_batch : {true, false}) {
      const std::string key = "post:{c" + tag_ + "}:" + std::to_string(run++);
      SCOPED_TRACE(key);
      std::vector<Result<R>> results;
      if (one_batch) {
        std::vector<Cache::Invalidation> list;
        for (uint64_t v : order) list.push_back({key, v});
        results = cache_->InvalidateMany(list);
      } else {
        for (uint64_t v : order) results.push_back(cache_->InvalidateMany({{key, v}})[0]);
      }
      uint64_t highest = 0;
      for (size_t i = 0; i < order.size(); ++i) {
        ASSERT_TRUE(results[i].ok()) << results[i].status().ToString();
        EXPECT_EQ(*results[i], order[i] > highest ? R::kApplied : R::kIgnored) << "event v" << order[i];
        highest = std::max(highest, order[i]);
      }
      EXPECT_EQ(StoredVersion(key), 3);
    }
  } while (std::next_permutation(order.begin(), order.end()));
}

// The floor: an invalidation over a newer stored entry drops nothing but is
// remembered, so when that entry is evicted an older event still changes
// nothing and a load of an older version is still refused.
TEST_F(InvalidateManyTest, TheFloorOutlivesAnEvictedEntry) {
  const std::string key = "post:{c" + tag_ + "}:floor";
  // Filled by a load (a fill raises no floor; only invalidations and
  // write-throughs do).
  ASSERT_TRUE(cache_->Get(key, [](std::string_view) -> Result<LoadResult> {
                      return LoadResult{std::string("v5"), 5};
                    }).ok());
  ASSERT_EQ(StoredVersion(key), 5);
  std::vector<Result<R>> r = cache_->InvalidateMany({{key, 4}, {key, 5}});
  ASSERT_TRUE(r[0].ok() && r[1].ok());
  EXPECT_EQ(*r[0], R::kIgnored);
  EXPECT_EQ(*r[1], R::kIgnored);
  ASSERT_TRUE(client_->Del({key}).ok());  // evicted
  r = cache_->InvalidateMany({{key, 3}, {key, 4}});
  EXPECT_EQ(*r[0], R::kIgnored) << "older than the floor";
  EXPECT_EQ(*r[1], R::kIgnored);
  EXPECT_EQ(StoredVersion(key), -1) << "nothing was written";
  // A load that read version 4 (say from a lagging replica) is refused.
  Result<CachedValue> v = cache_->Get(key, [](std::string_view) -> Result<LoadResult> {
    return LoadResult{std::string("v4"), 4};
  });
  EXPECT_FALSE(v.ok() && v->version() == 4u) << "an older version than an applied invalidation was served";
  EXPECT_EQ(StoredVersion(key), -1);
  // A redelivery of the floor's version with the entry gone: nothing either.
  r = cache_->InvalidateMany({{key, 5}});
  EXPECT_EQ(*r[0], R::kIgnored);
  EXPECT_EQ(StoredVersion(key), -1);
  r = cache_->InvalidateMany({{key, 6}});
  EXPECT_EQ(*r[0], R::kApplied);
  EXPECT_EQ(StoredVersion(key), 6);
}

TEST_F(InvalidateManyTest, BadKeysFailAloneAndUnversionedAlwaysApplies) {
  const std::string good = "post:{c" + tag_ + "}:ok";
  std::vector<Result<R>> r = cache_->InvalidateMany({{"", 1}, {good, 0}, {good + ":lease", 1}, {good, 0}});
  ASSERT_EQ(r.size(), 4u);
  EXPECT_TRUE(r[0].status().IsInvalidArgument());
  EXPECT_TRUE(r[1].ok() && *r[1] == R::kApplied);
  EXPECT_TRUE(r[2].status().IsInvalidArgument());
  EXPECT_TRUE(r[3].ok() && *r[3] == R::kApplied) << "unversioned invalidations always apply";
  EXPECT_TRUE(IsTombstone(good));
}

// This pod's L1 drops the keys too.
TEST_F(InvalidateManyTest, ThisPodsL1DropsTheKeys) {
  const std::string key = "post:{c" + tag_ + "}:l1";
  Result<CachedValue> v = cache_->Get(key, [](std::string_view) -> Result<LoadResult> {
    return LoadResult{std::string("v1"), 1};
  });
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(cache_->l1()->Get(key).ok() && cache_->l1()->Get(key)->has_value());
  std::vector<Result<R>> r = cache_->InvalidateMany({{key, 2}});
  ASSERT_TRUE(r[0].ok());
  Result<std::optional<L1Entry>> after = cache_->l1()->Get(key);
  EXPECT_TRUE(after.ok() && !after->has_value()) << "L1 still holds v1";
}

}  // namespace
}  // namespace tiercache
