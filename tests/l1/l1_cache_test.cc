// L1Cache rules, single-threaded, on a FakeClock: options, bad input, TTL,
// stale reads, negative entries, tombstones, the version guard, stats.
#include "tiercache/l1_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace tiercache {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

L1Value V(const std::string& s) { return std::make_shared<const std::string>(s); }

L1Fill Version(std::uint64_t v, Clock::Duration ttl = Clock::Duration::zero()) {
  L1Fill f;
  f.version = v;
  f.ttl = ttl;
  return f;
}

class L1CacheTest : public ::testing::Test {
 protected:
  L1Options Options() {
    L1Options o;
    o.clock = &clock_;
    o.default_ttl = seconds(10);
    o.negative_ttl = seconds(2);
    o.tombstone_ttl = seconds(30);
    o.max_stale = seconds(60);
    return o;
  }
  std::unique_ptr<L1Cache> Make(const L1Options& o) {
    auto r = L1Cache::Create(o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : nullptr;
  }
  // The fresh value of `key`, or "<miss>".
  std::string Get(L1Cache& c, const std::string& key) {
    auto r = c.Get(key);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok() || !r->has_value()) return "<miss>";
    if ((*r)->negative()) return "<negative>";
    return *(*r)->value;
  }
  FakeClock clock_;
};

// Hits far from expiry use the coarse reading; near expiry the precise one
// decides, so a lagging coarse clock never makes an expired entry fresh.
TEST_F(L1CacheTest, CoarseClockNeverServesAnExpiredEntryAsFresh) {
  FakeClock lagging(Clock::kCoarseLag);  // coarse reading as late as allowed
  L1Options o = Options();
  o.clock = &lagging;
  o.max_stale = Clock::Duration::zero();
  auto c = Make(o);
  ASSERT_TRUE(c->Set("long", V("a"), Version(1, seconds(10))).ok());
  ASSERT_TRUE(c->Set("short", V("b"), Version(1, milliseconds(300))).ok());
  EXPECT_EQ(Get(*c, "long"), "a");
  EXPECT_EQ(Get(*c, "short"), "b");
  lagging.Advance(milliseconds(299));
  EXPECT_EQ(Get(*c, "short"), "b");
  lagging.Advance(milliseconds(1));
  EXPECT_EQ(Get(*c, "short"), "<miss>") << "expired by the precise clock";
  lagging.Advance(seconds(9) + milliseconds(699));
  EXPECT_EQ(Get(*c, "long"), "a");
  lagging.Advance(milliseconds(1));
  EXPECT_EQ(Get(*c, "long"), "<miss>");
  const L1Stats st = c->Stats();
  EXPECT_EQ(st.hits, 4u);
  EXPECT_EQ(st.misses, 2u);
}

TEST_F(L1CacheTest, CreateRejectsNonsenseOptions) {
  auto expect_invalid = [&](auto mutate) {
    L1Options o = Options();
    mutate(o);
    auto r = L1Cache::Create(o);
    EXPECT_FALSE(r.ok());
    EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
  };
  expect_invalid([](L1Options& o) { o.max_entries = 0; });
  expect_invalid([](L1Options& o) { o.max_bytes = 0; });
  expect_invalid([](L1Options& o) { o.num_shards = 0; });
  expect_invalid([](L1Options& o) { o.num_shards = 3; });
  expect_invalid([](L1Options& o) { o.num_shards = 2048; });
  expect_invalid([](L1Options& o) { o.window_fraction = 0; });
  expect_invalid([](L1Options& o) { o.window_fraction = 0.9; });
  expect_invalid([](L1Options& o) { o.default_ttl = Clock::Duration::zero(); });
  expect_invalid([](L1Options& o) { o.negative_ttl = -seconds(1); });
  expect_invalid([](L1Options& o) { o.tombstone_ttl = kL1MaxTtl + seconds(1); });
  expect_invalid([](L1Options& o) { o.max_stale = -seconds(1); });
  expect_invalid([](L1Options& o) { o.ttl_jitter = 0.7; });
  expect_invalid([](L1Options& o) { o.ttl_jitter = -0.1; });
  expect_invalid([](L1Options& o) { o.max_key_bytes = 0; });
  expect_invalid([](L1Options& o) { o.policy = static_cast<L1Policy>(7); });
  expect_invalid([](L1Options& o) { o.value_stripes = 3; });
  expect_invalid([](L1Options& o) { o.value_stripes = 32; });
}

TEST_F(L1CacheTest, ShardCountShrinksToFitSmallBounds) {
  L1Options o = Options();
  o.num_shards = 16;
  o.max_entries = 5;
  auto c = Make(o);
  EXPECT_EQ(c->shard_count(), 4u);
  EXPECT_EQ(c->max_entry_charge(), o.max_bytes / 4);
}

TEST_F(L1CacheTest, SetThenGetReturnsSharedValueWithMetadata) {
  auto c = Make(Options());
  L1Value v = V("hello");
  L1Fill f = Version(7);
  f.load_duration = milliseconds(40);
  ASSERT_TRUE(c->Set("k", v, f).ok());
  auto r = c->Get("k");
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->has_value());
  const L1Entry& e = **r;
  EXPECT_EQ(e.kind, L1EntryKind::kValue);
  EXPECT_EQ(e.value.get(), v.get()) << "a hit must share the value, not copy it";
  EXPECT_EQ(e.version, 7u);
  EXPECT_EQ(e.expiry, clock_.Now() + seconds(10));
  EXPECT_EQ(e.load_duration, milliseconds(40));
  EXPECT_TRUE(e.FreshAt(clock_.Now()));
}

// user_data, like tag, is the fill's: returned by every lookup, replaced by
// an overwrite, 0 by default.
TEST_F(L1CacheTest, UserDataAndTagAreTheFillsAndReplacedByAnOverwrite) {
  auto c = Make(Options());
  L1Fill f = Version(1);
  f.tag = 11;
  f.user_data = 0x8000'0000'0000'0042ULL;
  ASSERT_TRUE(c->Set("k", V("v1"), f).ok());
  auto r = c->Get("k");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->tag, 11u);
  EXPECT_EQ((*r)->user_data, 0x8000'0000'0000'0042ULL);
  ASSERT_TRUE(c->Set("k", V("v2"), Version(2)).ok());
  r = c->Get("k");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->tag, 0u);
  EXPECT_EQ((*r)->user_data, 0u);
}

// A node keeps the tag and the user data only when they are nonzero, so an
// overwrite may change what it holds: every combination, in turn, on one key
// (each overwrite replaces the node), is read back as filled.
TEST_F(L1CacheTest, TagAndUserDataSurviveEveryChangeOfWhichAreSet) {
  auto c = Make(Options());
  const std::uint64_t tags[] = {0, 7, 0, ~std::uint64_t{0}, 3, 0};
  const std::uint64_t data[] = {0, 0, 9, ~std::uint64_t{0} - 1, 0, 5};
  for (std::uint64_t i = 0; i < std::size(tags); ++i) {
    L1Fill f = Version(i + 1);
    f.tag = tags[i];
    f.user_data = data[i];
    f.load_duration = std::chrono::nanoseconds(1000 + i);
    const std::string v = "v" + std::to_string(i);
    ASSERT_TRUE(c->Set("k", V(v), f).ok());
    auto r = c->Get("k");
    ASSERT_TRUE(r.ok() && r->has_value()) << i;
    EXPECT_EQ(*(*r)->value, v);
    EXPECT_EQ((*r)->tag, tags[i]) << i;
    EXPECT_EQ((*r)->user_data, data[i]) << i;
    EXPECT_EQ((*r)->version, i + 1);
    EXPECT_EQ((*r)->load_duration, std::chrono::nanoseconds(1000 + i));
  }
  EXPECT_EQ(c->Stats().entries, 1u);
}

// A node keeps its charge in 32 bits: a larger charge is refused with
// kResourceExhausted, whatever max_bytes, and max_entry_charge() says so.
TEST_F(L1CacheTest, AChargeAbove32BitsIsRefused) {
  L1Options o = Options();
  o.num_shards = 1;
  o.max_bytes = std::size_t{1} << 40;
  o.weigher = [](std::string_view, std::string_view value) -> std::size_t {
    return value == "huge" ? (std::size_t{1} << 32) : (std::size_t{1} << 32) - 1;
  };
  auto c = Make(o);
  EXPECT_EQ(c->max_entry_charge(), (std::size_t{1} << 32) - 1);
  const Status s = c->Set("h", V("huge"), Version(1));
  EXPECT_TRUE(s.IsResourceExhausted()) << s.ToString();
  ASSERT_TRUE(c->Set("k", V("fits"), Version(1)).ok());
  EXPECT_EQ(c->Stats().bytes, (std::size_t{1} << 32) - 1);
  EXPECT_EQ(c->Stats().entries, 1u);
}

// An invalidation whose tombstone cannot be stored (the weigher throws on
// it, or charges it more than one entry may have) fails, but never leaves
// the invalidated value served: the entry goes.
TEST_F(L1CacheTest, AnInvalidationWhoseTombstoneCannotBeStoredStillRemovesTheValue) {
  for (const bool throws : {true, false}) {
    L1Options o = Options();
    o.num_shards = 1;
    o.max_bytes = 1000;
    o.weigher = [throws](std::string_view, std::string_view value) -> std::size_t {
      if (!value.empty()) return 10;
      if (throws) throw std::runtime_error("no tombstones");
      return 5000;  // more than max_entry_charge()
    };
    auto c = Make(o);
    ASSERT_TRUE(c->Set("k", V("v1"), Version(1)).ok());
    ASSERT_TRUE(c->Set("other", V("o"), Version(1)).ok());
    const Status s = c->Invalidate("k", 2);
    EXPECT_TRUE(throws ? s.IsInternal() : s.IsResourceExhausted()) << s.ToString();
    auto r = c->Get("k");
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->has_value()) << "the invalidated value is still served (weigher throws: " << throws << ")";
    auto other = c->Get("other");
    ASSERT_TRUE(other.ok() && other->has_value());
  }
  // A bad ttl stores no tombstone either.
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("k", V("v1"), Version(1)).ok());
  EXPECT_TRUE(c->Invalidate("k", 2, std::chrono::seconds(-1)).IsInvalidArgument());
  auto r = c->Get("k");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value()) << "the invalidated value is still served (bad ttl)";
}

// GetStaleInto answers what GetStale answers, with the same counting, and
// leaves *out alone on a miss.
TEST_F(L1CacheTest, GetStaleIntoAnswersAsGetStale) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("k", V("v"), Version(4)).ok());
  L1Entry e;
  ASSERT_EQ(c->GetStaleInto("k", seconds(5), &e), L1Cache::Read::kFresh);
  EXPECT_EQ(*e.value, "v");
  EXPECT_EQ(e.version, 4u);
  EXPECT_FALSE(e.stale);
  clock_.Advance(seconds(12));  // 2 s past the expiry
  L1Entry s;
  ASSERT_EQ(c->GetStaleInto("k", seconds(5), &s), L1Cache::Read::kStale);
  EXPECT_TRUE(s.stale);
  EXPECT_EQ(*s.value, "v");
  L1Entry untouched;
  untouched.version = 99;
  EXPECT_EQ(c->GetStaleInto("k", seconds(1), &untouched), L1Cache::Read::kMiss);
  EXPECT_EQ(c->GetStaleInto("absent", seconds(5), &untouched), L1Cache::Read::kMiss);
  EXPECT_EQ(c->GetStaleInto("", seconds(5), &untouched), L1Cache::Read::kMiss);
  EXPECT_EQ(c->GetStaleInto("k", seconds(-1), &untouched), L1Cache::Read::kMiss);
  EXPECT_EQ(untouched.version, 99u);
  EXPECT_EQ(untouched.value, nullptr);
  const L1Stats st = c->Stats();
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.stale_hits, 1u);
  EXPECT_EQ(st.misses, 2u) << "the bad key and bad bound are not counted";
}

TEST_F(L1CacheTest, UnstripedHitSharesTheOriginalReferenceCount) {
  L1Options o = Options();
  o.value_stripes = 1;
  auto c = Make(o);
  L1Value v = V("plain");
  ASSERT_TRUE(c->Set("k", v, Version(1)).ok());
  auto r = c->Get("k");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->value, v);
  EXPECT_EQ(v.use_count(), 3) << "test, cache and the hit share one control block";
}

TEST_F(L1CacheTest, BadKeysAreRejectedAndLeaveCacheUnchanged) {
  L1Options o = Options();
  o.max_key_bytes = 8;
  auto c = Make(o);
  EXPECT_TRUE(c->Set("", V("x"), Version(1)).IsInvalidArgument());
  EXPECT_TRUE(c->Set("123456789", V("x"), Version(1)).IsInvalidArgument());
  EXPECT_TRUE(c->Set("12345678", V("x"), Version(1)).ok());
  EXPECT_TRUE(c->Get("").status().IsInvalidArgument());
  EXPECT_TRUE(c->Get("123456789").status().IsInvalidArgument());
  EXPECT_TRUE(c->GetStale("", seconds(1)).status().IsInvalidArgument());
  EXPECT_TRUE(c->Invalidate("", 1).IsInvalidArgument());
  EXPECT_TRUE(c->Erase("123456789").IsInvalidArgument());
  EXPECT_TRUE(c->SetNegative("", Version(1)).IsInvalidArgument());
  EXPECT_EQ(c->Stats().entries, 1u);
}

TEST_F(L1CacheTest, NullValueAndBadTtlAreInvalid) {
  auto c = Make(Options());
  EXPECT_TRUE(c->Set("k", nullptr, Version(1)).IsInvalidArgument());
  EXPECT_TRUE(c->Set("k", V("x"), Version(1, -seconds(1))).IsInvalidArgument());
  EXPECT_TRUE(c->Set("k", V("x"), Version(1, kL1MaxTtl + seconds(1))).IsInvalidArgument());
  EXPECT_TRUE(c->Invalidate("k", 1, -seconds(1)).IsInvalidArgument());
  EXPECT_TRUE(c->GetStale("k", -seconds(1)).status().IsInvalidArgument());
  EXPECT_EQ(c->Stats().entries, 0u);
}

TEST_F(L1CacheTest, ValueLargerThanCapacityIsResourceExhausted) {
  L1Options o = Options();
  o.max_bytes = 1000;
  o.num_shards = 1;
  auto c = Make(o);
  ASSERT_TRUE(c->Set("small", V("x"), Version(1)).ok());
  Status s = c->Set("big", V(std::string(1000, 'b')), Version(1));
  EXPECT_TRUE(s.IsResourceExhausted()) << s.ToString();
  EXPECT_EQ(Get(*c, "big"), "<miss>");
  EXPECT_EQ(Get(*c, "small"), "x") << "a refused entry must not evict anything";
  EXPECT_EQ(c->Stats().entries, 1u);
}

TEST_F(L1CacheTest, EntryLargerThanOneShardShareIsResourceExhausted) {
  L1Options o = Options();
  o.max_bytes = 4000;
  o.num_shards = 4;  // 1000 bytes per shard
  auto c = Make(o);
  Status s = c->Set("k", V(std::string(2000, 'b')), Version(1));
  EXPECT_TRUE(s.IsResourceExhausted()) << s.ToString();
  EXPECT_NE(s.message().find("shard"), std::string_view::npos);
}

TEST_F(L1CacheTest, ExpiredEntryIsNeverFreshButReadableAsStale) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("k", V("v1"), Version(1)).ok());
  clock_.Advance(seconds(10) - std::chrono::nanoseconds(1));
  EXPECT_EQ(Get(*c, "k"), "v1");
  clock_.Advance(std::chrono::nanoseconds(1));  // exactly at expiry: expired
  EXPECT_EQ(Get(*c, "k"), "<miss>");

  clock_.Advance(seconds(5));
  auto stale = c->GetStale("k", seconds(5));
  ASSERT_TRUE(stale.ok());
  ASSERT_TRUE(stale->has_value());
  EXPECT_EQ(*(*stale)->value, "v1");
  EXPECT_FALSE((*stale)->FreshAt(clock_.Now()));
  EXPECT_TRUE((*stale)->stale);
  ASSERT_TRUE(c->Set("k2", V("v2"), Version(1)).ok());
  auto fresh = c->GetStale("k2", seconds(5));
  ASSERT_TRUE(fresh.ok() && fresh->has_value());
  EXPECT_FALSE((*fresh)->stale);
  auto too_old = c->GetStale("k", seconds(4));
  ASSERT_TRUE(too_old.ok());
  EXPECT_FALSE(too_old->has_value()) << "stale read must honour the caller's bound";
}

TEST_F(L1CacheTest, StaleReadIsCappedByRetention) {
  L1Options o = Options();
  o.max_stale = seconds(3);
  auto c = Make(o);
  ASSERT_TRUE(c->Set("k", V("v"), Version(1)).ok());
  clock_.Advance(seconds(10) + seconds(2));
  EXPECT_TRUE(c->GetStale("k", seconds(100)).value().has_value());
  clock_.Advance(seconds(1));  // expiry + max_stale: dead
  EXPECT_FALSE(c->GetStale("k", seconds(100)).value().has_value());
  EXPECT_EQ(c->Stats().expirations, 1u);
  EXPECT_EQ(c->Stats().entries, 0u);
}

TEST_F(L1CacheTest, GetStaleReturnsFreshEntriesAsHits) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("k", V("v"), Version(1)).ok());
  auto r = c->GetStale("k", seconds(1));
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_TRUE((*r)->FreshAt(clock_.Now()));
  L1Stats s = c->Stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.stale_hits, 0u);
}

TEST_F(L1CacheTest, PerFillTtlAndNotAfterCap) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("a", V("x"), Version(1, seconds(1))).ok());
  L1Fill capped = Version(1, seconds(100));
  capped.not_after = clock_.Now() + seconds(3);
  ASSERT_TRUE(c->Set("b", V("y"), capped).ok());
  EXPECT_EQ(c->Get("b").value()->expiry, clock_.Now() + seconds(3));
  clock_.Advance(seconds(1));
  EXPECT_EQ(Get(*c, "a"), "<miss>");
  EXPECT_EQ(Get(*c, "b"), "y");
  clock_.Advance(seconds(2));
  EXPECT_EQ(Get(*c, "b"), "<miss>");
}

TEST_F(L1CacheTest, TtlJitterSpreadsExpiriesWithinBounds) {
  L1Options o = Options();
  o.ttl_jitter = 0.1;
  auto c = Make(o);
  std::set<Clock::TimePoint> expiries;
  for (int i = 0; i < 200; ++i) {
    const std::string key = "k" + std::to_string(i);
    ASSERT_TRUE(c->Set(key, V("v"), Version(1)).ok());
    const Clock::TimePoint e = c->Get(key).value()->expiry;
    EXPECT_GE(e, clock_.Now() + seconds(9));
    EXPECT_LE(e, clock_.Now() + seconds(11));
    expiries.insert(e);
  }
  EXPECT_GT(expiries.size(), 150u) << "jitter should make expiries differ";
}

TEST_F(L1CacheTest, TombstonesAreNotJittered) {
  L1Options o = Options();
  o.ttl_jitter = 0.5;
  auto c = Make(o);
  ASSERT_TRUE(c->Invalidate("k", 5).ok());
  clock_.Advance(seconds(30) - milliseconds(1));
  EXPECT_TRUE(c->Set("k", V("old"), Version(4)).IsAborted());
  clock_.Advance(milliseconds(1));
  EXPECT_TRUE(c->Set("k", V("old"), Version(4)).ok());
}

TEST_F(L1CacheTest, NegativeEntryIsAHitWithItsOwnTtl) {
  auto c = Make(Options());
  ASSERT_TRUE(c->SetNegative("gone", Version(3)).ok());
  auto r = c->Get("gone");
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_TRUE((*r)->negative());
  EXPECT_EQ((*r)->value, nullptr);
  EXPECT_EQ((*r)->version, 3u);
  clock_.Advance(seconds(2));
  EXPECT_EQ(Get(*c, "gone"), "<miss>");
  auto stale = c->GetStale("gone", seconds(1));
  ASSERT_TRUE(stale.ok() && stale->has_value());
  EXPECT_TRUE((*stale)->negative());
}

TEST_F(L1CacheTest, LowerVersionFillIsRefusedAndCounted) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("k", V("v5"), Version(5)).ok());
  Status s = c->Set("k", V("v4"), Version(4));
  EXPECT_TRUE(s.IsAborted()) << s.ToString();
  EXPECT_TRUE(c->SetNegative("k", Version(4)).IsAborted());
  EXPECT_EQ(Get(*c, "k"), "v5");
  EXPECT_EQ(c->Stats().refused_fills, 2u);
  ASSERT_TRUE(c->Set("k", V("v6"), Version(6)).ok());
  EXPECT_EQ(Get(*c, "k"), "v6");
}

TEST_F(L1CacheTest, EqualVersionRefillsAfterExpiry) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("k", V("a"), Version(5)).ok());
  clock_.Advance(seconds(11));
  EXPECT_EQ(Get(*c, "k"), "<miss>");
  ASSERT_TRUE(c->Set("k", V("a"), Version(5)).ok());
  EXPECT_EQ(Get(*c, "k"), "a");
  EXPECT_EQ(c->Stats().refused_fills, 0u);
}

TEST_F(L1CacheTest, StaleEntryStillGuardsItsVersion) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("k", V("v5"), Version(5)).ok());
  clock_.Advance(seconds(11));  // expired, retained for stale reads
  EXPECT_TRUE(c->Set("k", V("v4"), Version(4)).IsAborted());
  clock_.Advance(seconds(60));  // dead: nothing to guard any more
  EXPECT_TRUE(c->Set("k", V("v4"), Version(4)).ok());
}

TEST_F(L1CacheTest, TombstoneHidesValueAndRefusesOlderFillsUntilItExpires) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("k", V("v1"), Version(1)).ok());
  ASSERT_TRUE(c->Invalidate("k", 2).ok());
  EXPECT_EQ(Get(*c, "k"), "<miss>");
  EXPECT_FALSE(c->GetStale("k", seconds(60)).value().has_value())
      << "a tombstone is never served, not even as stale";
  // The classic race: a reader that loaded v1 before the write fills late.
  EXPECT_TRUE(c->Set("k", V("v1"), Version(1)).IsAborted());
  EXPECT_EQ(c->Stats().refused_fills, 1u);
  // The version the writer invalidated with is accepted.
  ASSERT_TRUE(c->Set("k", V("v2"), Version(2)).ok());
  EXPECT_EQ(Get(*c, "k"), "v2");
}

TEST_F(L1CacheTest, TombstoneExpiresAfterItsTtl) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Invalidate("k", 9, seconds(4)).ok());
  clock_.Advance(seconds(4) - milliseconds(1));
  EXPECT_TRUE(c->Set("k", V("v3"), Version(3)).IsAborted());
  clock_.Advance(milliseconds(1));
  EXPECT_TRUE(c->Set("k", V("v3"), Version(3)).ok());
  EXPECT_EQ(Get(*c, "k"), "v3");
}

TEST_F(L1CacheTest, InvalidateWithLowerVersionIsANoOp) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("k", V("v5"), Version(5)).ok());
  EXPECT_TRUE(c->Invalidate("k", 4).ok());
  EXPECT_EQ(Get(*c, "k"), "v5");
  ASSERT_TRUE(c->Invalidate("k", 8).ok());
  EXPECT_TRUE(c->Invalidate("k", 7).ok());  // keeps the tombstone of 8
  EXPECT_EQ(c->Stats().refused_fills, 0u) << "a no-op invalidation is not a refused fill";
  EXPECT_TRUE(c->Set("k", V("v7"), Version(7)).IsAborted());
}

TEST_F(L1CacheTest, EraseRemovesTombstoneToo) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Invalidate("k", 9).ok());
  ASSERT_TRUE(c->Erase("k").ok());
  EXPECT_TRUE(c->Set("k", V("v1"), Version(1)).ok());
  ASSERT_TRUE(c->Erase("k").ok());
  EXPECT_EQ(Get(*c, "k"), "<miss>");
  EXPECT_TRUE(c->Erase("absent").ok());
}

TEST_F(L1CacheTest, ClearEmptiesAndPurgeDropsOnlyDeadEntries) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("short", V("v"), Version(1, seconds(1))).ok());
  ASSERT_TRUE(c->Set("long", V("v"), Version(1, seconds(100))).ok());
  ASSERT_TRUE(c->Invalidate("tomb", 1, seconds(1)).ok());
  clock_.Advance(seconds(2));  // "short" stale (retained), "tomb" dead
  EXPECT_EQ(c->PurgeExpired(), 1u);
  EXPECT_EQ(c->Stats().entries, 2u);
  clock_.Advance(seconds(60));  // "short" dead too
  EXPECT_EQ(c->PurgeExpired(), 1u);
  EXPECT_EQ(c->Stats().entries, 1u);
  c->Clear();
  EXPECT_EQ(c->Stats().entries, 0u);
  EXPECT_EQ(c->Stats().bytes, 0u);
  EXPECT_EQ(Get(*c, "long"), "<miss>");
}

TEST_F(L1CacheTest, StatsCountHitsMissesStaleHitsAndBytes) {
  auto c = Make(Options());
  ASSERT_TRUE(c->Set("k", V("12345"), Version(1)).ok());
  EXPECT_EQ(c->Stats().bytes, 1 + 5 + kL1EntryOverheadBytes);
  EXPECT_EQ(Get(*c, "k"), "12345");
  EXPECT_EQ(Get(*c, "nope"), "<miss>");
  clock_.Advance(seconds(10));
  EXPECT_EQ(Get(*c, "k"), "<miss>");
  ASSERT_TRUE(c->GetStale("k", seconds(1)).value().has_value());
  L1Stats s = c->Stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 2u);
  EXPECT_EQ(s.stale_hits, 1u);
  EXPECT_EQ(s.entries, 1u);
  ASSERT_TRUE(c->Set("k", V("1"), Version(1)).ok());
  EXPECT_EQ(c->Stats().bytes, 1 + 1 + kL1EntryOverheadBytes) << "overwrite re-charges";
}

TEST_F(L1CacheTest, CustomWeigherChargesEntries) {
  L1Options o = Options();
  o.num_shards = 1;
  o.max_bytes = 100;
  o.weigher = [](std::string_view, std::string_view value) { return value.size() * 10; };
  auto c = Make(o);
  ASSERT_TRUE(c->Set("a", V("12345"), Version(1)).ok());  // 50
  ASSERT_TRUE(c->Set("b", V("1234"), Version(1)).ok());   // 40
  EXPECT_EQ(c->Stats().bytes, 90u);
  ASSERT_TRUE(c->Set("c", V("12"), Version(1)).ok());     // 20: something must go
  EXPECT_LE(c->Stats().bytes, 100u);
  EXPECT_GE(c->Stats().evictions, 1u);
  EXPECT_TRUE(c->Set("d", V(std::string(11, 'x')), Version(1)).IsResourceExhausted());
}

TEST_F(L1CacheTest, ThrowingWeigherIsInternalAndStoresNothing) {
  L1Options o = Options();
  o.weigher = [](std::string_view, std::string_view) -> std::size_t {
    throw std::runtime_error("boom");
  };
  auto c = Make(o);
  Status s = c->Set("k", V("v"), Version(1));
  EXPECT_TRUE(s.IsInternal()) << s.ToString();
  EXPECT_EQ(c->Stats().entries, 0u);
}

// Joins `t` once it sets `done`; exits the test program after 3 s without
// it (a deadlock cannot be failed otherwise).
void JoinOrExitAfter3s(std::thread& t, const std::atomic<bool>& done) {
  for (int i = 0; i < 300 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!done) {
    std::printf("L1CacheDeadlockTest: GetStaleInto did not return in 3 s (deadlock)\n");
    std::fflush(stdout);
    std::_Exit(1);
  }
  t.join();
}

// GetStaleInto assigns *out, whose previous value may hold the last
// reference to a value with a user's deleter. Released inside the shard's
// lock-free read section, a deleter that touches the same shard (Erase/Set:
// an exclusive section waits for this very reader) would never return. The
// test fails by exiting after 3 s (a deadlock cannot be failed otherwise).
TEST(L1CacheDeadlockTest, GetStaleIntoReleasesThePreviousValueOutsideTheReadSection) {
  L1Options o;
  o.max_entries = 100;
  o.num_shards = 1;
  o.value_stripes = 1;
  auto created = L1Cache::Create(o);
  ASSERT_TRUE(created.ok());
  std::shared_ptr<L1Cache> c(std::move(*created));
  std::atomic<bool> done{false};
  std::thread t([c, &done] {
    {
      L1Value v1(new std::string("a"), [c](const std::string* p) {
        c->Erase("other").IgnoreError();  // e.g. an owner's cleanup touching the cache
        delete p;
      });
      L1Fill f;
      f.version = 1;
      c->Set("k", v1, f).IgnoreError();
    }
    L1Entry e;
    c->GetStaleInto("k", std::chrono::seconds(0), &e);
    L1Fill f2;
    f2.version = 2;
    c->Set("k", std::make_shared<const std::string>("b"), f2).IgnoreError();  // e.value: last ref to "a"
    c->GetStaleInto("k", std::chrono::seconds(0), &e);  // releases "a" (the fix: after the read section)
    done = true;
  });
  JoinOrExitAfter3s(t, done);
}

// The same when *out's value points to nothing but still owns the value
// with the deleter (an aliasing shared_ptr to null): the fast path for an
// empty entry must look at ownership, not at the pointer.
TEST(L1CacheDeadlockTest, GetStaleIntoReleasesAnOwningNullValueOutsideTheReadSection) {
  L1Options o;
  o.max_entries = 100;
  o.num_shards = 1;
  o.value_stripes = 1;
  auto created = L1Cache::Create(o);
  ASSERT_TRUE(created.ok());
  std::shared_ptr<L1Cache> c(std::move(*created));
  std::atomic<bool> done{false};
  std::thread t([c, &done] {
    L1Fill f;
    f.version = 1;
    c->Set("k", std::make_shared<const std::string>("b"), f).IgnoreError();
    L1Entry e;
    {
      L1Value owner(new std::string("a"), [c](const std::string* p) {
        c->Erase("other").IgnoreError();  // e.g. an owner's cleanup touching the cache
        delete p;
      });
      e.value = L1Value(owner, static_cast<const std::string*>(nullptr));  // null, owns "a"
    }
    c->GetStaleInto("k", std::chrono::seconds(0), &e);  // releases "a": after the read section
    done = true;
  });
  JoinOrExitAfter3s(t, done);
}

}  // namespace
}  // namespace tiercache
