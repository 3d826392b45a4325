// The tiered cache's logic over the in-memory L2 store (same fencing rules as
// the Redis scripts). The same behaviours run against the real Redis Cluster
// in cache_itest.cc.
#include "common/forwarding_l2_store.h"
#include "core/cache_test_util.h"
#include "core/local_fence.h"
#include "tiercache/cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <thread>
#include <vector>

#include "tiercache/envelope.h"
#include "tiercache/redis/slot.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;

// A loader returning "<key>@<version>" for a settable version, counting calls.
struct CountingLoader {
  std::atomic<int> calls{0};
  std::atomic<uint64_t> version{1};
  std::chrono::milliseconds delay{0};
  std::atomic<bool> fail{false};
  std::atomic<bool> missing{false};

  Loader Get() {
    return [this](std::string_view key) -> Result<LoadResult> {
      calls.fetch_add(1);
      if (delay.count() > 0) std::this_thread::sleep_for(delay);
      if (fail) return Status::Unavailable("source down");
      LoadResult r;
      r.version = version.load();
      if (!missing) r.payload = std::string(key) + "@" + std::to_string(*r.version);
      return r;
    };
  }
};

CacheOptions BaseOptions(std::shared_ptr<L2Store> l2, Clock* clock = nullptr) {
  CacheOptions o;
  o.l2 = std::move(l2);
  o.clock = clock;
  o.ttl_jitter = 0;
  o.early_refresh_beta = 0;  // tests that want XFetch turn it on
  o.l1.default_ttl = 1s;
  return o;
}

std::unique_ptr<Cache> Make(CacheOptions o) { return ::tiercache::testing::MakeCacheOrFail(std::move(o)); }

TEST(CacheTest, RejectsNonsenseOptions) {
  CacheOptions o;
  o.soft_timeout = 3s;
  o.hard_timeout = 1s;
  EXPECT_TRUE(Cache::Create(o).status().IsInvalidArgument());
  o = CacheOptions();
  o.ttl_jitter = 0.9;
  EXPECT_TRUE(Cache::Create(o).status().IsInvalidArgument());
  o = CacheOptions();
  o.lease.poll_max = 1ms;
  o.lease.poll_min = 5ms;
  EXPECT_TRUE(Cache::Create(o).status().IsInvalidArgument());
}

TEST(CacheTest, ColdGetLoadsOnceThenHitsL1ThenL2) {
  auto l2 = MakeInMemoryL2Store();
  CountingLoader loader;
  auto cache = Make(BaseOptions(l2));
  Result<CachedValue> v = cache->Get("posts:{community:42}:7", loader.Get());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_TRUE(v->found());
  EXPECT_EQ(v->payload(), "posts:{community:42}:7@1");
  EXPECT_EQ(v->source(), ValueSource::kLoader);
  EXPECT_EQ(cache->Get("posts:{community:42}:7", loader.Get())->source(), ValueSource::kL1);

  // A second "pod" with its own L1 finds the value in the shared L2.
  auto other = Make(BaseOptions(l2));
  Result<CachedValue> w = other->Get("posts:{community:42}:7", loader.Get());
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->source(), ValueSource::kL2);
  EXPECT_EQ(w->payload(), "posts:{community:42}:7@1");
  EXPECT_EQ(loader.calls.load(), 1);
}

// An L1 hit is built from the L1 entry and the envelope read without
// parsing (read_path.cc): every field must equal what the load returned,
// for a plain key and for a group member.
TEST(CacheTest, AnL1HitReturnsEveryFieldTheLoadReturned) {
  for (const std::string group : {"", "feed:{community:42}"}) {
    CountingLoader loader;
    loader.version = 7;
    loader.delay = 3ms;  // a measurable δ
    auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
    GetOptions g;
    g.group = group;
    Result<CachedValue> loaded = cache->Get("posts:{community:42}:7", loader.Get(), g);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    ASSERT_EQ(loaded->source(), ValueSource::kLoader);
    Result<CachedValue> hit = cache->Get("posts:{community:42}:7", loader.Get(), g);
    ASSERT_TRUE(hit.ok()) << hit.status().ToString();
    EXPECT_EQ(hit->source(), ValueSource::kL1) << group;
    EXPECT_TRUE(hit->found());
    EXPECT_FALSE(hit->stale());
    EXPECT_EQ(hit->payload(), loaded->payload());
    EXPECT_EQ(hit->version(), 7u);
    EXPECT_EQ(hit->expires_at(), loaded->expires_at());
    EXPECT_EQ(hit->load_duration(), loaded->load_duration());
    EXPECT_GE(hit->load_duration(), 3ms);
    EXPECT_EQ(loader.calls.load(), 1);
    // The hit above read the fill's description, not the envelope's header.
    Result<std::optional<L1Entry>> raw = cache->l1()->Get("posts:{community:42}:7");
    ASSERT_TRUE(raw.ok() && raw->has_value());
    EXPECT_NE((*raw)->user_data, 0u) << "the fill did not describe the envelope";
  }
}

TEST(CacheTest, BadKeysAreRejectedWithoutLoading) {
  CountingLoader loader;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  EXPECT_TRUE(cache->Get("", loader.Get()).status().IsInvalidArgument());
  EXPECT_TRUE(cache->Get(std::string(5000, 'k'), loader.Get()).status().IsInvalidArgument());
  EXPECT_EQ(loader.calls.load(), 0);
}

TEST(CacheTest, L1CopyNeverOutlivesTheL2Expiry) {
  FakeClock clock;
  auto l2 = MakeInMemoryL2Store(&clock);
  CountingLoader loader;
  CacheOptions o = BaseOptions(l2, &clock);
  o.l1.default_ttl = 10s;
  o.ttl = 2s;
  auto cache = Make(o);
  ASSERT_TRUE(cache->Get("k", loader.Get()).ok());
  clock.Advance(1900ms);
  EXPECT_EQ(cache->Get("k", loader.Get())->source(), ValueSource::kL1);
  clock.Advance(200ms);  // past the L2 expiry, well inside the L1 TTL
  Result<CachedValue> v = cache->Get("k", loader.Get());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->source(), ValueSource::kLoader);
  EXPECT_EQ(loader.calls.load(), 2);
}

TEST(CacheTest, NotFoundIsCachedAsNegativeForItsOwnTtl) {
  FakeClock clock;
  CountingLoader loader;
  loader.missing = true;
  CacheOptions o = BaseOptions(MakeInMemoryL2Store(&clock), &clock);
  o.negative_ttl = 500ms;
  o.l1.negative_ttl = 500ms;
  auto cache = Make(o);
  Result<CachedValue> v = cache->Get("ghost", loader.Get());
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->found());
  EXPECT_FALSE(cache->Get("ghost", loader.Get())->found());
  EXPECT_EQ(loader.calls.load(), 1);
  clock.Advance(600ms);
  loader.missing = false;
  v = cache->Get("ghost", loader.Get());
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->found());
  EXPECT_EQ(loader.calls.load(), 2);
}

TEST(CacheTest, TtlJitterSpreadsExpiries) {
  CountingLoader loader;
  CacheOptions o = BaseOptions(MakeInMemoryL2Store());
  o.ttl = 10s;
  o.ttl_jitter = 0.2;
  o.use_l1 = false;
  auto cache = Make(o);
  double lo = 1e9, hi = 0;
  const auto now = std::chrono::system_clock::now();
  for (int i = 0; i < 300; ++i) {
    Result<CachedValue> v = cache->Get("jit:" + std::to_string(i), loader.Get());
    ASSERT_TRUE(v.ok());
    const double secs = std::chrono::duration<double>(v->expires_at() - now).count();
    lo = std::min(lo, secs);
    hi = std::max(hi, secs);
  }
  EXPECT_GE(lo, 7.9);
  EXPECT_LE(hi, 12.1);
  EXPECT_GT(hi - lo, 3.0) << "300 draws in [8 s, 12 s] should spread over most of it";
}

TEST(CacheTest, CorruptOrForeignL2PayloadIsAMissThatGetsOverwritten) {
  auto l2 = MakeInMemoryL2Store();
  CounterMetrics metrics;
  CountingLoader loader;
  CacheOptions o = BaseOptions(l2);
  o.use_l1 = false;
  o.metrics = &metrics;
  auto cache = Make(o);
  InMemoryL2StorePutRaw(l2.get(), "k1", "\x54\x43garbage that is not an envelope");
  InMemoryL2StorePutRaw(l2.get(), "k2", "{\"written\":\"by another library\"}");
  for (const char* k : {"k1", "k2"}) {
    Result<CachedValue> v = cache->Get(k, loader.Get());
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(v->source(), ValueSource::kLoader);
  }
  EXPECT_EQ(metrics.snapshot().get(Counter::kDecodeError, Tier::kL2), 2u);
  // Overwritten: the next reads hit L2.
  EXPECT_EQ(cache->Get("k1", loader.Get())->source(), ValueSource::kL2);
  EXPECT_EQ(cache->Get("k2", loader.Get())->source(), ValueSource::kL2);
  EXPECT_EQ(loader.calls.load(), 2);
}

TEST(CacheTest, PayloadOfAnotherCodecIsAMiss) {
  auto l2 = MakeInMemoryL2Store();
  CountingLoader loader;
  CacheOptions json = BaseOptions(l2);
  json.codec_id = kCodecJson;
  json.use_l1 = false;
  ASSERT_TRUE(Make(json)->Get("k", loader.Get()).ok());
  CacheOptions bytes = BaseOptions(l2);
  bytes.use_l1 = false;
  EXPECT_EQ(Make(bytes)->Get("k", loader.Get())->source(), ValueSource::kLoader);
  EXPECT_EQ(loader.calls.load(), 2);
}

TEST(CacheTest, PerCallOptionsOverrideTheCacheDefaults) {
  CountingLoader loader;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  GetOptions g;
  g.ttl = 100s;
  Result<CachedValue> v = cache->Get("long", loader.Get(), g);
  ASSERT_TRUE(v.ok());
  EXPECT_GT(v->expires_at(), std::chrono::system_clock::now() + 90s);
  g.hard_timeout = 0ms;
  EXPECT_TRUE(cache->Get("other", loader.Get(), g).status().IsInvalidArgument());
}

TEST(CacheTest, OversizedValuesAreServedButNotSharedAndSetRefusesThem) {
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = BaseOptions(l2);
  o.max_value_bytes = 1000;
  auto cache = Make(o);
  Loader big = [](std::string_view) -> Result<LoadResult> { return LoadResult{std::string(5000, 'x'), 1}; };
  Result<CachedValue> v = cache->Get("big", big);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->payload().size(), 5000u);
  EXPECT_FALSE(l2->Get("big", 100ms)->has_value()) << "an oversized value reached L2";
  // Leases are given back on the lease keeper's thread: soon, not at once.
  bool lease_held = true;
  for (int i = 0; i < 200 && lease_held; ++i) {
    lease_held = l2->Get(LeaseKeyFor("big"), 100ms)->has_value();
    if (lease_held) std::this_thread::sleep_for(5ms);
  }
  EXPECT_FALSE(lease_held) << "its lease was not released";
  EXPECT_TRUE(cache->Set("big2", std::string(5000, 'x'), 1).IsInvalidArgument());
  o.max_value_bytes = 0;
  EXPECT_TRUE(Cache::Create(o).status().IsInvalidArgument());
}

TEST(CacheTest, LoaderExceptionIsAnErrorAndNotCached) {
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  Result<CachedValue> v = cache->Get("k", [](std::string_view) -> Result<LoadResult> {
    throw std::runtime_error("boom");
  });
  EXPECT_TRUE(v.status().IsInternal()) << v.status().ToString();
  CountingLoader loader;
  EXPECT_TRUE(cache->Get("k", loader.Get()).ok());
  EXPECT_EQ(loader.calls.load(), 1);
}

TEST(CacheTest, ConcurrentColdCallersInOneProcessShareOneLoad) {
  CountingLoader loader;
  loader.delay = 100ms;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 64; ++i) {
    threads.emplace_back([&] {
      Result<CachedValue> v = cache->Get("hot", loader.Get());
      if (v.ok() && v->payload() == "hot@1") ok.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 64);
  EXPECT_EQ(loader.calls.load(), 1);
}

TEST(CacheTest, TwoPodsSharingL2LoadOnceUnderTheLease) {
  auto l2 = MakeInMemoryL2Store();
  CountingLoader loader;
  loader.delay = 150ms;
  auto a = Make(BaseOptions(l2));
  auto b = Make(BaseOptions(l2));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 40; ++i) {
    Cache* c = (i % 2) ? a.get() : b.get();
    threads.emplace_back([&, c] {
      Result<CachedValue> v = c->Get("cold", loader.Get());
      if (v.ok() && v->found()) ok.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 40);
  EXPECT_EQ(loader.calls.load(), 1);
}

TEST(CacheTest, LeaseIsKeptAliveWhileALoadOutlastsItsTtl) {
  auto l2 = MakeInMemoryL2Store();
  CountingLoader loader;
  loader.delay = 400ms;
  CacheOptions o = BaseOptions(l2);
  o.lease.ttl = 100ms;  // far shorter than the load
  o.lease.max_wait = 2s;
  auto a = Make(o);
  auto b = Make(o);
  std::thread first([&] { EXPECT_TRUE(a->Get("slow", loader.Get()).ok()); });
  std::this_thread::sleep_for(200ms);  // twice the lease TTL into the load
  Result<CachedValue> v = b->Get("slow", loader.Get());
  first.join();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->source(), ValueSource::kL2);
  EXPECT_EQ(loader.calls.load(), 1) << "the lease expired under a running load";
}

TEST(CacheTest, FailingLoaderServesStaleWithinMaxStale) {
  CountingLoader loader;
  CacheOptions o = BaseOptions(MakeInMemoryL2Store());
  o.ttl = 100ms;
  o.l1.default_ttl = 50ms;
  o.max_stale = 10s;
  CounterMetrics metrics;
  o.metrics = &metrics;
  auto cache = Make(o);
  ASSERT_TRUE(cache->Get("k", loader.Get()).ok());
  std::this_thread::sleep_for(150ms);
  loader.fail = true;
  Result<CachedValue> v = cache->Get("k", loader.Get());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_TRUE(v->stale());
  EXPECT_EQ(v->payload(), "k@1");
  EXPECT_GE(metrics.snapshot().get(Counter::kStaleServe, Tier::kL1) +
                metrics.snapshot().get(Counter::kStaleServe, Tier::kL2),
            1u);
}

TEST(CacheTest, NothingOlderThanMaxStaleIsServed) {
  CountingLoader loader;
  CacheOptions o = BaseOptions(MakeInMemoryL2Store());
  o.ttl = 50ms;
  o.l1.default_ttl = 50ms;
  o.max_stale = 100ms;
  auto cache = Make(o);
  ASSERT_TRUE(cache->Get("k", loader.Get()).ok());
  std::this_thread::sleep_for(300ms);
  loader.fail = true;
  EXPECT_TRUE(cache->Get("k", loader.Get()).status().IsUnavailable());
}

TEST(CacheTest, SlowLoaderServesStaleAtTheSoftTimeoutAndFinishesInBackground) {
  CountingLoader loader;
  CacheOptions o = BaseOptions(MakeInMemoryL2Store());
  o.ttl = 100ms;
  o.l1.default_ttl = 100ms;
  o.soft_timeout = 50ms;
  o.hard_timeout = 2s;
  auto cache = Make(o);
  ASSERT_TRUE(cache->Get("k", loader.Get()).ok());
  std::this_thread::sleep_for(150ms);
  loader.delay = 400ms;
  loader.version = 2;
  GetOptions longer;
  longer.ttl = 10s;  // what the background load stores lives long enough to be read below
  const auto t0 = std::chrono::steady_clock::now();
  Result<CachedValue> v = cache->Get("k", loader.Get(), longer);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->stale());
  EXPECT_EQ(v->version(), 1u);
  EXPECT_LT(took, 300ms);
  std::this_thread::sleep_for(500ms);  // the background load fills both tiers
  v = cache->Get("k", loader.Get());
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->stale());
  EXPECT_EQ(v->version(), 2u);
}

TEST(CacheTest, HardTimeoutEndsTheWaitWhenNothingIsStale) {
  CountingLoader loader;
  loader.delay = 1s;
  CacheOptions o = BaseOptions(MakeInMemoryL2Store());
  o.soft_timeout = 50ms;
  o.hard_timeout = 150ms;
  auto cache = Make(o);
  const auto t0 = std::chrono::steady_clock::now();
  Result<CachedValue> v = cache->Get("k", loader.Get());
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_TRUE(v.status().IsDeadlineExceeded()) << v.status().ToString();
  EXPECT_LT(took, 500ms);
}

// The stale-fill race: a loader reads version 1, the writer commits version 2
// and invalidates, then the loader's fill arrives. Fencing refuses it (and the
// cache reloads version 2); without fencing the old value sticks.
void RunStaleFillRace(bool fencing, uint64_t* cached_version) {
  auto l2 = MakeInMemoryL2Store();
  CacheOptions o = BaseOptions(l2);
  o.version_fencing = fencing;
  auto cache = Make(o);
  std::atomic<uint64_t> source_version{1};
  std::barrier read_done(2), invalidated(2);
  std::atomic<int> calls{0};
  Loader loader = [&](std::string_view key) -> Result<LoadResult> {
    const uint64_t v = source_version.load();
    if (calls.fetch_add(1) == 0) {
      read_done.arrive_and_wait();   // read v1 ...
      invalidated.arrive_and_wait(); // ... the writer moved on meanwhile
    }
    return LoadResult{std::string(key) + "@" + std::to_string(v), v};
  };
  std::thread reader([&] { cache->Get("post:1", loader).status().IgnoreError(); });
  read_done.arrive_and_wait();
  source_version = 2;
  ASSERT_TRUE(cache->Invalidate("post:1", 2).ok());
  invalidated.arrive_and_wait();
  reader.join();
  auto other = Make(BaseOptions(l2));  // what another pod reads from L2
  Result<CachedValue> v = other->Get("post:1", loader);
  ASSERT_TRUE(v.ok());
  *cached_version = v->version();
}

TEST(CacheTest, FencedFillRefusesTheSlowLoadersOldValue) {
  uint64_t version = 0;
  RunStaleFillRace(/*fencing=*/true, &version);
  EXPECT_EQ(version, 2u);
}

TEST(CacheTest, WithoutFencingTheRaceLeavesTheOldValue) {
  uint64_t version = 0;
  RunStaleFillRace(/*fencing=*/false, &version);
  EXPECT_EQ(version, 1u) << "the race should reproduce when fencing is off";
}

TEST(CacheTest, InvalidateThenGetLoadsTheNewVersion) {
  CountingLoader loader;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  ASSERT_EQ(cache->Get("k", loader.Get())->version(), 1u);
  loader.version = 2;
  ASSERT_TRUE(cache->Invalidate("k", 2).ok());
  EXPECT_EQ(cache->Get("k", loader.Get())->version(), 2u);
  EXPECT_TRUE(cache->Invalidate("k", 1).ok());  // late, older event: a no-op
  EXPECT_EQ(cache->Get("k", loader.Get())->source(), ValueSource::kL1);
  EXPECT_EQ(loader.calls.load(), 2);
}

TEST(CacheTest, SetIsFencedByVersion) {
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  ASSERT_TRUE(cache->Set("k", "v5", 5).ok());
  EXPECT_TRUE(cache->Set("k", "v4", 4).IsAborted());
  CountingLoader loader;
  Result<CachedValue> v = cache->Get("k", loader.Get());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->payload(), "v5");
  EXPECT_EQ(loader.calls.load(), 0);
}

TEST(CacheTest, GetManyUsesEachTierOnceAndKeepsOrder) {
  auto l2 = MakeInMemoryL2Store();
  auto cache = Make(BaseOptions(l2));
  ASSERT_TRUE(cache->Set("a", "A", 1).ok());               // L1 + L2
  auto other = Make(BaseOptions(l2));
  ASSERT_TRUE(other->Set("b", "B", 1).ok());               // L2 only, for `cache`
  std::atomic<int> calls{0};
  std::vector<std::string> asked;
  BatchLoader loader = [&](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
    calls.fetch_add(1);
    asked = keys;
    std::vector<LoadResult> out;
    for (const auto& k : keys) out.push_back(k == "gone" ? LoadResult{} : LoadResult{"loaded:" + k, 1});
    return out;
  };
  Result<std::vector<Result<CachedValue>>> got = cache->GetMany({"a", "b", "c", "gone", ""}, loader);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 5u);
  EXPECT_EQ((*got)[0]->payload(), "A");
  EXPECT_EQ((*got)[0]->source(), ValueSource::kL1);
  EXPECT_EQ((*got)[1]->payload(), "B");
  EXPECT_EQ((*got)[1]->source(), ValueSource::kL2);
  EXPECT_EQ((*got)[2]->payload(), "loaded:c");
  EXPECT_FALSE((*got)[3]->found());
  EXPECT_TRUE((*got)[4].status().IsInvalidArgument());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(asked, (std::vector<std::string>{"c", "gone"}));
}

// GetMany reads every value of its L2 round trip through the same checks as
// Get: the envelope's CRC (a flipped payload byte), its shape (bytes of
// another library) and its codec. A repeated key gets the same result, and
// the keys are each asked of L2 and of the loader once.
TEST(CacheTest, GetManyChecksEveryValueFromL2AndAnswersRepeatsAlike) {
  auto l2 = MakeInMemoryL2Store();
  auto writer = Make(BaseOptions(l2));
  for (const char* k : {"a", "flipped", "foreign", "d"}) ASSERT_TRUE(writer->Set(k, std::string("stored:") + k, 1).ok());
  CacheOptions json = BaseOptions(l2);
  json.codec_id = kCodecJson;
  ASSERT_TRUE(Make(json)->Set("other-codec", "\"json\"", 1).ok());
  Result<std::optional<std::string>> stored = l2->Get("flipped", 1s);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  std::string bytes = **stored;
  ASSERT_TRUE(DecodeEnvelope(bytes).ok());
  bytes[bytes.size() - kEnvelopeTrailerSize - 1] ^= 0x01;  // last payload byte: "stored:flippee"
  ASSERT_FALSE(DecodeEnvelope(bytes).ok());
  ASSERT_TRUE(DecodeEnvelope(bytes, /*verify_checksum=*/false).ok()) << "only the CRC is wrong";
  InMemoryL2StorePutRaw(l2.get(), "flipped", bytes);
  InMemoryL2StorePutRaw(l2.get(), "foreign", "{\"written\":\"by another library\"}");

  CounterMetrics metrics;
  CacheOptions o = BaseOptions(l2);
  o.use_l1 = false;
  o.metrics = &metrics;
  auto cache = Make(o);
  std::vector<std::vector<std::string>> asked;
  BatchLoader loader = [&](const std::vector<std::string>& keys) -> Result<std::vector<LoadResult>> {
    asked.push_back(keys);
    std::vector<LoadResult> out;
    for (const auto& k : keys) out.push_back(LoadResult{"loaded:" + k, 2});
    return out;
  };
  const std::vector<std::string> keys = {"a", "flipped", "a", "foreign", "other-codec", "d", "flipped"};
  Result<std::vector<Result<CachedValue>>> got = cache->GetMany(keys, loader);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) ASSERT_TRUE((*got)[i].ok()) << keys[i] << ": " << (*got)[i].status().ToString();
  for (size_t i : {0, 2, 5}) {
    EXPECT_EQ((*got)[i]->source(), ValueSource::kL2) << keys[i];
    EXPECT_EQ((*got)[i]->payload(), "stored:" + keys[i]);
  }
  for (size_t i : {1, 3, 4, 6}) {
    EXPECT_EQ((*got)[i]->source(), ValueSource::kLoader) << keys[i] << " was served from L2";
    EXPECT_EQ((*got)[i]->payload(), "loaded:" + keys[i]);
  }
  EXPECT_EQ((*got)[0]->payload().data(), (*got)[2]->payload().data()) << "a repeated key: one value, shared";
  EXPECT_EQ((*got)[1]->payload().data(), (*got)[6]->payload().data());
  EXPECT_EQ(asked, (std::vector<std::vector<std::string>>{{"flipped", "foreign", "other-codec"}}));
  EXPECT_EQ(metrics.snapshot().get(Counter::kDecodeError, Tier::kL2), 3u);
  EXPECT_EQ(metrics.snapshot().get(Counter::kHit, Tier::kL2), 2u) << "each distinct key counted once";
}

// An L2Store whose GetMany answers one value short: a broken store must not
// make GetMany read past its answer. Every key is then treated as an L2
// failure (loaded, and not cached in L2).
class ShortGetManyL2 final : public ::tiercache::testing::ForwardingL2Store {
 public:
  using ForwardingL2Store::ForwardingL2Store;
  std::vector<Result<std::optional<std::string>>> GetMany(const std::vector<std::string>& keys,
                                                          milliseconds timeout) override {
    auto out = ForwardingL2Store::GetMany(keys, timeout);
    out.pop_back();
    out.shrink_to_fit();
    return out;
  }
};

TEST(CacheTest, GetManyOverAnL2AnsweringTooFewValuesLoadsEveryKey) {
  auto l2 = MakeInMemoryL2Store();
  auto writer = Make(BaseOptions(l2));
  std::vector<std::string> keys;
  for (int i = 0; i < 64; ++i) {
    keys.push_back("k" + std::to_string(i));
    ASSERT_TRUE(writer->Set(keys.back(), "stored:" + keys.back(), 1).ok());
  }
  CacheOptions o = BaseOptions(std::make_shared<ShortGetManyL2>(l2));
  o.use_l1 = false;
  auto cache = Make(o);
  BatchLoader loader = [&](const std::vector<std::string>& ks) -> Result<std::vector<LoadResult>> {
    std::vector<LoadResult> out;
    for (const auto& k : ks) out.push_back(LoadResult{"loaded:" + k, 2});
    return out;
  };
  Result<std::vector<Result<CachedValue>>> got = cache->GetMany(keys, loader);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE((*got)[i].ok()) << keys[i] << ": " << (*got)[i].status().ToString();
    EXPECT_EQ((*got)[i]->payload(), "loaded:" + keys[i]);
  }
  // Not cached in L2 (no fence was taken): the stored values stay.
  Result<std::optional<std::string>> raw = l2->Get("k0", 1s);
  ASSERT_TRUE(raw.ok() && raw->has_value());
  Result<EnvelopeView> e = DecodeEnvelope(**raw);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->payload, "stored:k0");
}

// LocalFence::ReadHashed, given a key's LocalFence::Hash, reads the key's
// own stripe (GetMany hashes each key once and reads its epoch by that hash).
TEST(CacheTest, LocalFenceReadHashedReadsTheKeysStripe) {
  LocalFence fence;
  const auto hash = [](std::string_view key) { return LocalFence::Hash(key); };
  for (int i = 0; i < 2000; ++i) {
    const std::string key = "key:" + std::to_string(i);
    const uint64_t before = fence.ReadHashed(hash(key));
    EXPECT_EQ(before, fence.Read(key));
    fence.Bump(key);
    EXPECT_EQ(fence.ReadHashed(hash(key)), before + 1) << key;
  }
}

// LocalFence::Hash spreads keys that differ only in a few bytes (one tag,
// a counter) evenly over the stripes: a false match on a shared stripe
// costs an L1 fill, so a hash that ignores some bytes would cost hit ratio.
TEST(CacheTest, LocalFenceHashSpreadsKeysOverTheStripes) {
  constexpr size_t kKeys = 16 * LocalFence::kStripes;
  for (const std::string prefix : {"", "posts:{community:42}:", "a-longer-prefix:{tenant:7}:entity:"}) {
    std::vector<int> per_stripe(LocalFence::kStripes, 0);
    for (size_t i = 0; i < kKeys; ++i) ++per_stripe[LocalFence::Hash(prefix + std::to_string(i)) % LocalFence::kStripes];
    // 16 per stripe on average; the fullest of 4096 Poisson(16) stripes holds about 32.
    EXPECT_LE(*std::max_element(per_stripe.begin(), per_stripe.end()), 48) << "prefix '" << prefix << "'";
    EXPECT_GE(*std::min_element(per_stripe.begin(), per_stripe.end()), 1) << "prefix '" << prefix << "'";
  }
}

TEST(CacheTest, GetAsyncCompletesFromEveryTier) {
  CountingLoader loader;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  std::future<Result<CachedValue>> f = cache->GetAsync("k", loader.Get());
  Result<CachedValue> v = f.get();
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->source(), ValueSource::kLoader);
  f = cache->GetAsync("k", loader.Get());
  EXPECT_EQ(f.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(f.get()->source(), ValueSource::kL1);
}

TEST(CacheTest, EarlyRefreshReloadsInTheBackgroundNearExpiry) {
  FakeClock clock;
  CountingLoader loader;
  CacheOptions o = BaseOptions(MakeInMemoryL2Store(&clock), &clock);
  o.ttl = 10s;
  o.early_refresh_beta = 1.0;
  auto cache = Make(o);
  // A load that "takes" 1 s on the fake clock gives δ = 1 s.
  Loader slow = [&](std::string_view key) -> Result<LoadResult> {
    loader.calls.fetch_add(1);
    clock.Advance(1s);
    return LoadResult{std::string(key), loader.version.load()};
  };
  ASSERT_TRUE(cache->Get("k", slow).ok());
  ASSERT_EQ(loader.calls.load(), 1);
  // Right before expiry (10 ms left = δ/100) each read refreshes with
  // probability e^-0.01; a few reads make it certain.
  clock.Advance(9990ms);
  for (int i = 0; i < 10 && loader.calls.load() < 2; ++i) {
    Result<CachedValue> v = cache->Get("k", slow);
    ASSERT_TRUE(v.ok());
    EXPECT_FALSE(v->stale()) << "callers keep getting the current value";
    std::this_thread::sleep_for(20ms);
  }
  for (int i = 0; i < 200 && loader.calls.load() < 2; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(loader.calls.load(), 2);
}

// The same from L1: an L1 hit skips XFetch's draw only when its L1 expiry
// (which the logical expiry cannot precede) is out of reach of every draw;
// near expiry it still refreshes.
TEST(CacheTest, EarlyRefreshAlsoFromAnL1HitNearExpiry) {
  FakeClock clock;
  CountingLoader loader;
  CacheOptions o = BaseOptions(MakeInMemoryL2Store(&clock), &clock);
  o.ttl = 10s;
  o.l1.default_ttl = 60s;  // the L1 copy lives until the L2 expiry
  o.early_refresh_beta = 1.0;
  auto cache = Make(o);
  // Only the first load moves the clock (δ = 1 s): the background refresh
  // must not move it under the reads of the loop.
  Loader slow = [&](std::string_view key) -> Result<LoadResult> {
    if (loader.calls.fetch_add(1) == 0) clock.Advance(1s);
    return LoadResult{std::string(key), loader.version.load()};
  };
  ASSERT_TRUE(cache->Get("k", slow).ok());
  ASSERT_EQ(loader.calls.load(), 1);
  clock.Advance(9990ms);  // 10 ms left (expiry = the load's end + 10 s): p = e^-0.01 per read
  for (int i = 0; i < 10 && loader.calls.load() < 2; ++i) {
    Result<CachedValue> v = cache->Get("k", slow);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->source(), ValueSource::kL1);
    std::this_thread::sleep_for(20ms);
  }
  for (int i = 0; i < 200 && loader.calls.load() < 2; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(loader.calls.load(), 2);
}

// XFetch's pre-check skips the draw only when no draw can reach the expiry
// (δβ × 36.75): 2 s before expiry with δ = 1 s a read refreshes with
// probability e^-2, so 60 reads refresh all but once in 6,000 runs. A pre-check
// with a reach below 2 s (a wrong constant, a reversed test) would skip them.
TEST(CacheTest, EarlyRefreshTwoDeltasBeforeExpiryIsNotSkipped) {
  FakeClock clock(Clock::kCoarseLag);  // the coarse clocks as far behind as allowed
  CountingLoader loader;
  CacheOptions o = BaseOptions(MakeInMemoryL2Store(&clock), &clock);
  o.ttl = 10s;
  o.l1.default_ttl = 60s;
  o.early_refresh_beta = 1.0;
  auto cache = Make(o);
  Loader slow = [&](std::string_view key) -> Result<LoadResult> {
    if (loader.calls.fetch_add(1) == 0) clock.Advance(1s);  // δ = 1 s
    return LoadResult{std::string(key), loader.version.load()};
  };
  ASSERT_TRUE(cache->Get("k", slow).ok());
  clock.Advance(8s);  // 2 s left
  for (int i = 0; i < 60 && loader.calls.load() < 2; ++i) {
    Result<CachedValue> v = cache->Get("k", slow);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->source(), ValueSource::kL1);
    for (int w = 0; w < 20 && loader.calls.load() < 2; ++w) std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(loader.calls.load(), 2);
}

// An L1 hit is counted (its call is skipped only for the no-op metrics), and
// an L1 hit on a cached "not found" as a negative hit, not a hit.
TEST(CacheTest, MetricsCountL1HitsAndNegativeHits) {
  CountingLoader loader;
  CounterMetrics metrics;
  CacheOptions o = BaseOptions(MakeInMemoryL2Store());
  o.metrics = &metrics;
  auto cache = Make(o);
  ASSERT_TRUE(cache->Get("k", loader.Get()).ok());  // L1 and L2 miss, loaded
  for (int i = 0; i < 3; ++i) {
    Result<CachedValue> v = cache->Get("k", loader.Get());
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->source(), ValueSource::kL1);
  }
  loader.missing = true;
  ASSERT_TRUE(cache->Get("gone", loader.Get()).ok());  // loaded: does not exist
  Result<CachedValue> gone = cache->Get("gone", loader.Get());
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->found());
  EXPECT_EQ(gone->source(), ValueSource::kL1);
  const CounterMetrics::Snapshot s = metrics.snapshot();
  EXPECT_EQ(s.get(Counter::kHit, Tier::kL1), 3u);
  EXPECT_EQ(s.get(Counter::kNegativeHit, Tier::kL1), 1u);
  EXPECT_EQ(s.get(Counter::kMiss, Tier::kL1), 2u);
  EXPECT_EQ(loader.calls.load(), 2);
}

// Bytes written into the cache's L1 through l1() that are not one of its
// envelopes are a miss (the hit path peeks without parsing), never a crash.
TEST(CacheTest, ForeignBytesInTheL1AreAMiss) {
  CountingLoader loader;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  L1Fill fill;
  fill.version = 1;
  ASSERT_TRUE(cache->l1()->Set("k", std::make_shared<const std::string>("short"), fill).ok());
  Result<CachedValue> v = cache->Get("k", loader.Get());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_NE(v->source(), ValueSource::kL1);
  EXPECT_EQ(v->payload(), "k@1");
}

// An L1 entry whose user_data claims the cache's description of an envelope
// (only a Set through l1() can make one) with an offset past its bytes is a
// miss, never a read out of bounds (ASan checks).
TEST(CacheTest, ADescriptionThatDoesNotFitItsBytesIsAMiss) {
  CountingLoader loader;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  L1Fill fill;
  fill.version = 1;
  fill.user_data = (uint64_t{1} << 63) | (uint64_t{200} << 48) | 1000;
  ASSERT_TRUE(cache->l1()->Set("k", std::make_shared<const std::string>("short"), fill).ok());
  Result<CachedValue> v = cache->Get("k", loader.Get());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_NE(v->source(), ValueSource::kL1);
  EXPECT_EQ(v->payload(), "k@1");
}

// A call without options and one with default GetOptions are the same call.
TEST(CacheTest, GetWithoutOptionsIsGetWithDefaultOptions) {
  CountingLoader loader;
  auto cache = Make(BaseOptions(MakeInMemoryL2Store()));
  Result<CachedValue> a = cache->Get("k", loader.Get());
  Result<CachedValue> b = cache->Get("k", loader.Get(), GetOptions{});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->payload(), b->payload());
  EXPECT_EQ(b->source(), ValueSource::kL1);
  GetOptions other;
  other.group = "feed:{community:1}";
  EXPECT_FALSE(other == GetOptions{});
  EXPECT_TRUE(cache->Get("k", loader.Get(), other).status().IsInvalidArgument()) << "not in the group's slot";
}

// An L2 that always fails after a delay, counting calls.
class DeadL2 final : public L2Store {
 public:
  std::atomic<int> calls{0};
  template <typename T>
  Result<T> Fail() {
    calls.fetch_add(1);
    std::this_thread::sleep_for(20ms);
    return Status::Unavailable("connection refused");
  }
  Result<std::optional<std::string>> Get(std::string_view, milliseconds) override {
    return Fail<std::optional<std::string>>();
  }
  std::vector<Result<std::optional<std::string>>> GetMany(const std::vector<std::string>& keys,
                                                          milliseconds) override {
    return {keys.size(), Fail<std::optional<std::string>>()};
  }
  std::vector<Result<FenceSnapshot>> Snapshot(const std::vector<std::string>& keys, milliseconds) override {
    return {keys.size(), Fail<FenceSnapshot>()};
  }
  std::vector<Result<FenceOutcome>> Fill(const std::vector<FillRequest>& fills, milliseconds, milliseconds,
                                         milliseconds) override {
    return {fills.size(), Fail<FenceOutcome>()};
  }
  Status Put(std::string_view, std::string_view, std::chrono::milliseconds, milliseconds) override {
    return Fail<bool>().status();
  }
  Result<FenceOutcome> Invalidate(const InvalidateRequest&, milliseconds, milliseconds) override {
    return Fail<FenceOutcome>();
  }
  Result<bool> RemoveCorrupt(std::string_view, std::string_view, milliseconds) override { return Fail<bool>(); }
  Result<LeaseOutcome> AcquireLease(std::string_view, std::string_view, std::chrono::milliseconds,
                                    milliseconds) override {
    return Fail<LeaseOutcome>();
  }
  Result<bool> ExtendLease(std::string_view, std::string_view, std::chrono::milliseconds, milliseconds) override {
    return Fail<bool>();
  }
  int ShardOf(std::string_view) const override { return 0; }
  Result<bool> ReleaseLease(std::string_view, std::string_view, milliseconds) override { return Fail<bool>(); }
};

TEST(CacheTest, BreakerStopsPayingForADeadL2AndGetsStillSucceed) {
  auto dead = std::make_shared<DeadL2>();
  CountingLoader loader;
  CounterMetrics metrics;
  CacheOptions o = BaseOptions(dead);
  o.use_l1 = false;
  o.breaker_failure_threshold = 3;
  o.breaker_open_duration = 10s;
  o.metrics = &metrics;
  auto cache = Make(o);
  for (int i = 0; i < 20; ++i) {
    Result<CachedValue> v = cache->Get("k" + std::to_string(i), loader.Get());
    ASSERT_TRUE(v.ok()) << v.status().ToString();
  }
  EXPECT_LE(dead->calls.load(), 3) << "after the breaker opens, L2 is not called";
  EXPECT_EQ(loader.calls.load(), 20);
  EXPECT_TRUE(metrics.snapshot().breaker_open);
  EXPECT_EQ(metrics.snapshot().get(Counter::kBreakerOpened, Tier::kL2), 1u);
}

TEST(CacheTest, LeaseKeyStaysInTheKeysSlot) {
  EXPECT_EQ(LeaseKeyFor("posts:{community:42}:7"), "posts:{community:42}:7:lease");
  for (const char* key : {"posts:{community:42}:7", "foo", "foo{}{bar}", "a}b{c", "{", "}", "x{y", "{{bar}}"}) {
    EXPECT_EQ(redis::KeySlot(LeaseKeyFor(key)), redis::KeySlot(key)) << key;
  }
}

}  // namespace
}  // namespace tiercache

namespace tiercache {
namespace {

// A user's key must never be another key's lease or fence key.
TEST(CacheTest, KeysShapedLikeLeaseOrFenceKeysAreRefused) {
  auto l2 = MakeInMemoryL2Store();
  auto cache = Make(BaseOptions(l2));
  Loader loader = [](std::string_view) -> Result<LoadResult> { return LoadResult{std::string("v"), 1}; };
  for (const std::string& k : {LeaseKeyFor("post:{c:1}:7"), FenceKeyFor("post:{c:1}:7"), LeaseKeyFor("plain"),
                               FenceKeyFor("plain"), std::string("x:lease"), std::string("{t}:fence:y")}) {
    SCOPED_TRACE(k);
    EXPECT_TRUE(IsCompanionKeyName(k));
    EXPECT_TRUE(cache->Get(k, loader).status().IsInvalidArgument());
    EXPECT_TRUE(cache->Set(k, "v", 1).IsInvalidArgument());
    EXPECT_TRUE(cache->Invalidate(k).IsInvalidArgument());
  }
  for (const std::string k : {"post:{c:1}:7", "leases", "x:lease:y", "fence", "{t}:leasey"}) {
    SCOPED_TRACE(k);
    EXPECT_FALSE(IsCompanionKeyName(k));
    EXPECT_TRUE(cache->Get(k, loader).ok());
  }
}

}  // namespace
}  // namespace tiercache
