// Groups (GetOptions::group, Cache::InvalidateGroup) over the in-memory L2:
// one move of a group ends every member in L2 and in this pod's L1, a member
// of an earlier generation is never served (not even as stale), and what the
// pod's L1 may serve is bounded by the generations it learned (GroupTable).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/cache_test_util.h"
#include "core/group_table.h"
#include "tiercache/cache.h"
#include "tiercache/l2_store.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using testing::Describe;
using testing::MakeCacheOrFail;

constexpr char kGroup[] = "feed:{community:1}";

std::string Page(int n) { return "feed:{community:1}:page:" + std::to_string(n); }

GetOptions InGroup(std::string group = kGroup) {
  GetOptions g;
  g.group = std::move(group);
  return g;
}

// The feed's source: a revision, and how many loads it served.
struct Feed {
  std::atomic<int> revision{1};
  std::atomic<int> loads{0};
  std::atomic<bool> failing{false};
  Loader loader() {
    return [this](std::string_view key) -> Result<LoadResult> {
      ++loads;
      if (failing) return Status::Unavailable("source down (test)");
      return LoadResult{"rev" + std::to_string(revision.load()) + " " + std::string(key), std::nullopt};
    };
  }
};

std::string Rev(const Result<CachedValue>& v) {
  if (!v.ok()) return v.status().ToString();
  return std::string(v->payload().substr(0, v->payload().find(' ')));
}

CacheOptions Options(std::shared_ptr<L2Store> l2) {
  CacheOptions o;
  o.l2 = std::move(l2);
  o.ttl = 60s;
  o.l1.default_ttl = 60s;
  o.early_refresh_beta = 0;
  return o;
}

TEST(GroupTest, OneMoveEndsEveryMemberInL2AndInThisPodsL1) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  auto b = MakeCacheOrFail(Options(l2));
  Feed feed;
  constexpr int kPages = 50;
  for (int n = 1; n <= kPages; ++n) ASSERT_EQ(Rev(a->Get(Page(n), feed.loader(), InGroup())), "rev1");
  for (int n = 1; n <= kPages; ++n) ASSERT_EQ(Rev(b->Get(Page(n), feed.loader(), InGroup())), "rev1");
  EXPECT_EQ(feed.loads, kPages) << "pod b should have read every page from L2";
  for (int n = 1; n <= kPages; ++n) {
    Result<CachedValue> v = a->Get(Page(n), feed.loader(), InGroup());
    ASSERT_EQ(v->source(), ValueSource::kL1) << Describe(v);
  }

  feed.revision = 2;
  Result<uint64_t> gen = a->InvalidateGroup(kGroup);
  ASSERT_TRUE(gen.ok()) << gen.status().ToString();
  for (int n = 1; n <= kPages; ++n) EXPECT_EQ(Rev(a->Get(Page(n), feed.loader(), InGroup())), "rev2") << n;
  EXPECT_EQ(feed.loads, 2 * kPages);

  // Pod b's L1 has not heard of the move (its L1Follower would tell it):
  // its L1 copies stand until then...
  EXPECT_EQ(Rev(b->Get(Page(7), feed.loader(), InGroup())), "rev1");
  // ... and go, all of them, when it moves the group itself.
  Result<uint64_t> gen_b = b->InvalidateGroup(kGroup);
  ASSERT_TRUE(gen_b.ok());
  EXPECT_GT(*gen_b, *gen);
  for (int n = 1; n <= kPages; ++n) EXPECT_EQ(Rev(b->Get(Page(n), feed.loader(), InGroup())), "rev2") << n;
}

TEST(GroupTest, AnEventMovesTheGroupOnceHoweverManyPodsApplyIt) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  auto b = MakeCacheOrFail(Options(l2));
  Feed feed;
  ASSERT_EQ(Rev(b->Get(Page(1), feed.loader(), InGroup())), "rev1");
  feed.revision = 2;
  std::vector<uint64_t> gens;
  auto apply = [&](Cache* pod, const std::string& event) {
    std::vector<Result<Cache::InvalidationResult>> r = pod->InvalidateMany({{kGroup, 0, true, event}});
    EXPECT_TRUE(r[0].ok());
    return r[0].ok() ? *r[0] : Cache::InvalidationResult::kIgnored;
  };
  EXPECT_EQ(apply(a.get(), "e1"), Cache::InvalidationResult::kApplied);  // the consumer
  ASSERT_EQ(Rev(a->Get(Page(1), feed.loader(), InGroup())), "rev2");     // refilled under the new generation
  EXPECT_EQ(apply(b.get(), "e1"), Cache::InvalidationResult::kIgnored);  // b's follower: same event
  EXPECT_EQ(apply(a.get(), "e1"), Cache::InvalidationResult::kIgnored);  // redelivered
  // The refill survived the repeats (one load per event), and b's L1 copy
  // of rev1 did not: b learned the current generation.
  EXPECT_EQ(Rev(b->Get(Page(1), feed.loader(), InGroup())), "rev2");
  EXPECT_EQ(feed.loads, 2);
  EXPECT_EQ(apply(b.get(), "e2"), Cache::InvalidationResult::kApplied);  // the next event moves it
}

TEST(GroupTest, AnotherGroupIsUntouched) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  Feed feed;
  const std::string other = "feed:{community:2}";
  const std::string key = "feed:{community:2}:page:1";
  ASSERT_EQ(Rev(a->Get(key, feed.loader(), InGroup(other))), "rev1");
  ASSERT_TRUE(a->InvalidateGroup(kGroup).ok());
  feed.revision = 2;
  Result<CachedValue> v = a->Get(key, feed.loader(), InGroup(other));
  EXPECT_EQ(Rev(v), "rev1");
  EXPECT_EQ(v->source(), ValueSource::kL1);
  EXPECT_EQ(feed.loads, 1);
}

TEST(GroupTest, AMemberIsServedOnlyInItsGroup) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  auto b = MakeCacheOrFail(Options(l2));
  Feed feed;
  ASSERT_EQ(Rev(a->Get(Page(1), feed.loader(), InGroup())), "rev1");
  // Without its group the entry cannot be checked against the group's
  // generation: neither tier serves it.
  feed.revision = 2;
  EXPECT_EQ(Rev(a->Get(Page(1), feed.loader())), "rev2");
  EXPECT_EQ(Rev(b->Get(Page(1), feed.loader())), "rev2");
  EXPECT_EQ(feed.loads, 2);  // b found a's ungrouped fill in L2
}

TEST(GroupTest, BadGroupsAreRefused) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  Feed feed;
  EXPECT_TRUE(a->Get("post:{community:2}:1", feed.loader(), InGroup()).status().IsInvalidArgument())
      << "a key outside the group's slot";
  EXPECT_TRUE(a->Get(Page(1), feed.loader(), InGroup("feed-without-tag")).status().IsInvalidArgument());
  EXPECT_TRUE(a->InvalidateGroup("feed-without-tag").status().IsInvalidArgument());
  EXPECT_TRUE(a->InvalidateGroup("{x}:fence").status().IsInvalidArgument());
  EXPECT_TRUE(a->Get("feed:{community:1}:group", feed.loader()).status().IsInvalidArgument())
      << "a key shaped like a group's generation key";
  std::vector<Result<CachedValue>> many =
      *a->GetMany({Page(1), "post:{community:2}:1"}, [](const std::vector<std::string>& keys) {
        return Result<std::vector<LoadResult>>(std::vector<LoadResult>(keys.size(), LoadResult{"x", std::nullopt}));
      }, InGroup());
  EXPECT_TRUE(many[0].ok());
  EXPECT_TRUE(many[1].status().IsInvalidArgument());
  EXPECT_EQ(feed.loads, 0);

  CacheOptions no_l2;
  auto c = MakeCacheOrFail(no_l2);
  EXPECT_EQ(c->Get(Page(1), feed.loader(), InGroup()).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(c->InvalidateGroup(kGroup).status().code(), StatusCode::kFailedPrecondition);
}

TEST(GroupTest, AMemberOfAnEarlierGenerationIsNotServedEvenAsStale) {
  for (bool move : {false, true}) {
    SCOPED_TRACE(move ? "group moved" : "control: group not moved");
    auto l2 = MakeInMemoryL2Store();
    CacheOptions o = Options(l2);
    o.ttl = 30ms;
    o.l1.default_ttl = 30ms;
    o.max_stale = 60s;
    auto a = MakeCacheOrFail(o);
    Feed feed;
    ASSERT_EQ(Rev(a->Get(Page(1), feed.loader(), InGroup())), "rev1");
    std::this_thread::sleep_for(60ms);  // expired in both tiers, within max_stale
    if (move) {
      ASSERT_TRUE(a->InvalidateGroup(kGroup).ok());
    }
    feed.failing = true;
    Result<CachedValue> v = a->Get(Page(1), feed.loader(), InGroup());
    if (move) {
      EXPECT_FALSE(v.ok()) << "served " << Describe(v) << " after its group moved";
    } else {
      ASSERT_TRUE(v.ok()) << "the fail-safe should serve the stale copy";
      EXPECT_TRUE(v->stale());
    }
  }
}

TEST(GroupTest, WhenTheMoveFailsThisPodsL1ServesNoMemberUntilALaterMove) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  Feed feed;
  ASSERT_EQ(Rev(a->Get(Page(1), feed.loader(), InGroup())), "rev1");
  ASSERT_EQ(a->Get(Page(1), feed.loader(), InGroup())->source(), ValueSource::kL1);
  const int shard = l2->ShardOf(kGroup);
  ASSERT_EQ(shard, l2->ShardOf(Page(1)));
  InMemoryL2StoreSetShardDown(l2.get(), shard, true);
  feed.revision = 2;
  EXPECT_FALSE(a->InvalidateGroup(kGroup).ok());
  // L2 is down and L1 must not vouch for the group: the loader answers.
  EXPECT_EQ(Rev(a->Get(Page(1), feed.loader(), InGroup())), "rev2");
  EXPECT_EQ(feed.loads, 2);
  InMemoryL2StoreSetShardDown(l2.get(), shard, false);
  ASSERT_TRUE(a->InvalidateGroup(kGroup).ok());
  EXPECT_EQ(Rev(a->Get(Page(1), feed.loader(), InGroup())), "rev2");
  Result<CachedValue> again = a->Get(Page(1), feed.loader(), InGroup());
  EXPECT_EQ(again->source(), ValueSource::kL1) << "L1 serves the group again after a successful move";
}

TEST(GroupTest, GetManyReadsAndFillsMembersUnderTheGroup) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  std::atomic<int> revision{1}, calls{0};
  BatchLoader loader = [&](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
    ++calls;
    std::vector<LoadResult> out;
    for (const std::string& k : keys) out.push_back(LoadResult{"rev" + std::to_string(revision.load()) + " " + k, std::nullopt});
    return out;
  };
  std::vector<std::string> pages;
  for (int n = 1; n <= 10; ++n) pages.push_back(Page(n));
  auto all_are = [&](const std::string& rev) {
    Result<std::vector<Result<CachedValue>>> r = a->GetMany(pages, loader, InGroup());
    if (!r.ok()) return false;
    for (const auto& v : *r) {
      if (Rev(v) != rev) return false;
    }
    return true;
  };
  EXPECT_TRUE(all_are("rev1"));
  EXPECT_TRUE(all_are("rev1"));
  EXPECT_EQ(calls, 1);
  revision = 2;
  ASSERT_TRUE(a->InvalidateGroup(kGroup).ok());
  EXPECT_TRUE(all_are("rev2"));
  EXPECT_EQ(calls, 2);
  // A pod that did not move the group reads the members from L2.
  auto b = MakeCacheOrFail(Options(l2));
  Result<std::vector<Result<CachedValue>>> r = b->GetMany(pages, loader, InGroup());
  ASSERT_TRUE(r.ok());
  for (const auto& v : *r) EXPECT_EQ(v->source(), ValueSource::kL2) << Describe(v);
  EXPECT_EQ(calls, 2);
}

TEST(GroupTest, SetWritesAMemberThatTheNextMoveInvalidates) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  auto b = MakeCacheOrFail(Options(l2));
  Feed feed;
  ASSERT_TRUE(a->Set(Page(1), "rev7 written", std::nullopt, InGroup()).ok());
  EXPECT_EQ(Rev(b->Get(Page(1), feed.loader(), InGroup())), "rev7");
  ASSERT_TRUE(b->InvalidateGroup(kGroup).ok());
  EXPECT_EQ(Rev(b->Get(Page(1), feed.loader(), InGroup())), "rev1");
  EXPECT_EQ(feed.loads, 1);
}

TEST(GroupTableTest, BoundsOnlyRise) {
  GroupTable t(32);
  EXPECT_TRUE(t.Accepts("g", 5)) << "an unknown group has no bound";
  EXPECT_TRUE(t.Raise("g", 10, t.BeginMove()));
  EXPECT_FALSE(t.Accepts("g", 9));
  EXPECT_TRUE(t.Accepts("g", 10));
  EXPECT_TRUE(t.Raise("g", 8, t.BeginMove()));  // two raises out of order: the higher stands
  EXPECT_FALSE(t.Accepts("g", 9));
  EXPECT_TRUE(t.Accepts("h", 1)) << "another group is not bound by g's moves";
}

TEST(GroupTableTest, OnlyAMoveBegunAfterAFailedOneEndsItsPoison) {
  GroupTable t(32);
  const uint64_t early = t.BeginMove();
  const uint64_t failed = t.BeginMove();
  EXPECT_TRUE(t.Poison("g", failed));
  EXPECT_FALSE(t.Accepts("g", 1000000));
  EXPECT_TRUE(t.Raise("g", 11, early));  // began before the failed move: proves nothing about it
  EXPECT_FALSE(t.Accepts("g", 1000000));
  EXPECT_TRUE(t.Raise("g", 12, t.BeginMove()));
  EXPECT_TRUE(t.Accepts("g", 12));
  EXPECT_FALSE(t.Accepts("g", 11));
}

TEST(GroupTableTest, AFullTableChangesNothingUntilReset) {
  GroupTable t(32);
  ASSERT_TRUE(t.Raise("g", 10, t.BeginMove()));
  int added = 0;
  while (t.Raise("group-" + std::to_string(added), 7, t.BeginMove())) ++added;
  EXPECT_LT(added, 1000);
  EXPECT_FALSE(t.Accepts("g", 9)) << "a full table keeps every bound it has";
  t.Reset();  // the caller emptied L1 first
  EXPECT_TRUE(t.Accepts("g", 9));
  EXPECT_TRUE(t.Raise("group-new", 7, t.BeginMove()));
}

TEST(GroupTest, AFullGroupTableEmptiesL1) {
  auto l2 = MakeInMemoryL2Store();
  auto a = MakeCacheOrFail(Options(l2));
  Feed feed;
  ASSERT_EQ(Rev(a->Get(Page(1), feed.loader(), InGroup())), "rev1");
  ASSERT_EQ(a->Get(Page(1), feed.loader(), InGroup())->source(), ValueSource::kL1);
  // More groups than the table tracks: it forgets every bound, so L1 goes too.
  for (int i = 0; i < 70000 && a->l1()->Stats().entries > 0; ++i) {
    ASSERT_TRUE(a->InvalidateGroup("other:{" + std::to_string(i) + "}").ok());
  }
  EXPECT_EQ(a->l1()->Stats().entries, 0u);
}

}  // namespace
}  // namespace tiercache
