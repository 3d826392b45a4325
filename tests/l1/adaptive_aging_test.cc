// W-TinyLFU's adaptive aging (FrequencySketch), the saturation mark a hit
// uses to skip the sketch (Shard::CountInSketch), and the admission contest's
// rotation of a winning victim (Shard::AdmitOrReject).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>

#include "l1/frequency_sketch.h"
#include "tiercache/l1_cache.h"

namespace tiercache {
namespace {

using l1::FrequencySketch;

constexpr std::size_t kCapacity = 100;  // classic period: 1,000 increments

// Drives `sketch` through increments of distinct keys (one request each,
// `hit_in_50` hits per 50 requests) and one contest per increment whose
// victim has estimate `victim`, until it has aged `agings` times. Returns
// the next unused key.
std::uint64_t RunPeriods(FrequencySketch& sketch, int agings, int victim, int hit_in_50,
                         std::uint64_t key) {
  for (int aged = 0; aged < agings;) {
    const std::size_t before = sketch.additions();
    sketch.Increment(key++ * 0x9E3779B97F4A7C15ULL);
    sketch.RecordRequest(static_cast<int>(key % 50) < hit_in_50);
    sketch.RecordContest(victim);
    if (sketch.additions() < before) ++aged;
  }
  return key;
}

TEST(AdaptiveAgingTest, PeriodGrowsWhileVictimsCountsAreLow) {
  FrequencySketch sketch(kCapacity);
  const std::size_t base = sketch.base_sample_size();
  ASSERT_EQ(base, FrequencySketch::kBasePeriod * kCapacity);
  std::uint64_t key = RunPeriods(sketch, 1, /*victim=*/1, 25, 1);
  EXPECT_EQ(sketch.sample_size(), 2 * base);
  key = RunPeriods(sketch, 20, 1, 25, key);
  EXPECT_EQ(sketch.sample_size(), FrequencySketch::kMaxPeriodFactor * base) << "bounded";
}

TEST(AdaptiveAgingTest, PeriodShrinksWhenVictimsCountsAreHigh) {
  FrequencySketch sketch(kCapacity);
  const std::size_t base = sketch.base_sample_size();
  std::uint64_t key = RunPeriods(sketch, 3, /*victim=*/1, 25, 1);
  ASSERT_EQ(sketch.sample_size(), 8 * base);
  key = RunPeriods(sketch, 1, /*victim=*/14, 25, key);
  EXPECT_EQ(sketch.sample_size(), 4 * base);
  key = RunPeriods(sketch, 5, 14, 25, key);
  EXPECT_EQ(sketch.sample_size(), base) << "never below the classic period";
  key = RunPeriods(sketch, 3, /*victim=*/7, 25, key);
  EXPECT_EQ(sketch.sample_size(), base) << "mid-range victims: the period stays";
}

TEST(AdaptiveAgingTest, HitRateDropAgesAtOnceAndRestoresTheClassicPeriod) {
  FrequencySketch sketch(kCapacity);
  const std::size_t base = sketch.base_sample_size();
  RunPeriods(sketch, 3, /*victim=*/1, 25, 1);
  ASSERT_EQ(sketch.sample_size(), 8 * base);
  for (int i = 0; i < 12; ++i) sketch.Increment(7);
  const int before = sketch.Frequency(7);
  ASSERT_GE(before, 12);
  // A whole sample (10 x capacity requests) of misses: the workload changed.
  for (std::size_t i = 0; i < FrequencySketch::kBasePeriod * kCapacity; ++i) {
    sketch.RecordRequest(false);
  }
  EXPECT_LE(sketch.Frequency(7), (before + 1) / 2);
  EXPECT_EQ(sketch.sample_size(), base);
}

TEST(AdaptiveAgingTest, SteadyHitRateDoesNotAge) {
  FrequencySketch sketch(kCapacity);
  for (int i = 0; i < 12; ++i) sketch.Increment(7);
  for (std::size_t i = 0; i < 20 * FrequencySketch::kBasePeriod * kCapacity; ++i) {
    sketch.RecordRequest(i % 2 == 0);
  }
  EXPECT_EQ(sketch.Frequency(7), 12);
}

TEST(AdaptiveAgingTest, DoublingThatLowersTheHitRateIsTakenBack) {
  FrequencySketch sketch(kCapacity);
  const std::size_t base = sketch.base_sample_size();
  std::uint64_t key = RunPeriods(sketch, 1, /*victim=*/1, 25, 1);
  ASSERT_EQ(sketch.sample_size(), 2 * base);
  // The longer period's hit rate is 4 points lower: under the shift check's
  // threshold, over the comparison's.
  key = RunPeriods(sketch, 1, 1, 23, key);
  EXPECT_EQ(sketch.sample_size(), base);
  // And it does not grow back past that at once.
  key = RunPeriods(sketch, 3, 1, 23, key);
  EXPECT_EQ(sketch.sample_size(), base);
}

TEST(AdaptiveAgingTest, ConservativeUpdateKeepsLoneKeysExact) {
  FrequencySketch sketch(kCapacity);
  for (int i = 0; i < 9; ++i) sketch.Increment(42);
  for (int i = 0; i < 3; ++i) sketch.Increment(43);
  EXPECT_EQ(sketch.Frequency(42), 9);
  EXPECT_EQ(sketch.Frequency(43), 3);
}

L1Value V(const std::string& s) { return std::make_shared<const std::string>(s); }

bool Has(L1Cache& c, const std::string& key) {
  auto r = c.Get(key);
  return r.ok() && r->has_value();
}

// An entry that was popular and is not used any more sits at the probation
// tail with a high count: it wins one contest, then the next candidates are
// compared with other entries instead of all losing to it until aging.
TEST(AdaptiveAgingTest, StaleVictimDoesNotBlockEveryAdmission) {
  FakeClock clock;
  L1Options o;
  o.policy = L1Policy::kTinyLfu;
  o.max_entries = kCapacity;
  o.num_shards = 1;
  o.default_ttl = std::chrono::hours(1);
  o.clock = &clock;
  auto created = L1Cache::Create(o);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  L1Cache& c = **created;
  ASSERT_TRUE(c.Set("stale", V("x"), L1Fill{}).ok());
  for (int i = 0; i < 14; ++i) ASSERT_TRUE(Has(c, "stale"));  // while in the window
  for (std::size_t i = 0; i + 1 < kCapacity; ++i) {
    ASSERT_TRUE(c.Set("filler" + std::to_string(i), V("x"), L1Fill{}).ok());
  }
  constexpr int kNew = 6;
  for (int j = 0; j < kNew; ++j) {
    const std::string key = "new" + std::to_string(j);
    ASSERT_TRUE(c.Set(key, V("x"), L1Fill{}).ok());
    ASSERT_TRUE(Has(c, key));
    ASSERT_TRUE(Has(c, key));
  }
  ASSERT_TRUE(c.Set("last", V("x"), L1Fill{}).ok());  // pushes the last new key out of the window
  int admitted = 0;
  for (int j = 0; j < kNew; ++j) admitted += Has(c, "new" + std::to_string(j));
  EXPECT_GE(admitted, kNew - 1);
  EXPECT_LE(c.Stats().entries, kCapacity);
}

// Counts the halvings one Increment of a fresh key causes (additions drop).
int HalvingsOnNextIncrement(FrequencySketch& s, std::uint64_t key) {
  const std::size_t before = s.additions();
  s.Increment(key * 0x9E3779B97F4A7C15ULL);
  return s.additions() < before ? 1 : 0;
}

// A hit-rate shift after a long period halves the counters once and puts the
// period back to the classic one. The count left from the long period must
// not carry over past the new period's end, or the next increments cascade
// through halving after halving and wipe the sketch.
TEST(AdaptiveAgingTest, AShiftAfterALongPeriodHalvesOnceNotOverAndOver) {
  FrequencySketch s(kCapacity);
  const std::size_t base = s.base_sample_size();
  std::uint64_t key = RunPeriods(s, 6, /*victim=*/1, 25, 1);
  ASSERT_EQ(s.sample_size(), 64 * base);
  // Most of a long period, without ending it.
  for (std::size_t i = 0; i < 40 * base; ++i) {
    s.Increment(key++ * 0x9E3779B97F4A7C15ULL);
    s.RecordRequest(static_cast<int>(key % 50) < 25);
  }
  for (int i = 0; i < 14; ++i) s.Increment(7);
  const int hot = s.Frequency(7);
  ASSERT_GE(hot, 14);
  for (std::size_t i = 0; i < FrequencySketch::kBasePeriod * kCapacity; ++i) s.RecordRequest(false);
  ASSERT_EQ(s.sample_size(), base);
  EXPECT_EQ(s.Frequency(7), hot / 2) << "the shift halves once";
  int extra = 0;
  for (int i = 0; i < 10; ++i) extra += HalvingsOnNextIncrement(s, key++);
  EXPECT_EQ(extra, 0) << "cascade of halvings right after the shift";
  EXPECT_EQ(s.Frequency(7), hot / 2);
}

// A taken-back doubling (and a shrink, below) shortens the period: the next
// increment must not age again at once (a 'period' of one request).
TEST(AdaptiveAgingTest, ATakenBackDoublingDoesNotAgeTwiceInARow) {
  FrequencySketch s(kCapacity);
  const std::size_t base = s.base_sample_size();
  std::uint64_t key = RunPeriods(s, 1, 1, 25, 1);
  ASSERT_EQ(s.sample_size(), 2 * base);
  for (int i = 0; i < 12; ++i) s.Increment(7);
  key = RunPeriods(s, 1, 1, 23, key);
  ASSERT_EQ(s.sample_size(), base);
  const int after_revert = s.Frequency(7);
  EXPECT_EQ(HalvingsOnNextIncrement(s, key++), 0) << "immediate second aging after the revert";
  EXPECT_EQ(s.Frequency(7), after_revert);
}

TEST(AdaptiveAgingTest, AShrinkDoesNotAgeTwiceInARow) {
  FrequencySketch s(kCapacity);
  const std::size_t base = s.base_sample_size();
  std::uint64_t key = RunPeriods(s, 3, 1, 25, 1);
  ASSERT_EQ(s.sample_size(), 8 * base);
  for (int i = 0; i < 12; ++i) s.Increment(7);
  key = RunPeriods(s, 1, 14, 25, key);
  ASSERT_EQ(s.sample_size(), 4 * base);
  const int after = s.Frequency(7);
  EXPECT_EQ(HalvingsOnNextIncrement(s, key++), 0) << "immediate second aging after a shrink";
  EXPECT_EQ(s.Frequency(7), after);
}

// Shard::CountInSketch skips reading the sketch for a key whose mark says it
// is saturated, calling IncrementSaturated() instead. Fed the same requests,
// a sketch driven that way must stay identical to one that always reads
// (every estimate, the aging state), and a mark must only ever be held by a
// saturated key. Fails if Increment() reports saturation early, or if a mark
// outlives a halving.
TEST(AdaptiveAgingTest, SkippingSaturatedKeysChangesNoEstimateAndNoAging) {
  FrequencySketch skipping(kCapacity);
  FrequencySketch reading(kCapacity);
  std::unordered_map<std::uint64_t, std::uint64_t> saturated_at;  // hash -> halvings()
  std::mt19937_64 rng(7);
  // Skewed keys: a few hot ones saturate, the tail does not; a shift halfway
  // (new hot keys, lower hit rate) makes the sketch age early too.
  std::uint64_t skipped = 0;
  for (int i = 0; i < 200'000; ++i) {
    const std::uint64_t rank = rng() % 2 == 0 ? rng() % 20 : 20 + rng() % 980;  // half to 20 keys
    const std::uint64_t key = (rank + (i >= 100'000 ? 5000 : 0)) * 0x9E3779B97F4A7C15ULL;
    std::uint64_t& mark = saturated_at[key];
    if (mark == skipping.halvings()) {
      EXPECT_EQ(skipping.Frequency(key), FrequencySketch::kMaxCount) << "a mark on a key that is not saturated";
      skipping.IncrementSaturated();
      ++skipped;
    } else {
      mark = skipping.Increment(key) ? skipping.halvings() : 0;
    }
    reading.Increment(key);
    const bool hit = i % 3 != 0 && i < 100'000;
    skipping.RecordRequest(hit);
    reading.RecordRequest(hit);
    skipping.RecordContest(static_cast<int>(rank % 16));
    reading.RecordContest(static_cast<int>(rank % 16));
    ASSERT_EQ(skipping.halvings(), reading.halvings()) << "request " << i;
    ASSERT_EQ(skipping.additions(), reading.additions()) << "request " << i;
    ASSERT_EQ(skipping.sample_size(), reading.sample_size()) << "request " << i;
    if (i % 997 == 0) {
      for (std::uint64_t r = 0; r < 1000; r += 3) {
        const std::uint64_t probe = (r + (i >= 100'000 ? 5000 : 0)) * 0x9E3779B97F4A7C15ULL;
        ASSERT_EQ(skipping.Frequency(probe), reading.Frequency(probe)) << "request " << i;
      }
    }
  }
  EXPECT_GT(skipped, 40'000u) << "the hot keys were not found saturated: the test checks little";
  EXPECT_GT(reading.halvings(), 10u) << "too few halvings for the marks to be tested across them";
}

}  // namespace
}  // namespace tiercache
