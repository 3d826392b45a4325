// L2 reads respect what this pod has seen (docs/consistency.md §3c), on the
// real cluster (RedisL2Store, the Lua scripts): the Redis-failover drill,
// with L2 made to miss the invalidation by never sending it
// (InvalidateLocal only: the follower saw the event, the consumer's apply
// failed), or by writing the old envelope back and dropping the fence (the
// new master never received the tombstone); and a group whose move failed
// on this pod (poisoned) or that L2 lost (its generation written back).
// The same rules over the in-memory store: tests/core/l2_behind_test.cc.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/forwarding_l2_store.h"
#include "common/test_env.h"
#include "core/cache_test_util.h"
#include "redis/redis_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"
#include "tiercache/metrics.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using testing::Describe;

// Group moves fail, as they do while the group's slot has no master.
class FailsGroupMoves : public testing::ForwardingL2Store {
 public:
  using ForwardingL2Store::ForwardingL2Store;
  std::vector<Result<FenceOutcome>> InvalidateMany(const std::vector<InvalidateRequest>& requests,
                                                   milliseconds fence_ttl, milliseconds timeout) override {
    if (failing) {
      return std::vector<Result<FenceOutcome>>(requests.size(), Status::Unavailable("slot has no master (test)"));
    }
    return inner_->InvalidateMany(requests, fence_ttl, timeout);
  }
  std::atomic<bool> failing{false};
};

class L2BehindClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    Result<std::unique_ptr<redis::RedisClient>> c = redis::RedisClient::Create(redis::testing::ClusterOptions());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::shared_ptr<redis::RedisClient>(std::move(*c));
    store_ = MakeRedisL2Store(client_);
    tag_ = testing::UniqueTag();
    group_ = "feed:{community:" + tag_ + "}";
  }

  std::unique_ptr<Cache> Make(std::shared_ptr<L2Store> l2 = nullptr, Metrics* metrics = nullptr) {
    CacheOptions o;
    o.l2 = l2 ? std::move(l2) : store_;
    o.ttl = 60s;
    o.l1.default_ttl = 60s;
    o.early_refresh_beta = 0;
    o.hard_timeout = 10s;
    o.soft_timeout = 10s;
    o.metrics = metrics;
    return testing::MakeCacheOrFail(o);
  }
  std::string Key() const { return "post:{" + tag_ + "}:42"; }
  std::string Page(int n) const { return group_ + ":page:" + std::to_string(n); }
  GetOptions InGroup() const {
    GetOptions g;
    g.group = group_;
    return g;
  }
  Loader SourceLoader() {
    return [this](std::string_view key) -> Result<LoadResult> {
      ++loads_;
      const uint64_t v = version_.load();
      return LoadResult{"v" + std::to_string(v) + " " + std::string(key), v};
    };
  }
  std::optional<std::string> Raw(const std::string& key) {
    Result<std::optional<std::string>> r = client_->Get(key);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::nullopt;
  }
  std::optional<uint64_t> L2Version(const std::string& key) {
    std::optional<std::string> raw = Raw(key);
    if (!raw) return std::nullopt;
    Result<EnvelopeView> e = DecodeEnvelope(*raw);
    return e.ok() ? std::optional<uint64_t>(e->version) : std::nullopt;
  }
  void Command(const std::vector<std::string>& args) {
    Result<redis::Reply> r = client_->Command(args);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  std::shared_ptr<redis::RedisClient> client_;
  std::shared_ptr<L2Store> store_;
  std::string tag_;
  std::string group_;
  std::atomic<uint64_t> version_{7};
  std::atomic<int> loads_{0};
};

// (a) The drill: L2 holds v7; the event (v8) reached the pod's follower
// (InvalidateLocal) but not L2 (the consumer's apply failed while the slot
// had no master). Get loads v8, and the fill script stores it over v7.
TEST_F(L2BehindClusterTest, AValueBelowTheLocalTombstoneIsNotServedFromL2) {
  CounterMetrics metrics;
  auto pod = Make(nullptr, &metrics);
  auto other = Make();
  ASSERT_EQ(other->Get(Key(), SourceLoader())->version(), 7u);
  ASSERT_EQ(pod->Get(Key(), SourceLoader())->source(), ValueSource::kL2);
  version_ = 8;
  ASSERT_TRUE(pod->InvalidateLocal(Key(), 8).ok());
  ASSERT_EQ(L2Version(Key()), std::optional<uint64_t>(7));

  Result<CachedValue> v = pod->Get(Key(), SourceLoader());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->version(), 8u) << "served " << Describe(v) << " although this pod saw version 8";
  EXPECT_EQ(v->source(), ValueSource::kLoader);
  EXPECT_EQ(L2Version(Key()), std::optional<uint64_t>(8));
  EXPECT_EQ(loads_, 2);
  EXPECT_EQ(metrics.snapshot().get(Counter::kL2BehindLocal, Tier::kL2), 1u);
  // GetMany, on a second key in the same state.
  const std::string key2 = "post:{" + tag_ + "}:43";
  version_ = 7;
  ASSERT_EQ(other->Get(key2, SourceLoader())->version(), 7u);
  version_ = 8;
  ASSERT_TRUE(pod->InvalidateLocal(key2, 8).ok());
  Result<std::vector<Result<CachedValue>>> many =
      pod->GetMany({key2}, [&](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
        std::vector<LoadResult> out;
        for (const std::string& k : keys) out.push_back(*SourceLoader()(k));
        return out;
      });
  ASSERT_TRUE(many.ok());
  EXPECT_EQ((*many)[0]->version(), 8u) << Describe((*many)[0]);
  EXPECT_EQ(L2Version(key2), std::optional<uint64_t>(8));
}

// (a) The invalidation reached the old master but the new one never got it
// (asynchronous replication): the old envelope is back and the fence gone.
// This pod invalidated the key itself; it does not serve the old value.
TEST_F(L2BehindClusterTest, AnInvalidationLostInAFailoverDoesNotLetTheOldValueBack) {
  auto pod = Make();
  auto unaware = Make();
  ASSERT_EQ(pod->Get(Key(), SourceLoader())->version(), 7u);
  const std::optional<std::string> old = Raw(Key());
  ASSERT_TRUE(old.has_value());
  version_ = 8;
  ASSERT_TRUE(pod->Invalidate(Key(), 8).ok());
  // The failover: the new master has the key as it was before.
  ASSERT_NO_FATAL_FAILURE(Command({"SET", Key(), *old, "PX", "120000"}));
  ASSERT_NO_FATAL_FAILURE(Command({"DEL", FenceKeyFor(Key())}));

  EXPECT_EQ(unaware->Get(Key(), SourceLoader())->version(), 7u)
      << "(the limit: a pod that has not seen the invalidation reads L2 as it is)";
  Result<CachedValue> v = pod->Get(Key(), SourceLoader());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->version(), 8u) << "served " << Describe(v) << " after invalidating version 8 itself";
  EXPECT_EQ(L2Version(Key()), std::optional<uint64_t>(8));
}

// (c) The pod's follower could not move the group (its slot had no master):
// the group is poisoned here. L2, back, still holds the page under the old
// generation: not served; the loader answers.
TEST_F(L2BehindClusterTest, AMemberOfAPoisonedGroupIsNotServedFromL2) {
  auto wrapped = std::make_shared<FailsGroupMoves>(store_);
  auto pod = Make(wrapped);
  auto other = Make();
  ASSERT_EQ(other->Get(Page(1), SourceLoader(), InGroup())->version(), 7u);
  ASSERT_EQ(pod->Get(Page(1), SourceLoader(), InGroup())->source(), ValueSource::kL2);
  const std::optional<std::string> generation = Raw(GroupKeyFor(group_));
  version_ = 8;
  wrapped->failing = true;
  EXPECT_FALSE(pod->InvalidateMany({{group_, 8, true, "post-edited-" + tag_}})[0].ok());
  wrapped->failing = false;
  ASSERT_EQ(Raw(GroupKeyFor(group_)), generation) << "the move must not have reached L2";

  Result<CachedValue> v = pod->Get(Page(1), SourceLoader(), InGroup());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->version(), 8u) << "served " << Describe(v) << " from a group whose move this pod saw fail";
  EXPECT_EQ(loads_, 2);
  // The consumer's retry lands: the group moves once for the event, and
  // this pod's own retry of it ends the poison.
  ASSERT_TRUE(other->InvalidateMany({{group_, 8, true, "post-edited-" + tag_}})[0].ok());
  ASSERT_TRUE(pod->InvalidateMany({{group_, 8, true, "post-edited-" + tag_}})[0].ok());
  ASSERT_EQ(other->Get(Page(1), SourceLoader(), InGroup())->version(), 8u);
  pod->l1()->Clear();
  Result<CachedValue> again = pod->Get(Page(1), SourceLoader(), InGroup());
  EXPECT_EQ(again->source(), ValueSource::kL2) << Describe(again);
  EXPECT_EQ(loads_, 3);
}

// (d) L2 lost the move: the generation (and recent events, floor) are back
// at what they were before it, so the old page is current in L2 again.
TEST_F(L2BehindClusterTest, AMemberBelowTheGenerationThisPodSawIsNotServedFromL2) {
  auto pod = Make();
  ASSERT_EQ(pod->Get(Page(1), SourceLoader(), InGroup())->version(), 7u);
  const std::optional<std::string> generation = Raw(GroupKeyFor(group_));
  ASSERT_TRUE(generation.has_value());
  version_ = 8;
  ASSERT_TRUE(pod->InvalidateMany({{group_, 8, true, "post-edited-" + tag_}})[0].ok());
  ASSERT_NO_FATAL_FAILURE(Command({"SET", GroupKeyFor(group_), *generation}));
  ASSERT_NO_FATAL_FAILURE(Command({"DEL", RecentEventsKeyFor(group_), GroupFloorKeyFor(group_)}));

  Result<CachedValue> v = pod->Get(Page(1), SourceLoader(), InGroup());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->version(), 8u) << "served " << Describe(v) << " from a generation below the one this pod saw";
  EXPECT_EQ(loads_, 2);
}

// (e) Without local knowledge: an L2 hit, as before.
TEST_F(L2BehindClusterTest, WithoutLocalKnowledgeL2IsServedAsBefore) {
  CounterMetrics metrics;
  auto pod = Make(nullptr, &metrics);
  auto other = Make();
  ASSERT_EQ(other->Get(Key(), SourceLoader())->version(), 7u);
  ASSERT_TRUE(pod->InvalidateLocal(Key(), 7).ok());  // at the version L2 holds
  Result<CachedValue> v = pod->Get(Key(), SourceLoader());
  EXPECT_EQ(v->source(), ValueSource::kL2) << Describe(v);
  EXPECT_EQ(metrics.snapshot().get(Counter::kHit, Tier::kL2), 1u);
  EXPECT_EQ(metrics.snapshot().get(Counter::kL2BehindLocal, Tier::kL2), 0u);
}

}  // namespace
}  // namespace tiercache
