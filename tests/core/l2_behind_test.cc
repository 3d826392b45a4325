// L2 reads respect what this pod has seen (docs/consistency.md §3c), over
// the in-memory store: after this pod saw a versioned invalidation (its own
// Invalidate, or InvalidateLocal from its L1 follower) that L2 did not
// apply (its shard had no master, the consumer lags) or lost (a failover),
// an L2 value or negative entry below that version is not served, in Get,
// GetAsync, GetMany and the lease wait; the loader answers and its value
// fills L2. Likewise a group member in L2 when this pod's group move failed
// (the group is poisoned here) or when L2's generation is below the one
// this pod saw (L2 lost the move). Without such knowledge nothing changes.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/forwarding_l2_store.h"
#include "core/cache_test_util.h"
#include "core/group_table.h"
#include "core/seen_versions.h"
#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"
#include "tiercache/metrics.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using testing::Describe;
using testing::MakeCacheOrFail;

constexpr char kGroup[] = "feed:{community:7}";
std::string Page(int n) { return std::string(kGroup) + ":page:" + std::to_string(n); }
GetOptions InGroup() {
  GetOptions g;
  g.group = kGroup;
  return g;
}

// An L2 whose invalidations never arrive: every Invalidate / InvalidateMany
// fails as it does while the key's slot has no master (nothing applied).
class LosesInvalidations : public testing::ForwardingL2Store {
 public:
  using ForwardingL2Store::ForwardingL2Store;
  Result<FenceOutcome> Invalidate(const InvalidateRequest&, milliseconds, milliseconds) override {
    ++lost;
    return Status::Unavailable("slot has no master (test)");
  }
  std::vector<Result<FenceOutcome>> InvalidateMany(const std::vector<InvalidateRequest>& requests, milliseconds,
                                                   milliseconds) override {
    lost += static_cast<int>(requests.size());
    return std::vector<Result<FenceOutcome>>(requests.size(), Status::Unavailable("slot has no master (test)"));
  }
  std::atomic<int> lost{0};
};

// The source: the entity at `version`, and how many loads it served.
struct Source {
  std::atomic<uint64_t> version{7};
  std::atomic<bool> exists{true};
  std::atomic<int> loads{0};
  Loader loader() {
    return [this](std::string_view key) -> Result<LoadResult> {
      ++loads;
      if (!exists) return LoadResult{std::nullopt, std::nullopt};
      const uint64_t v = version.load();
      return LoadResult{"v" + std::to_string(v) + " " + std::string(key), v};
    };
  }
  BatchLoader batch() {
    return [this](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
      std::vector<LoadResult> out;
      for (const std::string& k : keys) {
        Result<LoadResult> r = loader()(k);
        out.push_back(*r);
      }
      return out;
    };
  }
};

CacheOptions Options(std::shared_ptr<L2Store> l2, Metrics* metrics = nullptr) {
  CacheOptions o;
  o.l2 = std::move(l2);
  o.ttl = 60s;
  o.l1.default_ttl = 60s;
  o.early_refresh_beta = 0;
  o.metrics = metrics;
  return o;
}

// The version of `key`'s envelope in L2 (kind included), or nullopt.
std::optional<uint64_t> L2Version(L2Store& l2, const std::string& key) {
  Result<std::optional<std::string>> raw = l2.Get(key, 1000ms);
  if (!raw.ok() || !raw->has_value()) return std::nullopt;
  Result<EnvelopeView> e = DecodeEnvelope(**raw);
  if (!e.ok()) return std::nullopt;
  return e->version;
}

uint64_t Behind(const CounterMetrics& m) { return m.snapshot().get(Counter::kL2BehindLocal, Tier::kL2); }

// (a) The drill: L2 holds v7 and never applied the event (v8); the pod's
// follower called InvalidateLocal(key, 8). Get goes to the loader and L2
// then holds v8.
TEST(L2BehindTest, AValueBelowTheLocalTombstoneIsNotServedFromL2) {
  auto l2 = MakeInMemoryL2Store();
  CounterMetrics metrics;
  auto pod = MakeCacheOrFail(Options(l2, &metrics));
  auto other = MakeCacheOrFail(Options(l2));
  Source source;
  const std::string key = "post:{1}:42";
  ASSERT_EQ(other->Get(key, source.loader())->version(), 7u);  // L2: v7
  ASSERT_EQ(pod->Get(key, source.loader())->source(), ValueSource::kL2);
  source.version = 8;  // the edit; its event reaches the pod, not L2
  ASSERT_TRUE(pod->InvalidateLocal(key, 8).ok());
  ASSERT_EQ(L2Version(*l2, key), std::optional<uint64_t>(7));

  Result<CachedValue> v = pod->Get(key, source.loader());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->version(), 8u) << "served " << Describe(v) << " although this pod saw version 8";
  EXPECT_EQ(v->source(), ValueSource::kLoader);
  EXPECT_EQ(source.loads, 2);
  EXPECT_EQ(L2Version(*l2, key), std::optional<uint64_t>(8)) << "the load's fill should pass over L2's v7";
  EXPECT_EQ(Behind(metrics), 1u);
  // And from now on both tiers serve v8 as usual.
  EXPECT_EQ(pod->Get(key, source.loader())->source(), ValueSource::kL1);
  EXPECT_EQ(other->Get("post:{1}:42", source.loader())->version(), 7u)
      << "(the other pod's L1 copy stands until its own follower sees the event: §3)";
  EXPECT_EQ(source.loads, 2);
}

// (a) through Invalidate and InvalidateMany whose L2 part failed (the slot
// had no master): this pod's own invalidation keeps L2's v7 out too.
TEST(L2BehindTest, AnInvalidationThatL2DidNotApplyKeepsItsOlderValueOut) {
  for (bool many : {false, true}) {
    SCOPED_TRACE(many ? "InvalidateMany" : "Invalidate");
    auto mem = MakeInMemoryL2Store();
    auto lossy = std::make_shared<LosesInvalidations>(mem);
    auto pod = MakeCacheOrFail(Options(lossy));
    Source source;
    const std::string key = "post:{2}:42";
    ASSERT_EQ(pod->Get(key, source.loader())->version(), 7u);
    source.version = 8;
    if (many) {
      std::vector<Result<Cache::InvalidationResult>> r = pod->InvalidateMany({{key, 8}});
      EXPECT_TRUE(r[0].status().IsUnavailable()) << r[0].status().ToString();
    } else {
      EXPECT_TRUE(pod->Invalidate(key, 8).IsUnavailable());
    }
    EXPECT_EQ(lossy->lost, 1);
    Result<CachedValue> v = pod->Get(key, source.loader());
    EXPECT_EQ(v->version(), 8u) << Describe(v);
    EXPECT_EQ(L2Version(*mem, key), std::optional<uint64_t>(8));
  }
}

// (a) through GetAsync.
TEST(L2BehindTest, GetAsyncDoesNotServeAValueBelowTheLocalTombstone) {
  auto l2 = MakeInMemoryL2Store();
  auto pod = MakeCacheOrFail(Options(l2));
  auto other = MakeCacheOrFail(Options(l2));
  Source source;
  const std::string key = "post:{3}:42";
  ASSERT_EQ(other->Get(key, source.loader())->version(), 7u);
  source.version = 8;
  ASSERT_TRUE(pod->InvalidateLocal(key, 8).ok());
  Result<CachedValue> v = pod->GetAsync(key, source.loader()).get();
  EXPECT_EQ(v->version(), 8u) << Describe(v);
  EXPECT_EQ(L2Version(*l2, key), std::optional<uint64_t>(8));
}

// (b) The same through GetMany: only the key this pod saw invalidated is
// loaded; the other is served from L2 as before.
TEST(L2BehindTest, GetManyDoesNotServeAValueBelowTheLocalTombstone) {
  auto l2 = MakeInMemoryL2Store();
  CounterMetrics metrics;
  auto pod = MakeCacheOrFail(Options(l2, &metrics));
  auto other = MakeCacheOrFail(Options(l2));
  Source source;
  const std::vector<std::string> keys = {"post:{4}:1", "post:{4}:2"};
  ASSERT_TRUE(other->GetMany(keys, source.batch()).ok());  // L2: both at v7
  ASSERT_EQ(source.loads, 2);
  source.version = 8;
  ASSERT_TRUE(pod->InvalidateLocal(keys[0], 8).ok());
  Result<std::vector<Result<CachedValue>>> r = pod->GetMany(keys, source.batch());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0]->version(), 8u) << Describe((*r)[0]);
  EXPECT_EQ((*r)[0]->source(), ValueSource::kLoader);
  EXPECT_EQ((*r)[1]->version(), 7u) << "not invalidated: L2 serves it";
  EXPECT_EQ((*r)[1]->source(), ValueSource::kL2);
  EXPECT_EQ(source.loads, 3);
  EXPECT_EQ(L2Version(*l2, keys[0]), std::optional<uint64_t>(8));
  EXPECT_EQ(Behind(metrics), 1u);
}

// A negative entry ("not found") below the local tombstone: the post was
// created at v8 while L2 still says it does not exist.
TEST(L2BehindTest, ANegativeEntryBelowTheLocalTombstoneIsNotServedFromL2) {
  auto l2 = MakeInMemoryL2Store();
  auto pod = MakeCacheOrFail(Options(l2));
  auto other = MakeCacheOrFail(Options(l2));
  Source source;
  source.exists = false;
  const std::string key = "post:{5}:42";
  ASSERT_FALSE(other->Get(key, source.loader())->found());  // L2: not found, v0
  source.exists = true;
  source.version = 8;
  ASSERT_TRUE(pod->InvalidateLocal(key, 8).ok());
  Result<CachedValue> v = pod->Get(key, source.loader());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_TRUE(v->found()) << "served " << Describe(v) << ": the post exists since version 8";
  EXPECT_EQ(v->version(), 8u);
  EXPECT_EQ(L2Version(*l2, key), std::optional<uint64_t>(8));
}

// The lease-wait path: another pod holds the lease and, meanwhile, puts
// v7 in L2 (read from a replica behind the event, over an L2 that never got
// the tombstone). The waiting get does not take it when it polls.
TEST(L2BehindTest, TheLeaseWaitDoesNotServeAValueBelowTheLocalTombstone) {
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = Options(l2);
  o.lease.max_wait = 3s;
  o.hard_timeout = 5s;
  o.soft_timeout = 5s;
  auto pod = MakeCacheOrFail(o);
  Source source;
  source.version = 8;
  const std::string key = "post:{6}:42";
  Result<LeaseOutcome> held = l2->AcquireLease(key, "another-pod", 10s, 100ms);
  ASSERT_TRUE(held.ok() && held->won);
  ASSERT_TRUE(pod->InvalidateLocal(key, 8).ok());
  auto get = std::async(std::launch::async, [&] { return pod->Get(key, source.loader()); });
  std::this_thread::sleep_for(50ms);
  ASSERT_EQ(source.loads, 0) << "the get should be waiting for the other pod's lease";
  EnvelopeView e;
  e.kind = EntryKind::kValue;
  e.version = 7;
  e.written_at = std::chrono::system_clock::now();
  e.expires_at = e.written_at + 60s;
  e.payload = "v7 (lagging replica)";
  Result<std::string> bytes = EncodeEnvelope(e);
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(l2->Put(key, *bytes, 120s, 100ms).ok());
  std::this_thread::sleep_for(200ms);  // several polls see v7 under the lease
  ASSERT_TRUE(l2->ReleaseLease(key, "another-pod", 100ms).ok());
  Result<CachedValue> v = get.get();
  EXPECT_EQ(v->version(), 8u) << "served " << Describe(v) << " while waiting for the lease";
  EXPECT_EQ(source.loads, 1);
  EXPECT_EQ(L2Version(*l2, key), std::optional<uint64_t>(8));
}

// (c) The group move failed on this pod (the slot had no master): the group
// is poisoned here. After the failover L2 answers, still at the old
// generation, with the old page: not served; the loader answers, for Get
// and GetMany, until a later move succeeds.
TEST(L2BehindTest, AMemberOfAPoisonedGroupIsNotServedFromL2) {
  auto l2 = MakeInMemoryL2Store();
  CounterMetrics metrics;
  auto pod = MakeCacheOrFail(Options(l2, &metrics));
  auto other = MakeCacheOrFail(Options(l2));
  Source source;
  ASSERT_EQ(other->Get(Page(1), source.loader(), InGroup())->version(), 7u);
  ASSERT_TRUE(other->GetMany({Page(2)}, source.batch(), InGroup()).ok());
  ASSERT_EQ(pod->Get(Page(1), source.loader(), InGroup())->source(), ValueSource::kL2);
  ASSERT_EQ(source.loads, 2);
  const int shard = l2->ShardOf(kGroup);
  source.version = 8;  // a post of the feed was edited; its event reaches the pod's follower
  InMemoryL2StoreSetShardDown(l2.get(), shard, true);
  EXPECT_FALSE(pod->InvalidateMany({{kGroup, 8, true, "post-edited-8"}})[0].ok());
  InMemoryL2StoreSetShardDown(l2.get(), shard, false);  // the failover is over; the move never arrived

  Result<CachedValue> v = pod->Get(Page(1), source.loader(), InGroup());
  EXPECT_EQ(v->version(), 8u) << "served " << Describe(v) << " from a group whose move this pod saw fail";
  EXPECT_EQ(v->source(), ValueSource::kLoader);
  Result<std::vector<Result<CachedValue>>> many = pod->GetMany({Page(2)}, source.batch(), InGroup());
  ASSERT_TRUE(many.ok());
  EXPECT_EQ((*many)[0]->version(), 8u) << Describe((*many)[0]);
  EXPECT_EQ(source.loads, 4);
  EXPECT_EQ(Behind(metrics), 2u);

  // A later move (the next event, or this one applied again) ends it.
  ASSERT_TRUE(pod->InvalidateMany({{kGroup, 8, true, "post-edited-8"}})[0].ok());
  ASSERT_EQ(pod->Get(Page(1), source.loader(), InGroup())->version(), 8u);  // reloaded: the group moved
  const int loads = source.loads;
  pod->l1()->Clear();
  EXPECT_EQ(pod->Get(Page(1), source.loader(), InGroup())->source(), ValueSource::kL2)
      << "after a successful move L2 serves the group's members again";
  EXPECT_EQ(source.loads, loads);
}

// (d) L2 lost a move in a failover: the group's generation is back at the
// one before the move this pod saw, and the old page is current there
// again. This pod does not serve it; a pod that did not see the move does
// (the limit: L2 stays stale for it until the consumer applies the event).
TEST(L2BehindTest, AMemberBelowTheGenerationThisPodSawIsNotServedFromL2) {
  auto l2 = MakeInMemoryL2Store();
  auto pod = MakeCacheOrFail(Options(l2));
  auto unaware = MakeCacheOrFail(Options(l2));
  Source source;
  ASSERT_EQ(pod->Get(Page(1), source.loader(), InGroup())->version(), 7u);
  Result<std::optional<std::string>> before = l2->Get(GroupKeyFor(kGroup), 100ms);
  ASSERT_TRUE(before.ok() && before->has_value());
  source.version = 8;
  Result<uint64_t> moved = pod->InvalidateGroup(kGroup, 8);
  ASSERT_TRUE(moved.ok());
  // The new master never received the move: generation and floor as before.
  InMemoryL2StorePutRaw(l2.get(), GroupKeyFor(kGroup), **before);
  ASSERT_LT(std::stoull(**before), *moved);
  InMemoryL2StorePutRaw(l2.get(), GroupFloorKeyFor(kGroup), "1");

  EXPECT_EQ(unaware->Get(Page(1), source.loader(), InGroup())->version(), 7u)
      << "(the limit: a pod that has not seen the move reads L2 as it is)";
  Result<CachedValue> v = pod->Get(Page(1), source.loader(), InGroup());
  EXPECT_EQ(v->version(), 8u) << "served " << Describe(v) << " from a generation below the one this pod saw";
  EXPECT_EQ(source.loads, 2);
  auto later = MakeCacheOrFail(Options(l2));
  EXPECT_EQ(later->Get(Page(1), source.loader(), InGroup())->version(), 8u)
      << "the load refilled the page under L2's generation";
  EXPECT_EQ(source.loads, 2);
}

// (e) Without local knowledge nothing changes: L2 hits are hits, also for
// versions at or above what this pod saw, keys it did not see invalidated,
// after an unversioned local invalidation (it records no version), and
// group members at or above the generation it saw.
TEST(L2BehindTest, WithoutLocalKnowledgeL2IsServedAsBefore) {
  auto l2 = MakeInMemoryL2Store();
  CounterMetrics metrics;
  auto pod = MakeCacheOrFail(Options(l2, &metrics));
  auto other = MakeCacheOrFail(Options(l2));
  Source source;
  for (const char* k : {"post:{8}:1", "post:{8}:2", "post:{8}:3", "post:{8}:4"}) {
    ASSERT_TRUE(other->Get(k, source.loader()).ok());
  }
  ASSERT_EQ(source.loads, 4);
  const uint64_t hits = metrics.snapshot().get(Counter::kHit, Tier::kL2);

  ASSERT_TRUE(pod->InvalidateLocal("post:{8}:2", 7).ok());  // at the version L2 holds
  ASSERT_TRUE(pod->InvalidateLocal("post:{8}:3", 6).ok());  // an old event
  ASSERT_TRUE(pod->InvalidateLocal("post:{8}:4", 0).ok());  // unversioned: L1 only
  ASSERT_TRUE(pod->InvalidateLocal("post:{8}:99", 9).ok());  // another key
  for (const char* k : {"post:{8}:1", "post:{8}:2", "post:{8}:3", "post:{8}:4"}) {
    Result<CachedValue> v = pod->Get(k, source.loader());
    EXPECT_EQ(v->source(), ValueSource::kL2) << k << ": " << Describe(v);
  }
  // The group: this pod moved it, another pod filled the page under the
  // new generation; this pod serves it from L2.
  ASSERT_TRUE(pod->InvalidateGroup(kGroup).ok());
  ASSERT_EQ(other->Get(Page(1), source.loader(), InGroup())->source(), ValueSource::kLoader);
  EXPECT_EQ(pod->Get(Page(1), source.loader(), InGroup())->source(), ValueSource::kL2);
  EXPECT_EQ(source.loads, 5);
  EXPECT_EQ(metrics.snapshot().get(Counter::kHit, Tier::kL2), hits + 5);
  EXPECT_EQ(Behind(metrics), 0u);
}

// The bound: what this pod saw keeps L2's older entries out for
// tombstone_ttl (the consumer's time to apply the event); then L2 is
// trusted again, for keys and for a poisoned group.
TEST(L2BehindTest, LocalKnowledgeKeepsL2OutForTombstoneTtl) {
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = Options(l2);
  o.tombstone_ttl = 1s;
  o.use_l1 = false;  // only L2 and the loader
  auto pod = MakeCacheOrFail(o);
  auto other = MakeCacheOrFail(Options(l2));
  Source source;
  const std::string key = "post:{9}:42";
  ASSERT_EQ(other->Get(key, source.loader())->version(), 7u);
  ASSERT_EQ(other->Get(Page(1), source.loader(), InGroup())->version(), 7u);
  ASSERT_TRUE(pod->InvalidateLocal(key, 8).ok());
  const int shard = l2->ShardOf(kGroup);
  InMemoryL2StoreSetShardDown(l2.get(), shard, true);
  ASSERT_FALSE(pod->InvalidateGroup(kGroup).ok());  // poisoned here
  InMemoryL2StoreSetShardDown(l2.get(), shard, false);
  // The source is at 7 still (a replica behind the event): every get loads
  // while the pod knows better than L2, its L1 off; it never takes L2's v7.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(pod->Get(key, source.loader())->source(), ValueSource::kLoader) << i;
    EXPECT_EQ(pod->Get(Page(1), source.loader(), InGroup())->source(), ValueSource::kLoader) << i;
  }
  std::this_thread::sleep_for(1100ms);
  EXPECT_EQ(pod->Get(key, source.loader())->source(), ValueSource::kL2);
  EXPECT_EQ(pod->Get(Page(1), source.loader(), InGroup())->source(), ValueSource::kL2);
}

// ---- The tables -------------------------------------------------------------

TEST(SeenVersionsTest, TheHighestVersionStandsUntilItsTtlEnds) {
  FakeClock clock;
  SeenVersions seen(64, 10s);
  EXPECT_EQ(seen.Floor("k", clock), 0u);
  seen.Note("k", 8, clock.Now());
  EXPECT_EQ(seen.Floor("k", clock), 8u);
  EXPECT_EQ(seen.Floor("other", clock), 0u);
  clock.Advance(6s);
  seen.Note("k", 5, clock.Now());  // an old event: neither lowers nor extends
  EXPECT_EQ(seen.Floor("k", clock), 8u);
  clock.Advance(4s);
  EXPECT_EQ(seen.Floor("k", clock), 0u) << "10 s after version 8 was noted";
  seen.Note("k", 9, clock.Now());
  clock.Advance(9s);
  EXPECT_EQ(seen.Floor("k", clock), 9u);
  seen.Note("j", 1, clock.Now());  // sweeps what expired in its stripe, at most
  clock.Advance(2s);
  EXPECT_EQ(seen.Floor("k", clock), 0u);
}

TEST(SeenVersionsTest, AFullTableForgetsTheOldestNotesOnly) {
  FakeClock clock;
  SeenVersions seen(SeenVersions::kStripes * 4, 60s);  // 5 per stripe
  for (int i = 0; i < 1000; ++i) {
    seen.Note("k" + std::to_string(i), 1, clock.Now());
    clock.Advance(1ms);
  }
  EXPECT_LE(seen.size(), SeenVersions::kStripes * 5);
  EXPECT_EQ(seen.Floor("k999", clock), 1u) << "the newest note stays";
  EXPECT_EQ(seen.Floor("k0", clock), 0u) << "the oldest is forgotten";
  clock.Advance(61s);
  seen.Note("x", 1, clock.Now());
  EXPECT_EQ(seen.Floor("k999", clock), 0u);
}

TEST(GroupTableL2Test, L2IsRefusedWhileTheKnowledgeIsFresh) {
  GroupTable t(32);
  const Clock::TimePoint t0{std::chrono::seconds(100)};
  EXPECT_TRUE(t.ServesFromL2("g", 1, t0)) << "an unknown group";
  ASSERT_TRUE(t.Raise("g", 10, t.BeginMove(), t0 + 30s));
  EXPECT_FALSE(t.ServesFromL2("g", 9, t0)) << "L2 lost the move to 10";
  EXPECT_TRUE(t.ServesFromL2("g", 10, t0));
  EXPECT_TRUE(t.ServesFromL2("g", 9, t0 + 30s)) << "past the window L2 is trusted again";
  ASSERT_TRUE(t.Poison("g", t.BeginMove(), t0 + 60s));
  EXPECT_FALSE(t.ServesFromL2("g", 11, t0 + 59s)) << "poisoned";
  EXPECT_TRUE(t.ServesFromL2("g", 11, t0 + 60s));
  EXPECT_FALSE(t.Accepts("g", 11)) << "L1 keeps the poison until a later move";
  ASSERT_TRUE(t.Raise("g", 11, t.BeginMove(), t0 + 90s));
  EXPECT_TRUE(t.ServesFromL2("g", 11, t0 + 61s));
  EXPECT_FALSE(t.ServesFromL2("g", 10, t0 + 61s));
}

}  // namespace
}  // namespace tiercache
