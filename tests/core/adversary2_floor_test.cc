// Regression tests: each reproduces a defect an adversarial review found
// (its comment tells the defect); each failed before its fix.
// Adversarial review 2 (of d2030a5): the version floor and the unversioned
// "not found", over the in-memory L2 store (same rules as the Lua scripts;
// adversary2_differential_itest.cc checks that they agree).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "core/cache_test_util.h"
#include "tiercache/cache.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;

CacheOptions Base(std::shared_ptr<L2Store> l2, Clock* clock = nullptr) {
  CacheOptions o;
  o.l2 = std::move(l2);
  o.clock = clock;
  o.ttl_jitter = 0;
  o.early_refresh_beta = 0;
  o.l1.default_ttl = 1s;
  return o;
}

std::unique_ptr<Cache> Make(CacheOptions o) { return ::tiercache::testing::MakeCacheOrFail(std::move(o)); }

using ::tiercache::testing::Describe;

struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false, entered = false;
  void Enter() {
    std::unique_lock<std::mutex> l(mu);
    entered = true;
    cv.notify_all();
    cv.wait(l, [&] { return open; });
  }
  void WaitEntered() {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return entered; });
  }
  void Open() {
    std::lock_guard<std::mutex> l(mu);
    open = true;
    cv.notify_all();
  }
};

// The eviction of a value key (Redis may evict values, not fences or
// tombstones: docs/consistency.md "Known limits").
void Evict(L2Store& l2, const std::string& key) {
  Result<std::optional<std::string>> raw = l2.Get(key, 100ms);
  ASSERT_TRUE(raw.ok() && raw->has_value());
  ASSERT_TRUE(*l2.RemoveCorrupt(key, **raw, 100ms));
}

// Guarantee 1 ("no value read before an invalidation is ever stored after
// it") and Invalidate's promise ("no get on any pod returns a version below
// `version` from L2"), for the load the docs tell users to write: "not
// found" without a version. The floor that d2030a5 added is checked for
// versioned fills only, and the "takes the tombstone's version" rule needs a
// stored entry: with the value key evicted, the unversioned not-found read
// BEFORE the row existed is stored at version 0 AFTER Invalidate(key, 5)
// returned. With the v5 entry still stored, the same fill is refused.
TEST(Adversary2Floor, NotFoundReadBeforeCreationIsStoredAfterNoOpInvalidateAndEviction) {
  auto l2 = MakeInMemoryL2Store();
  auto a = Make(Base(l2));
  auto b = Make(Base(l2));
  auto c = Make(Base(l2));
  ASSERT_TRUE(a && b && c);
  const std::string key = "row:created";

  // Pod A's loader reads the source before the row exists (or a replica
  // that lags behind its creation) and is slow to return.
  // A reload (after the fence refused this read) finds the row.
  Gate gate;
  std::atomic<int> reads{0};
  Loader slow_not_found = [&](std::string_view) -> Result<LoadResult> {
    if (reads.fetch_add(1) > 0) return LoadResult{std::string("row v5"), 5};
    gate.Enter();
    return LoadResult{std::nullopt, std::nullopt};
  };
  std::thread pod_a([&] { (void)a->Get(key, slow_not_found); });
  gate.WaitEntered();

  // The row is created (its version reaches 5); pod B batch-loads it.
  auto many = b->GetMany({key}, [](const std::vector<std::string>&) -> Result<std::vector<LoadResult>> {
    return std::vector<LoadResult>{LoadResult{std::string("row v5"), 5}};
  });
  ASSERT_TRUE(many.ok() && (*many)[0].ok() && (*many)[0]->version() == 5u);
  // The write's event: a no-op in L2 (it holds 5), the floor rises to 5.
  ASSERT_TRUE(c->Invalidate(key, 5).ok());
  Evict(*l2, key);

  gate.Open();
  pod_a.join();
  for (int i = 0; i < 200; ++i) {  // A's fill runs on its loader thread
    Result<std::optional<std::string>> raw = l2->Get(key, 100ms);
    if (raw.ok() && raw->has_value()) break;
    std::this_thread::sleep_for(5ms);
  }
  Result<CachedValue> v = c->Get(key, [](std::string_view) -> Result<LoadResult> {
    return LoadResult{std::string("row v5"), 5};
  });
  EXPECT_TRUE(v.ok() && v->found() && v->version() >= 5)
      << "after Invalidate(key, 5) returned, pod C got " << Describe(v)
      << " (a not-found pod A read before the row existed, stored after the invalidation)";
}

// docs/consistency.md §4, cache.h (Invalidate) and l2_store.h: "A versioned
// invalidation at v <= the key's floor is old or redelivered: it writes
// nothing." The scripts test `floor > v` only: a redelivery at v == floor
// after the tombstone expired (tombstone_ttl 30 s < kFenceLifetime 10 min)
// writes a tombstone and a NEW EPOCH, refusing a load of the current version
// that was in flight.
TEST(Adversary2Floor, RedeliveredInvalidationAtTheFloorWritesNothing) {
  FakeClock clock;
  auto l2 = MakeInMemoryL2Store(&clock);
  auto a = Make(Base(l2, &clock));
  ASSERT_TRUE(a);
  const std::string key = "row:redelivered";
  ASSERT_TRUE(a->Invalidate(key, 5).ok());  // applies: tombstone 5, floor 5
  clock.Advance(31s);                       // the tombstone expires; the fence (floor 5) lives on
  const FenceSnapshot before = l2->Snapshot({key}, 100ms)[0].value();
  ASSERT_FALSE(before.epoch.empty());
  ASSERT_TRUE(a->Invalidate(key, 5).ok());  // the same event, redelivered
  const FenceSnapshot after = l2->Snapshot({key}, 100ms)[0].value();
  Result<std::optional<std::string>> raw = l2->Get(key, 100ms);
  EXPECT_EQ(before.epoch, after.epoch) << "a redelivered invalidation at the floor replaced the epoch";
  EXPECT_TRUE(raw.ok() && !raw->has_value()) << "a redelivered invalidation at the floor wrote a tombstone";
}

// docs/consistency.md §4: "after Invalidate(k, 5) for a delete, the loader's
// plain "not found" is cached as a negative entry of version 5". L2 has it
// at 5, but the caller gets version 0 and this pod's L1 refuses it (its
// tombstone is 5): FillMany fills L1 with the unversioned envelope.
TEST(Adversary2Floor, ReversionedNotFoundReachesCallerAndL1AtItsL2Version) {
  auto l2 = MakeInMemoryL2Store();
  auto a = Make(Base(l2));
  ASSERT_TRUE(a);
  const std::string key = "row:deleted";
  ASSERT_TRUE(a->Get(key, [](std::string_view) -> Result<LoadResult> { return LoadResult{std::string("b"), 4}; }).ok());
  ASSERT_TRUE(a->Invalidate(key, 5).ok());
  Result<CachedValue> v =
      a->Get(key, [](std::string_view) -> Result<LoadResult> { return LoadResult{std::nullopt, std::nullopt}; });
  ASSERT_TRUE(v.ok() && !v->found()) << Describe(v);
  EXPECT_EQ(v->version(), 5u) << "L2 stores this not-found at version 5; the caller got " << Describe(v);
  Result<std::optional<L1Entry>> l1 = a->l1()->Get(key);
  EXPECT_TRUE(l1.ok() && l1->has_value()) << "the not-found L2 stored is not in this pod's L1";
}

}  // namespace
}  // namespace tiercache
