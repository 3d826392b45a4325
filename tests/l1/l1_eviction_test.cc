// Bounds and eviction: LRU order, W-TinyLFU admission, and the frequency
// sketch underneath it.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

#include "l1/frequency_sketch.h"
#include "tiercache/l1_cache.h"

namespace tiercache {
namespace {

L1Value V(const std::string& s) { return std::make_shared<const std::string>(s); }

std::unique_ptr<L1Cache> MakeCache(L1Policy policy, std::size_t entries, Clock* clock) {
  L1Options o;
  o.policy = policy;
  o.max_entries = entries;
  o.num_shards = 1;  // one shard: eviction order is exact
  o.default_ttl = std::chrono::hours(1);
  o.clock = clock;
  auto r = L1Cache::Create(o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return std::move(*r);
}

bool Has(L1Cache& c, const std::string& key) {
  auto r = c.Get(key);
  return r.ok() && r->has_value();
}

void Put(L1Cache& c, const std::string& key) {
  ASSERT_TRUE(c.Set(key, V(key), L1Fill{}).ok()) << key;
}

// A one-shard TinyLFU cache with room for about 100 of the tests' entries by
// bytes, whatever its entry bound.
std::unique_ptr<L1Cache> MakeByteBoundCache(std::size_t max_entries, Clock* clock) {
  L1Options o;
  o.policy = L1Policy::kTinyLfu;
  o.max_entries = max_entries;
  o.max_bytes = 100 * (kL1EntryOverheadBytes + 16);  // about 100 of the entries below
  o.num_shards = 1;
  o.default_ttl = std::chrono::hours(1);
  o.clock = clock;
  auto r = L1Cache::Create(o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return std::move(*r);
}

// 200 one-off keys, a key asked for 20 times, 200 more one-off keys: whether
// the repeated key is in the cache at the end.
bool RisingKeyStays(L1Cache& c) {
  for (int i = 0; i < 200; ++i) Put(c, "old" + std::to_string(i));
  for (int i = 0; i < 20; ++i) {
    if (!Has(c, "rising")) Put(c, "rising");
  }
  for (int i = 0; i < 200; ++i) Put(c, "noise" + std::to_string(i));
  return Has(c, "rising");
}

// kHotSet keys read ten rounds (filled on a miss), then a scan of 1,000
// one-off keys: how many of the hot keys are still cached.
constexpr int kHotSet = 40;
int HotKeysLeftAfterAScan(L1Cache& c) {
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < kHotSet; ++i) {
      const std::string key = "hot" + std::to_string(i);
      if (!Has(c, key)) Put(c, key);
    }
  }
  for (int i = 0; i < 1000; ++i) Put(c, "scan" + std::to_string(i));
  int hot = 0;
  for (int i = 0; i < kHotSet; ++i) hot += Has(c, "hot" + std::to_string(i));
  return hot;
}

TEST(L1LruTest, EvictsLeastRecentlyUsedAtEntryBound) {
  FakeClock clock;
  auto c = MakeCache(L1Policy::kLru, 3, &clock);
  Put(*c, "a");
  Put(*c, "b");
  Put(*c, "c");
  EXPECT_TRUE(Has(*c, "a"));  // a is now the most recent
  Put(*c, "d");               // evicts b
  EXPECT_FALSE(Has(*c, "b"));
  EXPECT_TRUE(Has(*c, "a"));
  EXPECT_TRUE(Has(*c, "c"));
  EXPECT_TRUE(Has(*c, "d"));
  EXPECT_EQ(c->Stats().entries, 3u);
  EXPECT_EQ(c->Stats().evictions, 1u);
}

TEST(L1LruTest, EntryBoundHoldsAcrossShards) {
  FakeClock clock;
  L1Options o;
  o.policy = L1Policy::kLru;
  o.max_entries = 100;
  o.num_shards = 8;
  o.clock = &clock;
  auto c = std::move(*L1Cache::Create(o));
  for (int i = 0; i < 1000; ++i) Put(*c, "key" + std::to_string(i));
  EXPECT_LE(c->Stats().entries, 100u);
  EXPECT_EQ(c->Stats().entries + c->Stats().evictions, 1000u);
}

TEST(L1LruTest, ByteBoundEvictsUntilItFits) {
  FakeClock clock;
  L1Options o;
  o.policy = L1Policy::kLru;
  o.num_shards = 1;
  o.max_bytes = 3 * (1 + 100 + kL1EntryOverheadBytes);
  o.clock = &clock;
  auto c = std::move(*L1Cache::Create(o));
  for (char k : std::string("abcd")) {
    ASSERT_TRUE(c->Set(std::string(1, k), V(std::string(100, k)), L1Fill{}).ok());
  }
  EXPECT_EQ(c->Stats().entries, 3u);
  EXPECT_LE(c->Stats().bytes, o.max_bytes);
  EXPECT_FALSE(Has(*c, "a"));
  // A big value pushes out as many as needed.
  ASSERT_TRUE(c->Set("z", V(std::string(250, 'z')), L1Fill{}).ok());
  EXPECT_LE(c->Stats().bytes, o.max_bytes);
  EXPECT_TRUE(Has(*c, "z"));
}

TEST(L1TinyLfuTest, OneOffScanDoesNotFlushHotSet) {
  FakeClock clock;
  constexpr int kHot = 50;
  auto lru = MakeCache(L1Policy::kLru, 100, &clock);
  auto lfu = MakeCache(L1Policy::kTinyLfu, 100, &clock);
  for (L1Cache* c : {lru.get(), lfu.get()}) {
    for (int round = 0; round < 5; ++round) {
      for (int i = 0; i < kHot; ++i) {
        const std::string key = "hot" + std::to_string(i);
        if (!Has(*c, key)) Put(*c, key);
      }
    }
    for (int i = 0; i < 1000; ++i) Put(*c, "scan" + std::to_string(i));
  }
  int lru_hot = 0, lfu_hot = 0;
  for (int i = 0; i < kHot; ++i) {
    lru_hot += Has(*lru, "hot" + std::to_string(i));
    lfu_hot += Has(*lfu, "hot" + std::to_string(i));
  }
  EXPECT_EQ(lru_hot, 0) << "LRU is flushed by a scan larger than the cache";
  EXPECT_GE(lfu_hot, kHot * 9 / 10) << "TinyLFU must keep the frequently used keys";
  EXPECT_LE(lfu->Stats().entries, 100u);
}

// The sketch starts only when the shard is half full (Shard::SketchDue):
// hits before that are not counted. A hot set used only
// then (40 keys of 100, ten rounds) still survives a scan that fills the
// shard and goes on for ten times its size.
TEST(L1TinyLfuTest, HotSetUsedBeforeTheSketchStartedSurvivesAScan) {
  FakeClock clock;
  auto c = MakeCache(L1Policy::kTinyLfu, 100, &clock);
  EXPECT_GE(HotKeysLeftAfterAScan(*c), kHotSet * 9 / 10);
  EXPECT_LE(c->Stats().entries, 100u);
}

TEST(L1TinyLfuTest, NewlyPopularKeyIsAdmitted) {
  FakeClock clock;
  auto c = MakeCache(L1Policy::kTinyLfu, 100, &clock);
  // A key asked for again and again must eventually get in and stay.
  EXPECT_TRUE(RisingKeyStays(*c));
}

// The same with the shard bounded by bytes long before its entry bound: the
// sketch must start at half the bytes, or every contest would compare
// estimates of an unused sketch (all 0: the incumbent always wins). The
// entry bound is 10 x the entries that fit, so the window (1 % of it, 10
// entries) is smaller than the shard.
TEST(L1TinyLfuTest, NewlyPopularKeyIsAdmittedUnderAByteBound) {
  FakeClock clock;
  auto c = MakeByteBoundCache(1'000, &clock);
  EXPECT_TRUE(RisingKeyStays(*c));
  EXPECT_LT(c->Stats().entries, 200u) << "the byte bound, not the entry bound, must be what holds";
}

// The same with the entry bound 1,000 x what fits: the window and the
// protected segment must be bounded by their shares of the bytes too, or the
// window (1 % of 100,000 entries) holds the whole shard, no contest ever
// runs, and the policy is LRU (this failed before the segments had byte
// caps).
TEST(L1TinyLfuTest, NewlyPopularKeyIsAdmittedWhenTheByteBoundBindsFarBelowTheEntryBound) {
  FakeClock clock;
  auto c = MakeByteBoundCache(100'000, &clock);
  EXPECT_TRUE(RisingKeyStays(*c));
}

// A hot set under a byte bound survives a scan (the protected segment is
// bounded by bytes, so it overflows into probation instead of the scan's
// entries being evicted in LRU order from everywhere).
TEST(L1TinyLfuTest, HotSetSurvivesAScanUnderAByteBound) {
  FakeClock clock;
  auto c = MakeByteBoundCache(100'000, &clock);
  EXPECT_GE(HotKeysLeftAfterAScan(*c), kHotSet * 9 / 10);
}

// Entries filled before the sketch started count once in it, as every later
// fill does: a contest between one of them and a newcomer is a tie, and the
// incumbent stays. (Unseeded, they would estimate 0 and every newcomer of a
// scan would displace them.) Byte-bound as above, so the shard's victims
// are those entries, filled once and never read, in probation.
TEST(L1TinyLfuTest, EntriesFromBeforeTheSketchStartedKeepTheirPlaceOnTies) {
  FakeClock clock;
  auto c = MakeByteBoundCache(1'000, &clock);
  for (int i = 0; i < 45; ++i) Put(*c, "early" + std::to_string(i));  // under half: no sketch yet
  for (int i = 0; i < 300; ++i) Put(*c, "scan" + std::to_string(i));
  int early = 0;
  for (int i = 0; i < 45; ++i) early += Has(*c, "early" + std::to_string(i));
  EXPECT_GE(early, 40);
}

TEST(L1TinyLfuTest, TinyCapacityStillBounded) {
  FakeClock clock;
  auto c = MakeCache(L1Policy::kTinyLfu, 1, &clock);
  for (int i = 0; i < 50; ++i) Put(*c, "k" + std::to_string(i));
  EXPECT_EQ(c->Stats().entries, 1u);
  EXPECT_EQ(c->Stats().evictions, 49u);
}

TEST(FrequencySketchTest, CountsUpToFifteen) {
  l1::FrequencySketch sketch(1000);
  EXPECT_EQ(sketch.Frequency(42), 0);
  for (int i = 0; i < 5; ++i) sketch.Increment(42);
  EXPECT_EQ(sketch.Frequency(42), 5);
  for (int i = 0; i < 50; ++i) sketch.Increment(42);
  EXPECT_EQ(sketch.Frequency(42), l1::FrequencySketch::kMaxCount);
}

TEST(FrequencySketchTest, DistinguishesHotFromCold) {
  l1::FrequencySketch sketch(1000);
  for (std::uint64_t k = 0; k < 1000; ++k) sketch.Increment(k * 0x9E3779B97F4A7C15ULL);
  for (int i = 0; i < 8; ++i) sketch.Increment(7);
  EXPECT_GE(sketch.Frequency(7), 8);
  int overestimated = 0;
  for (std::uint64_t k = 0; k < 1000; ++k) {
    overestimated += sketch.Frequency(k * 0x9E3779B97F4A7C15ULL) > 2;
  }
  EXPECT_LT(overestimated, 50) << "count-min error should stay small at this load";
}

TEST(FrequencySketchTest, AgingHalvesCounters) {
  l1::FrequencySketch sketch(10);  // halves every 100 additions
  ASSERT_EQ(sketch.sample_size(), 100u);
  for (int i = 0; i < 12; ++i) sketch.Increment(1);
  std::uint64_t k = 1000;
  while (sketch.additions() < 99) sketch.Increment(k++);
  const int before = sketch.Frequency(1);
  EXPECT_GE(before, 12);
  sketch.Increment(k);  // the 100th addition: everything is halved
  EXPECT_EQ(sketch.additions(), 50u);
  const int after = sketch.Frequency(1);
  EXPECT_GE(after, before / 2);
  EXPECT_LE(after, (before + 1) / 2);
}

}  // namespace
}  // namespace tiercache
