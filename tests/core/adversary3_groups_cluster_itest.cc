// Adversarial tests for groups on the real cluster (the Lua scripts), and
// differential checks against the in-memory store, from a review of the
// change. The comments say what broke when found; the tests pass since the
// fixes (generations restart at the server's microsecond clock; anything
// but a canonical integer below 2^53 counts as no generation, in both
// stores; a lease taken with an unreadable reply is given back).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/test_env.h"
#include "core/cache_test_util.h"
#include "redis/redis_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using testing::Describe;

class Adversary3GroupsClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    Result<std::unique_ptr<redis::RedisClient>> c = redis::RedisClient::Create(redis::testing::ClusterOptions());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::shared_ptr<redis::RedisClient>(std::move(*c));
    redis_ = MakeRedisL2Store(client_);
    memory_ = MakeInMemoryL2Store();
    group_ = "feed:{adv3:" + testing::UniqueTag() + "}";
  }
  std::unique_ptr<Cache> Make(std::shared_ptr<L2Store> l2) {
    CacheOptions o;
    o.l2 = std::move(l2);
    o.ttl = 60s;
    o.l1.default_ttl = 60s;
    o.early_refresh_beta = 0;
    o.hard_timeout = 10s;
    o.soft_timeout = 10s;
    return testing::MakeCacheOrFail(o);
  }
  std::string Page(int n) const { return group_ + ":page:" + std::to_string(n); }
  GetOptions InGroup() const {
    GetOptions g;
    g.group = group_;
    return g;
  }
  static std::string Rev(const Result<CachedValue>& v) {
    return v.ok() ? std::string(v->payload().substr(0, v->payload().find(' '))) : v.status().ToString();
  }
  Loader FeedLoader() {
    return [this](std::string_view key) -> Result<LoadResult> {
      ++loads_;
      return LoadResult{"rev" + std::to_string(revision_.load()) + " " + std::string(key), std::nullopt};
    };
  }
  void SetRaw(const std::string& key, const std::string& value) {
    Result<redis::Reply> r = client_->Command({"SET", key, value});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  std::shared_ptr<redis::RedisClient> client_;
  std::shared_ptr<L2Store> redis_, memory_;
  std::string group_;
  std::atomic<int> revision_{1};
  std::atomic<int> loads_{0};
};

// Guarantees 1/4 with a real DEL. Found: the group restarted at a random
// generation; when it landed below the generation of this pod's old L1
// entries, this pod's own successful move lowered the table's bound and the
// old entries were served again.
TEST_F(Adversary3GroupsClusterTest, DelOfTheGenerationKeyRevivesOldL1MembersAfterThisPodsMove) {
  auto a = Make(redis_);
  SetRaw(GroupKeyFor(group_), std::to_string((uint64_t{1} << 50) - 1000));  // a legitimate start
  ASSERT_EQ(Rev(a->Get(Page(1), FeedLoader(), InGroup())), "rev1");
  revision_ = 2;
  ASSERT_TRUE(a->InvalidateGroup(group_).ok());
  ASSERT_TRUE(client_->Del({GroupKeyFor(group_)}).ok());  // evicted (no TTL: allkeys-lru) or DEL by hand
  revision_ = 3;
  Result<uint64_t> g = a->InvalidateGroup(group_);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Result<CachedValue> v = a->Get(Page(1), FeedLoader(), InGroup());
  EXPECT_EQ(Rev(v), "rev3") << Describe(v) << " (group restarted at " << *g << ")";
}

// Guarantee 6 / foreign bytes: SET G:group garbage. Found: the in-memory
// store replaced it; the scripts kept it forever (the lease was taken and
// then the C++ side failed without releasing it, snapshots failed, every
// move failed on INCR), so the group was uncacheable and unmovable for good.
TEST_F(Adversary3GroupsClusterTest, GarbageGenerationKeyDifferentialAndNoRecovery) {
  SetRaw(GroupKeyFor(group_), "garbage");
  InMemoryL2StorePutRaw(memory_.get(), GroupKeyFor(group_), "garbage");

  Result<LeaseOutcome> lr = redis_->AcquireLeaseInGroup(Page(1), group_, "tok", 10000ms, 1000ms);
  Result<LeaseOutcome> lm = memory_->AcquireLeaseInGroup(Page(1), group_, "tok", 10000ms, 1000ms);
  EXPECT_EQ(lr.ok(), lm.ok()) << "AcquireLeaseInGroup: redis " << (lr.ok() ? "OK" : lr.status().ToString())
                              << " vs memory " << (lm.ok() ? "OK" : lm.status().ToString());
  Result<std::optional<std::string>> lease = client_->Get(LeaseKeyFor(Page(1)));
  EXPECT_FALSE(!lr.ok() && lease.ok() && lease->has_value())
      << "the call failed, yet it left the lease taken: '" << lease->value_or("") << "'";

  Result<std::vector<FenceSnapshot>> sr = redis_->SnapshotInGroup({Page(2)}, group_, 1000ms);
  Result<std::vector<FenceSnapshot>> sm = memory_->SnapshotInGroup({Page(2)}, group_, 1000ms);
  EXPECT_EQ(sr.ok(), sm.ok()) << "SnapshotInGroup: redis " << (sr.ok() ? "OK" : sr.status().ToString())
                              << " vs memory " << (sm.ok() ? "OK" : sm.status().ToString());

  InvalidateRequest q;
  q.key = group_;
  q.group = true;
  std::vector<Result<FenceOutcome>> ir = redis_->InvalidateMany({q}, 60000ms, 1000ms);
  std::vector<Result<FenceOutcome>> im = memory_->InvalidateMany({q}, 60000ms, 1000ms);
  EXPECT_EQ(ir[0].ok(), im[0].ok()) << "InvalidateMany(group): redis "
                                    << (ir[0].ok() ? "OK" : ir[0].status().ToString()) << " vs memory "
                                    << (im[0].ok() ? "OK" : im[0].status().ToString());

  // At the cache: the group never recovers on the cluster.
  auto a = Make(redis_);
  for (int i = 0; i < 3; ++i) {
    Result<uint64_t> g = a->InvalidateGroup(group_);
    EXPECT_TRUE(g.ok()) << "move " << i << ": " << g.status().ToString();
  }
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Rev(a->Get(Page(3), FeedLoader(), InGroup())), "rev1");
  EXPECT_EQ(loads_, 1) << "every get of a member went to the source: the group is uncacheable for good";
}

// The invalidation consumer retries a partition whenever a result is neither
// OK nor InvalidArgument. Found: one garbage generation key made every event
// naming that group (and every key invalidation sharing its slot's call)
// fail the same way forever: a poison pill, the partition never advanced.
TEST_F(Adversary3GroupsClusterTest, GarbageGenerationKeyFailsKeyInvalidationsOfTheSameSlotWithARetryableError) {
  SetRaw(GroupKeyFor(group_), "garbage");
  auto a = Make(redis_);
  ASSERT_EQ(Rev(a->Get(Page(1), FeedLoader(), {})), "rev1");  // an ungrouped key in the group's slot
  std::vector<Result<Cache::InvalidationResult>> r =
      a->InvalidateMany({Cache::Invalidation{Page(1), 5, false}, Cache::Invalidation{group_, 0, true}});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_TRUE(r[0].ok()) << "the key's own invalidation: " << r[0].status().ToString();
  EXPECT_TRUE(r[1].ok() || r[1].status().IsInvalidArgument())
      << "group with a garbage generation: " << r[1].status().ToString()
      << " (neither applied nor dead-lettered: the consumer retries the partition forever)";
}

// Generations are Lua doubles in the scripts: above 2^53 two generations
// compare equal. Found: a generation key at 2^53 (foreign bytes) made
// InvalidateGroup return the old number (INCR's result rounded by Lua), so
// this pod's bound equalled the old entries' tag and L1 kept serving them.
TEST_F(Adversary3GroupsClusterTest, GenerationAtTwoToThe53DoesNotEndL1MembersAfterThisPodsMove) {
  auto a = Make(redis_);
  SetRaw(GroupKeyFor(group_), std::to_string(uint64_t{1} << 53));
  ASSERT_EQ(Rev(a->Get(Page(1), FeedLoader(), InGroup())), "rev1");
  revision_ = 2;
  Result<uint64_t> g = a->InvalidateGroup(group_);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Result<std::optional<std::string>> stored = client_->Get(GroupKeyFor(group_));
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ(std::to_string(*g), **stored) << "InvalidateGroup returned a generation Redis does not hold";
  Result<CachedValue> v = a->Get(Page(1), FeedLoader(), InGroup());
  EXPECT_EQ(Rev(v), "rev2") << Describe(v);
}

// Differential (guarantee 6) at 2^53. Found in review: a fill made under
// generation 2^53 after the group moved to 2^53 + 1 was refused by the
// in-memory store (exact integers) and stored by the script (doubles). Now
// both stores take a generation >= 2^53 for foreign bytes and restart the
// group below 2^53, and both refuse a fill made under 2^53.
TEST_F(Adversary3GroupsClusterTest, FillUnderAnEarlierGenerationAtTwoToThe53Differential) {
  for (const std::shared_ptr<L2Store>& store : {redis_, memory_}) {
    const bool is_redis = store == redis_;
    const std::string page = Page(is_redis ? 10 : 11);
    if (is_redis) {
      SetRaw(GroupKeyFor(group_), std::to_string(uint64_t{1} << 53));
    } else {
      InMemoryL2StorePutRaw(memory_.get(), GroupKeyFor(group_), std::to_string(uint64_t{1} << 53));
    }
    Result<std::vector<FenceSnapshot>> snap = store->SnapshotInGroup({page}, group_, 1000ms);
    ASSERT_TRUE(snap.ok()) << snap.status().ToString();
    ASSERT_LT((*snap)[0].group_generation.value_or(kMaxGroupGeneration), kMaxGroupGeneration)
        << (is_redis ? "redis" : "memory") << " kept a generation Lua cannot count exactly";
    InvalidateRequest q;
    q.key = group_;
    q.group = true;
    ASSERT_TRUE(store->InvalidateMany({q}, 60000ms, 1000ms)[0].ok());
    EnvelopeView e;
    e.kind = EntryKind::kValue;
    e.grouped = true;
    e.group_generation = uint64_t{1} << 53;
    e.written_at = std::chrono::system_clock::now();
    e.expires_at = e.written_at + 60s;
    e.payload = "old";
    Result<std::string> env = EncodeEnvelope(e);
    ASSERT_TRUE(env.ok());
    FillRequest f;
    f.key = page;
    f.envelope = *env;
    f.physical_ttl = 60000ms;
    f.fence = (*snap)[0];
    f.group = group_;
    std::vector<Result<FenceOutcome>> out = store->Fill({f}, 60000ms, 600000ms, 1000ms);
    ASSERT_TRUE(out[0].ok()) << out[0].status().ToString();
    EXPECT_FALSE(out[0]->stored()) << (is_redis ? "redis" : "memory")
                                   << " stored a member filled under the generation before the move";
  }
}


// Differential (guarantee 6): the unversioned-negative "inherit" path with a
// format-2 envelope (#env == 52): both stores re-version it to the
// tombstone's version, keep the generation, and write a valid checksum.
TEST_F(Adversary3GroupsClusterTest, InheritPathForAGroupedNegativeAgrees) {
  std::vector<std::string> seen;
  for (const std::shared_ptr<L2Store>& store : {redis_, memory_}) {
    const std::string page = Page(20);
    EnvelopeView t;
    t.kind = EntryKind::kTombstone;
    t.version = 5;
    t.written_at = std::chrono::system_clock::now();
    t.expires_at = t.written_at + 60s;
    InvalidateRequest q;
    q.key = page;
    q.tombstone = *EncodeEnvelope(t);
    q.tombstone_ttl = 60000ms;
    q.new_epoch = "e1";
    ASSERT_TRUE(store->Invalidate(q, 600000ms, 1000ms).ok());
    Result<std::vector<FenceSnapshot>> snap = store->SnapshotInGroup({page}, group_, 1000ms);
    ASSERT_TRUE(snap.ok()) << snap.status().ToString();
    EnvelopeView e;
    e.kind = EntryKind::kNegative;
    e.grouped = true;
    e.group_generation = *(*snap)[0].group_generation;
    e.written_at = std::chrono::system_clock::now();
    e.expires_at = e.written_at + 60s;
    FillRequest f;
    f.key = page;
    f.envelope = *EncodeEnvelope(e);
    ASSERT_EQ(f.envelope.size(), 52u);
    f.physical_ttl = 60000ms;
    f.fence = (*snap)[0];
    f.group = group_;
    std::vector<Result<FenceOutcome>> out = store->Fill({f}, 60000ms, 600000ms, 1000ms);
    ASSERT_TRUE(out[0].ok()) << out[0].status().ToString();
    Result<std::optional<std::string>> raw = store->Get(page, 1000ms);
    ASSERT_TRUE(raw.ok() && raw->has_value());
    Result<EnvelopeView> d = DecodeEnvelope(**raw, /*verify_checksum=*/true);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    seen.push_back(std::to_string(out[0]->stored()) + "/" + std::to_string(out[0]->stored_version) + "/" +
                   std::to_string(d->version) + "/" + std::to_string(d->grouped) + "/" +
                   std::to_string(d->group_generation == e.group_generation));
  }
  EXPECT_EQ(seen[0], seen[1]) << "redis vs memory: stored/stored_version/version/grouped/same generation";
  EXPECT_EQ(seen[0], "1/5/5/1/1");
}

}  // namespace
}  // namespace tiercache
