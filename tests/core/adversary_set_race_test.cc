// Regression tests: each reproduces a defect an adversarial review found
// (its comment tells the defect); each failed before its fix.
// Adversarial review: Set (write-through) racing this pod's own Invalidate,
// and pods configured with different max_load_age.
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

// Delegates to an in-memory store; a write-through Fill can be held after it
// reached the store, until the test lets it return.
class GatedStore final : public L2Store {
 public:
  explicit GatedStore(std::shared_ptr<L2Store> inner) : inner_(std::move(inner)) {}
  std::atomic<bool> hold_write_through{false};
  void WaitHeld() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return held_; });
  }
  void Release() {
    std::lock_guard<std::mutex> l(mu_);
    go_ = true;
    cv_.notify_all();
  }

  Result<std::optional<std::string>> Get(std::string_view k, milliseconds t) override { return inner_->Get(k, t); }
  std::vector<Result<std::optional<std::string>>> GetMany(const std::vector<std::string>& k, milliseconds t) override {
    return inner_->GetMany(k, t);
  }
  std::vector<Result<FenceSnapshot>> Snapshot(const std::vector<std::string>& k, milliseconds t) override {
    return inner_->Snapshot(k, t);
  }
  std::vector<Result<FenceOutcome>> Fill(const std::vector<FillRequest>& f, milliseconds a, milliseconds ft,
                                         milliseconds t) override {
    auto out = inner_->Fill(f, a, ft, t);
    if (!f.empty() && f[0].write_through && hold_write_through.exchange(false)) {
      std::unique_lock<std::mutex> l(mu_);
      held_ = true;
      cv_.notify_all();
      cv_.wait(l, [&] { return go_; });
    }
    return out;
  }
  Status Put(std::string_view k, std::string_view e, milliseconds p, milliseconds t) override {
    return inner_->Put(k, e, p, t);
  }
  Result<FenceOutcome> Invalidate(const InvalidateRequest& q, milliseconds f, milliseconds t) override {
    return inner_->Invalidate(q, f, t);
  }
  Result<bool> RemoveCorrupt(std::string_view k, std::string_view b, milliseconds t) override {
    return inner_->RemoveCorrupt(k, b, t);
  }
  Result<LeaseOutcome> AcquireLease(std::string_view k, std::string_view tok, milliseconds ttl,
                                    milliseconds t) override {
    return inner_->AcquireLease(k, tok, ttl, t);
  }
  Result<bool> ExtendLease(std::string_view k, std::string_view tok, milliseconds ttl, milliseconds t) override {
    return inner_->ExtendLease(k, tok, ttl, t);
  }
  Result<bool> ReleaseLease(std::string_view k, std::string_view tok, milliseconds t) override {
    return inner_->ReleaseLease(k, tok, t);
  }
  int ShardOf(std::string_view k) const override { return inner_->ShardOf(k); }

 private:
  std::shared_ptr<L2Store> inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false, go_ = false;
};

CacheOptions Base(std::shared_ptr<L2Store> l2, Clock* clock = nullptr) {
  CacheOptions o;
  o.l2 = std::move(l2);
  o.clock = clock;
  o.ttl_jitter = 0;
  o.early_refresh_beta = 0;
  o.l1.default_ttl = 10s;
  return o;
}

using ::tiercache::testing::Describe;

// Set writes L2, then bumps the local fence and fills L1. It once read the
// epoch for that fill AFTER its own bump, so an Invalidate that reached L2
// after the Set's write and finished its L1 erase before the Set's L1 fill
// was overwritten in L1: L2 held the tombstone, this pod's L1 the Set's
// value. Now Set reads the epoch before its L2 write and fills L1 only if
// no other bump came between.
TEST(AdversarySetRace, InvalidateThatReturnedAfterAConcurrentSetsL2WriteDropsItFromL1) {
  auto inner = MakeInMemoryL2Store();
  auto gated = std::make_shared<GatedStore>(inner);
  auto made = Cache::Create(Base(gated));
  ASSERT_TRUE(made.ok());
  std::unique_ptr<Cache> cache = std::move(*made);
  const std::string key = "row:set-race";

  gated->hold_write_through = true;
  std::thread writer([&] { EXPECT_TRUE(cache->Set(key, "written-by-set", std::nullopt).ok()); });
  gated->WaitHeld();                         // Set's value is in L2 now
  ASSERT_TRUE(cache->Invalidate(key).ok());  // tombstone over it; L1 erased; returns OK
  gated->Release();
  writer.join();

  Result<std::optional<std::string>> raw = inner->Get(key, 100ms);
  ASSERT_TRUE(raw.ok() && raw->has_value());
  Result<EnvelopeView> e = DecodeEnvelope(**raw);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->kind, EntryKind::kTombstone) << "L2 ends invalidated";

  Result<CachedValue> v = cache->Get(key, [](std::string_view) -> Result<LoadResult> {
    return LoadResult{std::string("from-source"), std::nullopt};
  });
  EXPECT_FALSE(v.ok() && v->payload() == "written-by-set")
      << "a get after Invalidate returned got the value it invalidated: " << Describe(v);
}

// max_load_age is per Cache. The fence's lifetime once depended on the
// INVALIDATING pod's max_load_age while the age check uses the FILLING
// pod's: with pods configured differently (a rolling config change), a load
// on a pod with a long max_load_age outlived the epoch written by a pod with
// a short one and filled a value read before the invalidation. The fence
// now lives kFenceLifetime, fixed, and max_load_age is at most half of it.
TEST(AdversarySetRace, PodsWithDifferentMaxLoadAgeStillFenceEachOther) {
  FakeClock clock;
  auto l2 = MakeInMemoryL2Store(&clock);
  CacheOptions slow = Base(l2, &clock);
  slow.max_load_age = 60s;
  CacheOptions quick = Base(l2, &clock);
  quick.max_load_age = 2s;
  auto a = Cache::Create(slow);
  auto b = Cache::Create(quick);
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string key = "row:mixed-age";

  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, open = false;
  std::atomic<int> reads{0};
  Loader old_read = [&](std::string_view) -> Result<LoadResult> {
    if (reads.fetch_add(1) > 0) {  // a reload, after the invalidation: the source moved on
      return LoadResult{std::string("after-invalidation"), std::nullopt};
    }
    std::unique_lock<std::mutex> l(mu);
    entered = true;
    cv.notify_all();
    cv.wait(l, [&] { return open; });
    return LoadResult{std::string("before-invalidation"), std::nullopt};
  };
  std::thread pod_a([&] { (void)(*a)->Get(key, old_read); });
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return entered; });
  }
  ASSERT_TRUE((*b)->Invalidate(key).ok());  // epoch lives 4 s
  clock.Advance(5s);                         // A's load is 5 s old (< its 60 s)
  {
    std::lock_guard<std::mutex> l(mu);
    open = true;
    cv.notify_all();
  }
  pod_a.join();
  for (int i = 0; i < 200; ++i) {
    Result<std::optional<std::string>> raw = l2->Get(key, 100ms);
    if (raw.ok() && raw->has_value()) break;
    std::this_thread::sleep_for(5ms);
  }
  Result<CachedValue> v = (*b)->Get(key, [](std::string_view) -> Result<LoadResult> {
    return LoadResult{std::string("after-invalidation"), std::nullopt};
  });
  EXPECT_FALSE(v.ok() && v->payload() == "before-invalidation")
      << "a value read before the invalidation was stored after it: " << Describe(v);
}

}  // namespace
}  // namespace tiercache
