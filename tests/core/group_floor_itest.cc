// A group's version floor on the real cluster (the Lua scripts; the same
// rules as tests/core/group_floor_test.cc over the in-memory store): the
// fill script refuses a member below the floor as it refuses a fill below a
// key's floor, a lagging replica read after the move is cached nowhere,
// foreign bytes in the floor key refuse every member until a versioned move
// replaces them, and the floor key cannot be a user's key.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
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
using R = Cache::InvalidationResult;

class GroupFloorClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    Result<std::unique_ptr<redis::RedisClient>> c = redis::RedisClient::Create(redis::testing::ClusterOptions());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::shared_ptr<redis::RedisClient>(std::move(*c));
    store_ = MakeRedisL2Store(client_);
    group_ = "feed:{community:" + testing::UniqueTag() + "}";
  }

  std::unique_ptr<Cache> Make() {
    CacheOptions o;
    o.l2 = store_;
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
  // The page as the replica shows it: at the replica's feed_version.
  Loader ReplicaLoader() {
    return [this](std::string_view key) -> Result<LoadResult> {
      ++loads_;
      const uint64_t v = replica_version_.load();
      return LoadResult{"v" + std::to_string(v) + " " + std::string(key), v};
    };
  }
  // The version of `key` stored under the group's current generation.
  std::optional<uint64_t> CurrentInL2(const std::string& key) {
    Result<GroupRead> r = store_->GetInGroup({key}, group_, 1000ms);
    if (!r.ok() || !r->values[0] || !r->generation) return std::nullopt;
    Result<EnvelopeView> e = DecodeEnvelope(*r->values[0]);
    if (!e.ok() || !e->grouped || e->group_generation != *r->generation) return std::nullopt;
    return e->version;
  }
  std::optional<std::string> Raw(const std::string& key) {
    Result<std::optional<std::string>> r = client_->Get(key);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::nullopt;
  }
  void Command(const std::vector<std::string>& args) {
    Result<redis::Reply> r = client_->Command(args);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  std::shared_ptr<redis::RedisClient> client_;
  std::shared_ptr<L2Store> store_;
  std::string group_;
  std::atomic<uint64_t> replica_version_{56};
  std::atomic<int> loads_{0};
};

// The scenario of the change, through the scripts: the post event (57) moves
// the group and raises its floor; a get after the move reads the replica
// still at 56; the server refuses both fills; nothing is cached.
TEST_F(GroupFloorClusterTest, ALaggingReplicaReadAfterTheMoveIsRefusedByTheServer) {
  auto pod = Make();
  auto consumer = Make();
  ASSERT_EQ(pod->Get(Page(1), ReplicaLoader(), InGroup())->version(), 56u);
  ASSERT_EQ(consumer->InvalidateMany({{group_, 57, true, "post-created"}})[0].value_or(R::kIgnored), R::kApplied);
  EXPECT_EQ(Raw(GroupFloorKeyFor(group_)), std::optional<std::string>("57"));
  ASSERT_EQ(pod->InvalidateMany({{group_, 57, true, "post-created"}})[0].value_or(R::kApplied), R::kIgnored);

  std::promise<void> reading, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> calls{0};
  Loader barrier = [&](std::string_view key) -> Result<LoadResult> {
    if (calls.fetch_add(1) == 0) {
      reading.set_value();
      released.wait();
    }
    return ReplicaLoader()(key);
  };
  const std::optional<std::string> generation = Raw(GroupKeyFor(group_));
  auto get = std::async(std::launch::async, [&] { return pod->Get(Page(1), barrier, InGroup()); });
  reading.get_future().wait();
  EXPECT_EQ(Raw(GroupKeyFor(group_)), generation) << "the load began under the new generation";
  release.set_value();
  Result<CachedValue> got = get.get();
  EXPECT_TRUE(got.status().IsAborted()) << "served " << Describe(got) << " read from the lagging replica";
  EXPECT_EQ(calls, 2) << "reloaded once";
  EXPECT_EQ(CurrentInL2(Page(1)), std::nullopt) << "the lagging page was cached under the new generation";

  replica_version_ = 57;
  Result<CachedValue> fresh = pod->Get(Page(1), ReplicaLoader(), InGroup());
  ASSERT_TRUE(fresh.ok()) << Describe(fresh);
  EXPECT_EQ(fresh->version(), 57u);
  EXPECT_EQ(CurrentInL2(Page(1)), std::optional<uint64_t>(57));
}

// The script's answer is the key floor's: kOlderVersion with the floor.
TEST_F(GroupFloorClusterTest, TheRefusalIsTheKeyFloorsAndTheFloorOnlyRises) {
  auto a = Make();
  ASSERT_TRUE(a->InvalidateGroup(group_, 57).ok());
  ASSERT_TRUE(a->InvalidateGroup(group_, 50).ok());  // moves, leaves the floor
  EXPECT_EQ(Raw(GroupFloorKeyFor(group_)), std::optional<std::string>("57"));
  Result<std::vector<FenceSnapshot>> snap = store_->SnapshotInGroup({Page(1)}, group_, 1000ms);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  EnvelopeView e;
  e.grouped = true;
  e.group_generation = *(*snap)[0].group_generation;
  e.kind = EntryKind::kValue;
  e.version = 56;
  e.written_at = std::chrono::system_clock::now();
  e.expires_at = e.written_at + 60s;
  e.payload = "v56";
  FillRequest f;
  f.key = Page(1);
  f.envelope = *EncodeEnvelope(e);
  f.physical_ttl = 60000ms;
  f.fence = (*snap)[0];
  f.group = group_;
  std::vector<Result<FenceOutcome>> r = store_->Fill({f}, 30000ms, kFenceLifetime, 1000ms);
  ASSERT_TRUE(r[0].ok()) << r[0].status().ToString();
  EXPECT_EQ(r[0]->verdict, FillVerdict::kOlderVersion);
  EXPECT_EQ(r[0]->stored_version, 57u);
  e.version = 0;  // unversioned
  f.envelope = *EncodeEnvelope(e);
  r = store_->Fill({f}, 30000ms, kFenceLifetime, 1000ms);
  ASSERT_TRUE(r[0].ok()) << r[0].status().ToString();
  EXPECT_EQ(r[0]->verdict, FillVerdict::kOlderVersion);
  e.version = 57;
  f.envelope = *EncodeEnvelope(e);
  r = store_->Fill({f}, 30000ms, kFenceLifetime, 1000ms);
  ASSERT_TRUE(r[0].ok()) << r[0].status().ToString();
  EXPECT_TRUE(r[0]->stored());
  // Through the cache: Set below the floor.
  EXPECT_TRUE(a->Set(Page(2), "v56", 56, InGroup()).IsAborted());
  EXPECT_TRUE(a->Set(Page(2), "v57", 57, InGroup()).ok());
}

TEST_F(GroupFloorClusterTest, ARedeliveredEventRaisesNothingAndMovesNothing) {
  auto a = Make();
  auto b = Make();
  replica_version_ = 57;
  ASSERT_EQ(a->InvalidateMany({{group_, 57, true, "e57"}})[0].value_or(R::kIgnored), R::kApplied);
  ASSERT_TRUE(a->Get(Page(1), ReplicaLoader(), InGroup()).ok());
  EXPECT_EQ(b->InvalidateMany({{group_, 57, true, "e57"}})[0].value_or(R::kApplied), R::kIgnored);
  Result<CachedValue> v = b->Get(Page(1), ReplicaLoader(), InGroup());
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_EQ(v->source(), ValueSource::kL2);
  EXPECT_EQ(loads_, 1);
  // The same id with a higher floor: the floor rises and the group moves.
  EXPECT_EQ(b->InvalidateMany({{group_, 60, true, "e57"}})[0].value_or(R::kIgnored), R::kApplied);
  EXPECT_EQ(Raw(GroupFloorKeyFor(group_)), std::optional<std::string>("60"));
  EXPECT_EQ(CurrentInL2(Page(1)), std::nullopt);
}

TEST_F(GroupFloorClusterTest, ForeignBytesInTheFloorKeyRefuseEveryMemberUntilAVersionedMove) {
  auto a = Make();
  replica_version_ = 1000;
  for (const std::string garbage : {"garbage", "057", "18446744073709551616", ""}) {
    SCOPED_TRACE("floor key holds '" + garbage + "'");
    ASSERT_NO_FATAL_FAILURE(Command({"SET", GroupFloorKeyFor(group_), garbage}));
    Result<CachedValue> v = a->Get(Page(1), ReplicaLoader(), InGroup());
    EXPECT_TRUE(v.status().IsAborted()) << "an unknown floor let " << Describe(v) << " in";
    EXPECT_EQ(CurrentInL2(Page(1)), std::nullopt);
    EXPECT_TRUE(a->Set(Page(1), "x", 1000, InGroup()).IsAborted());
    ASSERT_TRUE(a->InvalidateGroup(group_).ok());  // unversioned: changes nothing
    EXPECT_TRUE(a->Get(Page(1), ReplicaLoader(), InGroup()).status().IsAborted());
    ASSERT_TRUE(a->InvalidateGroup(group_, 57).ok());  // the next event replaces it
    EXPECT_EQ(Raw(GroupFloorKeyFor(group_)), std::optional<std::string>("57"));
    Result<CachedValue> after = a->Get(Page(1), ReplicaLoader(), InGroup());
    ASSERT_TRUE(after.ok()) << Describe(after);
    ASSERT_TRUE(a->InvalidateGroup(group_).ok());  // drop the page for the next round
  }
  // A key of another type there: the same (and a versioned move replaces it).
  ASSERT_TRUE(client_->Del({GroupFloorKeyFor(group_)}).ok());
  ASSERT_NO_FATAL_FAILURE(Command({"RPUSH", GroupFloorKeyFor(group_), "1"}));
  Result<CachedValue> v = a->Get(Page(2), ReplicaLoader(), InGroup());
  EXPECT_TRUE(v.status().IsAborted()) << Describe(v);
  ASSERT_TRUE(a->InvalidateGroup(group_, 57).ok());
  EXPECT_TRUE(a->Get(Page(2), ReplicaLoader(), InGroup()).ok());
}

TEST_F(GroupFloorClusterTest, TheFloorKeyIsNotAUserKey) {
  auto a = Make();
  const std::string floor_key = GroupFloorKeyFor(group_);
  EXPECT_EQ(floor_key, group_ + ":group:floor");
  EXPECT_TRUE(a->Get(floor_key, ReplicaLoader()).status().IsInvalidArgument());
  EXPECT_TRUE(a->Set(floor_key, "1", 1).IsInvalidArgument());
  EXPECT_TRUE(a->Invalidate(floor_key, 1).IsInvalidArgument());
  EXPECT_TRUE(a->InvalidateGroup(floor_key, 1).status().IsInvalidArgument());
  EXPECT_EQ(loads_, 0);
  EXPECT_EQ(Raw(floor_key), std::nullopt) << "nothing was written there";
}

}  // namespace
}  // namespace tiercache
