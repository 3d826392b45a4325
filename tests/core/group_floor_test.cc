// A group's version floor over the in-memory L2 (docs/consistency.md §3b):
// a versioned group invalidation raises the floor, and a member loaded below
// it (a replica behind the change) or without a version is refused like a
// fill below a key's own floor: reloaded once, then kAborted, cached
// nowhere. Floors only rise; a redelivered event changes nothing; foreign
// bytes in the floor key refuse every member until a versioned move.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "core/cache_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using testing::Describe;
using testing::MakeCacheOrFail;
using R = Cache::InvalidationResult;

constexpr char kGroup[] = "feed:{community:42}";

std::string Page(int n) { return "feed:{community:42}:page:" + std::to_string(n); }

GetOptions InGroup() {
  GetOptions g;
  g.group = kGroup;
  return g;
}

CacheOptions Options(std::shared_ptr<L2Store> l2) {
  CacheOptions o;
  o.l2 = std::move(l2);
  o.ttl = 60s;
  o.l1.default_ttl = 60s;
  o.early_refresh_beta = 0;
  o.ttl_jitter = 0;
  return o;
}

// The community's feed as a replica shows it: the page at the replica's
// feed_version (the primary may be ahead).
struct Replica {
  std::atomic<uint64_t> feed_version{56};
  std::atomic<int> loads{0};
  Loader loader() {
    return [this](std::string_view key) -> Result<LoadResult> {
      ++loads;
      const uint64_t v = feed_version.load();
      return LoadResult{"v" + std::to_string(v) + " " + std::string(key), v};
    };
  }
};

// The post event of version `v`, as the consumer or a follower applies it.
Cache::Invalidation PostEvent(uint64_t v, std::string id = "") {
  return Cache::Invalidation{kGroup, v, true, id.empty() ? "post@" + std::to_string(v) : std::move(id)};
}

R Apply(Cache& pod, const Cache::Invalidation& event) {
  std::vector<Result<R>> r = pod.InvalidateMany({event});
  EXPECT_TRUE(r[0].ok()) << r[0].status().ToString();
  return r[0].ok() ? *r[0] : R::kIgnored;
}

// The version of `key` stored in L2 under its group's current generation
// (a member of an earlier one is not current), or nullopt.
std::optional<uint64_t> CurrentInL2(L2Store& l2, const std::string& key) {
  Result<GroupRead> r = l2.GetInGroup({key}, kGroup, 100ms);
  if (!r.ok() || !r->values[0] || !r->generation) return std::nullopt;
  Result<EnvelopeView> e = DecodeEnvelope(*r->values[0]);
  if (!e.ok() || !e->grouped || e->group_generation != *r->generation) return std::nullopt;
  return e->version;
}

TEST(GroupFloorTest, AMemberBelowTheFloorIsRefusedAfterOneReloadAndCachedNowhere) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  Replica replica;
  ASSERT_EQ(Apply(*a, PostEvent(57)), R::kApplied);
  Result<CachedValue> v = a->Get(Page(1), replica.loader(), InGroup());
  EXPECT_TRUE(v.status().IsAborted()) << Describe(v);
  EXPECT_EQ(replica.loads, 2) << "one load, and one reload after the refusal";
  EXPECT_EQ(std::nullopt, CurrentInL2(*l2, Page(1)));
  EXPECT_EQ(a->l1()->Stats().entries, 0u);
  // GetMany: the same refusal (no reload in a batch).
  BatchLoader batch = [&](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
    std::vector<LoadResult> out;
    for (const std::string& k : keys) out.push_back(*replica.loader()(k));
    return out;
  };
  Result<std::vector<Result<CachedValue>>> many = a->GetMany({Page(2), Page(3)}, batch, InGroup());
  ASSERT_TRUE(many.ok());
  for (const auto& m : *many) EXPECT_TRUE(m.status().IsAborted()) << Describe(m);
  EXPECT_EQ(std::nullopt, CurrentInL2(*l2, Page(2)));
}

TEST(GroupFloorTest, AMemberAtTheFloorIsCachedAndServed) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  auto b = MakeCacheOrFail(Options(l2));
  Replica replica;
  replica.feed_version = 57;
  ASSERT_EQ(Apply(*a, PostEvent(57)), R::kApplied);
  Result<CachedValue> v = a->Get(Page(1), replica.loader(), InGroup());
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_EQ(v->version(), 57u);
  EXPECT_EQ(CurrentInL2(*l2, Page(1)), std::optional<uint64_t>(57));
  EXPECT_EQ(a->Get(Page(1), replica.loader(), InGroup())->source(), ValueSource::kL1);
  EXPECT_EQ(b->Get(Page(1), replica.loader(), InGroup())->source(), ValueSource::kL2);
  replica.feed_version = 58;  // above the floor too
  Result<CachedValue> p2 = a->Get(Page(2), replica.loader(), InGroup());
  ASSERT_TRUE(p2.ok()) << Describe(p2);
  EXPECT_EQ(p2->version(), 58u);
  EXPECT_EQ(replica.loads, 2);
}

TEST(GroupFloorTest, TheFloorOnlyRises) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  Replica replica;
  ASSERT_EQ(Apply(*a, PostEvent(57)), R::kApplied);
  // An older event (another id) still moves the group, but leaves the floor.
  ASSERT_EQ(Apply(*a, PostEvent(50)), R::kApplied);
  Result<uint64_t> moved = a->InvalidateGroup(kGroup, 40);
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  ASSERT_TRUE(a->InvalidateGroup(kGroup).ok());  // unversioned: the floor stays
  replica.feed_version = 56;
  EXPECT_TRUE(a->Get(Page(1), replica.loader(), InGroup()).status().IsAborted());
  replica.feed_version = 57;
  Result<CachedValue> v = a->Get(Page(1), replica.loader(), InGroup());
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_EQ(v->version(), 57u);
  Result<std::optional<std::string>> floor = l2->Get(GroupFloorKeyFor(kGroup), 100ms);
  ASSERT_TRUE(floor.ok() && floor->has_value());
  EXPECT_EQ(**floor, "57");
}

TEST(GroupFloorTest, ARedeliveredEventRaisesNothingAndKeepsTheMembers) {
  auto l2 = MakeInMemoryL2Store();
  auto consumer = MakeCacheOrFail(Options(l2));
  auto follower = MakeCacheOrFail(Options(l2));
  Replica replica;
  replica.feed_version = 57;
  ASSERT_EQ(Apply(*consumer, PostEvent(57, "e57")), R::kApplied);
  ASSERT_TRUE(consumer->Get(Page(1), replica.loader(), InGroup()).ok());
  // The follower and a redelivery apply the same event: nothing moves, the
  // page refilled after the first application stays, the floor is 57.
  EXPECT_EQ(Apply(*follower, PostEvent(57, "e57")), R::kIgnored);
  EXPECT_EQ(Apply(*consumer, PostEvent(57, "e57")), R::kIgnored);
  Result<CachedValue> v = follower->Get(Page(1), replica.loader(), InGroup());
  ASSERT_TRUE(v.ok()) << Describe(v);
  EXPECT_EQ(v->source(), ValueSource::kL2);
  EXPECT_EQ(replica.loads, 1);
  replica.feed_version = 56;
  EXPECT_TRUE(follower->Get(Page(2), replica.loader(), InGroup()).status().IsAborted());
  // The same id with a higher version (its first application ran without
  // floors): the floor rises, and so the group moves once more, so no member
  // stored under the old floor stays current.
  replica.feed_version = 57;
  ASSERT_TRUE(follower->Get(Page(3), replica.loader(), InGroup()).ok());
  EXPECT_EQ(Apply(*follower, PostEvent(60, "e57")), R::kApplied);
  EXPECT_TRUE(follower->Get(Page(3), replica.loader(), InGroup()).status().IsAborted())
      << "a member below the raised floor was still served";
}

TEST(GroupFloorTest, AnUnversionedMemberIsRefusedByAnyFloor) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  std::atomic<int> loads{0};
  Loader unversioned = [&](std::string_view) -> Result<LoadResult> {
    ++loads;
    return LoadResult{"page", std::nullopt};
  };
  Loader not_found = [&](std::string_view) -> Result<LoadResult> {
    ++loads;
    return LoadResult{std::nullopt, std::nullopt};
  };
  // Control: an unversioned move leaves no floor; unversioned members pass.
  ASSERT_TRUE(a->InvalidateGroup(kGroup).ok());
  ASSERT_TRUE(a->Get(Page(1), unversioned, InGroup()).ok());
  ASSERT_TRUE(a->InvalidateGroup(kGroup, 57).ok());
  EXPECT_TRUE(a->Get(Page(2), unversioned, InGroup()).status().IsAborted());
  EXPECT_TRUE(a->Get(Page(3), not_found, InGroup()).status().IsAborted());
  EXPECT_EQ(std::nullopt, CurrentInL2(*l2, Page(2)));
  EXPECT_EQ(std::nullopt, CurrentInL2(*l2, Page(3)));
  // A versioned not-found at the floor passes.
  Result<CachedValue> empty = a->Get(Page(4), [](std::string_view) -> Result<LoadResult> {
    return LoadResult{std::nullopt, 57};
  }, InGroup());
  ASSERT_TRUE(empty.ok()) << Describe(empty);
  EXPECT_FALSE(empty->found());
}

TEST(GroupFloorTest, SetBelowTheFloorIsAborted) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  ASSERT_TRUE(a->InvalidateGroup(kGroup, 57).ok());
  Status below = a->Set(Page(1), "v56", 56, InGroup());
  EXPECT_TRUE(below.IsAborted()) << below.ToString();
  EXPECT_TRUE(a->Set(Page(1), "unversioned", std::nullopt, InGroup()).IsAborted());
  EXPECT_EQ(std::nullopt, CurrentInL2(*l2, Page(1)));
  Status at = a->Set(Page(1), "v57", 57, InGroup());
  EXPECT_TRUE(at.ok()) << at.ToString();
  EXPECT_EQ(CurrentInL2(*l2, Page(1)), std::optional<uint64_t>(57));
}

// The scenario of the change: page 1 of the feed is read from a replica 14 s
// behind the primary. A post is created (feed_version 57 on the primary) and
// its event moves the group. A get that starts after the move snapshots the
// new generation, reads the replica (feed_version 56, without the post) and
// fills: refused, reloaded once (still behind), kAborted, cached nowhere.
// Once the replica has replayed the post, the page is cached at 57.
TEST(GroupFloorTest, ALaggingReplicaReadAfterTheMoveIsNotCached) {
  auto l2 = MakeInMemoryL2Store();
  auto pod = MakeCacheOrFail(Options(l2));
  auto consumer = MakeCacheOrFail(Options(l2));
  Replica replica;  // at 56, and so was the primary
  ASSERT_EQ(pod->Get(Page(1), replica.loader(), InGroup())->version(), 56u);
  ASSERT_EQ(pod->Get(Page(1), replica.loader(), InGroup())->source(), ValueSource::kL1);

  // The post is created on the primary (57); the replica has not replayed it.
  ASSERT_EQ(Apply(*consumer, PostEvent(57)), R::kApplied);
  ASSERT_EQ(Apply(*pod, PostEvent(57)), R::kIgnored);  // this pod's follower: learns the generation
  const std::optional<std::string> gen_after_move = *l2->Get(GroupKeyFor(kGroup), 100ms);

  // The get after the move; its load waits at a barrier so the test can see
  // it runs under the new generation, with nothing of the page stored.
  std::promise<void> reading, release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> calls{0};
  Loader barrier = [&](std::string_view key) -> Result<LoadResult> {
    if (calls.fetch_add(1) == 0) {
      reading.set_value();
      released.wait();
    }
    return replica.loader()(key);
  };
  auto get = std::async(std::launch::async, [&] { return pod->Get(Page(1), barrier, InGroup()); });
  reading.get_future().wait();
  EXPECT_EQ(*l2->Get(GroupKeyFor(kGroup), 100ms), gen_after_move) << "the load began under the new generation";
  EXPECT_EQ(std::nullopt, CurrentInL2(*l2, Page(1))) << "the old page is not current (the move dropped it)";
  release.set_value();
  Result<CachedValue> got = get.get();
  EXPECT_TRUE(got.status().IsAborted()) << "served " << Describe(got) << " read from the lagging replica";
  EXPECT_EQ(calls, 2) << "reloaded once";
  EXPECT_EQ(std::nullopt, CurrentInL2(*l2, Page(1))) << "the lagging page was cached under the new generation";

  // The replica catches up: the page is cached at the post's version.
  replica.feed_version = 57;
  Result<CachedValue> fresh = pod->Get(Page(1), replica.loader(), InGroup());
  ASSERT_TRUE(fresh.ok()) << Describe(fresh);
  EXPECT_EQ(fresh->version(), 57u);
  EXPECT_EQ(pod->Get(Page(1), replica.loader(), InGroup())->source(), ValueSource::kL1);
}

// The same, but the replica replays the post between the refused load and
// the reload: the get returns the new page, cached.
TEST(GroupFloorTest, TheReloadAfterARefusalPicksUpTheCaughtUpReplica) {
  auto l2 = MakeInMemoryL2Store();
  auto pod = MakeCacheOrFail(Options(l2));
  ASSERT_TRUE(pod->InvalidateGroup(kGroup, 57).ok());
  std::atomic<int> calls{0};
  Loader catching_up = [&](std::string_view key) -> Result<LoadResult> {
    const uint64_t v = calls.fetch_add(1) == 0 ? 56 : 57;
    return LoadResult{"v" + std::to_string(v) + " " + std::string(key), v};
  };
  Result<CachedValue> got = pod->Get(Page(1), catching_up, InGroup());
  ASSERT_TRUE(got.ok()) << Describe(got);
  EXPECT_EQ(got->version(), 57u);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(CurrentInL2(*l2, Page(1)), std::optional<uint64_t>(57));
}

TEST(GroupFloorTest, ForeignBytesInTheFloorKeyRefuseEveryMemberUntilAVersionedMove) {
  for (const char* garbage : {"garbage", "057", "-1", "18446744073709551616", ""}) {
    SCOPED_TRACE(std::string("floor key holds '") + garbage + "'");
    auto l2 = MakeInMemoryL2Store();
    auto a = MakeCacheOrFail(Options(l2));
    Replica replica;
    replica.feed_version = 1000;
    InMemoryL2StorePutRaw(l2.get(), GroupFloorKeyFor(kGroup), garbage);
    EXPECT_TRUE(a->Get(Page(1), replica.loader(), InGroup()).status().IsAborted()) << "an unknown floor let a fill in";
    EXPECT_EQ(std::nullopt, CurrentInL2(*l2, Page(1)));
    EXPECT_TRUE(a->Set(Page(1), "x", 1000, InGroup()).IsAborted());
    ASSERT_TRUE(a->InvalidateGroup(kGroup).ok());  // unversioned: knows no version, changes nothing
    EXPECT_TRUE(a->Get(Page(1), replica.loader(), InGroup()).status().IsAborted());
    // A versioned move (the next event) replaces it.
    ASSERT_TRUE(a->InvalidateGroup(kGroup, 57).ok());
    Result<CachedValue> v = a->Get(Page(1), replica.loader(), InGroup());
    ASSERT_TRUE(v.ok()) << Describe(v);
    replica.feed_version = 56;
    EXPECT_TRUE(a->Get(Page(2), replica.loader(), InGroup()).status().IsAborted());
  }
}

TEST(GroupFloorTest, TheFloorKeyIsNotAUserKey) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  Replica replica;
  EXPECT_TRUE(IsCompanionKeyName(GroupFloorKeyFor(kGroup)));
  EXPECT_TRUE(a->Get(GroupFloorKeyFor(kGroup), replica.loader()).status().IsInvalidArgument());
  EXPECT_TRUE(a->Set(GroupFloorKeyFor(kGroup), "1", 1).IsInvalidArgument());
  EXPECT_TRUE(a->Invalidate(GroupFloorKeyFor(kGroup), 1).IsInvalidArgument());
  EXPECT_TRUE(a->InvalidateGroup(GroupFloorKeyFor(kGroup), 1).status().IsInvalidArgument());
  EXPECT_EQ(replica.loads, 0);
}

}  // namespace
}  // namespace tiercache
