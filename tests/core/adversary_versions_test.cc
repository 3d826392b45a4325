// Regression tests: each reproduces a defect an adversarial review found
// (its comment tells the defect); each failed before its fix.
// Adversarial review: version rules of Cache (cache.h "Versions", docs/consistency.md §4)
// over the in-memory L2 store (same rules as the Lua scripts).
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

Loader Returning(std::optional<std::string> payload, std::optional<uint64_t> version,
                 std::atomic<int>* calls = nullptr) {
  return [=](std::string_view) -> Result<LoadResult> {
    if (calls) calls->fetch_add(1);
    return LoadResult{payload, version};
  };
}

Loader Failing() {
  return [](std::string_view) -> Result<LoadResult> { return Status::Unavailable("source down"); };
}

using ::tiercache::testing::Describe;

// A row deleted at version 5 (the delete event is invalidated with its
// version, as README's example does for writes). The loader now finds no row
// and, as docs/consistency.md §4 tells it, returns "not found" without a
// version (it no longer knows the row's). Expected: the key reads as
// not-found. The defect (found in review): every get on every pod failed with
// kAborted for tombstone_ttl, because the fill of the version-0 negative was
// refused by the version-5 tombstone. Now the unversioned not-found takes the
// tombstone's version (l2_store.h).
TEST(AdversaryVersions, DeletedRowInvalidatedWithItsVersionReadsAsNotFound) {
  auto l2 = MakeInMemoryL2Store();
  auto a = Make(Base(l2));
  auto b = Make(Base(l2));
  ASSERT_TRUE(a && b);
  const std::string key = "row:deleted";
  Result<CachedValue> v = a->Get(key, Returning("body", 4));
  ASSERT_TRUE(v.ok()) << Describe(v);
  ASSERT_TRUE(a->Invalidate(key, 5).ok());  // the delete event, at version 5

  std::atomic<int> calls{0};
  v = b->Get(key, Returning(std::nullopt, std::nullopt, &calls));
  EXPECT_TRUE(v.ok() && !v->found()) << "unversioned not-found after a versioned delete: " << Describe(v)
                                     << " (loader calls: " << calls.load() << ")";
  // The same when the loader returns the deleted row's last version (4), the
  // other option §4 gives.
  v = b->Get(key, Returning(std::nullopt, 4, &calls));
  EXPECT_TRUE(v.ok() && !v->found()) << "not-found at the row's last version: " << Describe(v);
}

// cache.h: Invalidate is "Idempotent". An unversioned invalidation of a
// versioned key once tombstoned at stored + 1: delivered twice (two pods, or a
// redelivered event) it reached stored + 2, so the source's real next version
// was refused for tombstone_ttl. Now it tombstones at the stored version.
TEST(AdversaryVersions, UnversionedInvalidateDeliveredTwiceIsIdempotent) {
  auto l2 = MakeInMemoryL2Store();
  auto a = Make(Base(l2));
  auto b = Make(Base(l2));
  ASSERT_TRUE(a && b);
  const std::string key = "row:twice";
  ASSERT_TRUE(a->Get(key, Returning("v5", 5)).ok());
  // The row is written (now version 6); both pods invalidate it, unversioned.
  ASSERT_TRUE(a->Invalidate(key).ok());
  ASSERT_TRUE(b->Invalidate(key).ok());
  Result<CachedValue> v = a->Get(key, Returning("v6", 6));
  EXPECT_TRUE(v.ok() && v->version() == 6) << "version 6 after the write: " << Describe(v);
}

// The same rule with one unversioned invalidation and no write at all (e.g.
// an operator's purge): the source stays at 5; a tombstone at 6 made the key
// unreadable for tombstone_ttl.
TEST(AdversaryVersions, UnversionedPurgeOfAnUnchangedVersionedRowIsReadable) {
  auto l2 = MakeInMemoryL2Store();
  auto a = Make(Base(l2));
  ASSERT_TRUE(a);
  const std::string key = "row:purged";
  ASSERT_TRUE(a->Get(key, Returning("v5", 5)).ok());
  ASSERT_TRUE(a->Invalidate(key).ok());
  Result<CachedValue> v = a->Get(key, Returning("v5", 5));
  EXPECT_TRUE(v.ok() && v->version() == 5) << "the unchanged row after a purge: " << Describe(v);
}

// A gate a loader blocks on.
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

// Guarantee 1 / Invalidate's promise ("once it returns OK, no get on any pod
// returns a version below `version` from L2"). A versioned invalidation over
// a stored entry of version >= v drops nothing. It once left no trace at all:
// if that stored entry then disappeared (physical TTL, or ordinary eviction
// of a value key), a load that read version 4 before the invalidation filled
// it after the invalidation returned. Now it raises the key's version floor.
TEST(AdversaryVersions, NoOpVersionedInvalidateLeavesNoFenceForALoadInFlight) {
  FakeClock clock;
  auto l2 = MakeInMemoryL2Store(&clock);
  auto a = Make(Base(l2, &clock));
  auto b = Make(Base(l2, &clock));
  auto c = Make(Base(l2, &clock));
  ASSERT_TRUE(a && b && c);
  const std::string key = "row:noop";

  // Pod A starts loading; its loader reads version 4 (e.g. from a lagging
  // replica) and is slow to return.
  Gate gate;
  Loader slow_v4 = [&](std::string_view) -> Result<LoadResult> {
    gate.Enter();
    return LoadResult{std::string("v4"), 4};
  };
  std::thread pod_a([&] { (void)a->Get(key, slow_v4); });
  gate.WaitEntered();

  // Pod B batch-loads version 5 (no lease for batches) with a short TTL.
  GetOptions short_lived;
  short_lived.ttl = 1s;
  short_lived.max_stale = 0ms;
  auto many = b->GetMany(
      {key}, [](const std::vector<std::string>&) -> Result<std::vector<LoadResult>> {
        return std::vector<LoadResult>{LoadResult{std::string("v5"), 5}};
      },
      short_lived);
  ASSERT_TRUE(many.ok() && (*many)[0].ok()) << "B's batch load";
  ASSERT_EQ((*many)[0]->version(), 5u);

  // The write of version 5 is invalidated: a no-op, L2 already holds 5.
  ASSERT_TRUE(c->Invalidate(key, 5).ok());

  // B's entry expires (1 s TTL + 0 stale); A's load is 3 s old (< max_load_age).
  clock.Advance(3s);
  gate.Open();
  pod_a.join();
  for (int i = 0; i < 200; ++i) {  // A's fill runs on its loader thread
    Result<std::optional<std::string>> raw = l2->Get(key, 100ms);
    if (raw.ok() && raw->has_value()) break;
    std::this_thread::sleep_for(5ms);
  }
  Result<CachedValue> v = c->Get(key, Failing());
  EXPECT_FALSE(v.ok() && v->found() && v->version() < 5)
      << "a value read before Invalidate(key, 5) was stored after it returned: " << Describe(v);
}

}  // namespace
}  // namespace tiercache
