#include "tiercache/metrics.h"

#include <gtest/gtest.h>

namespace tiercache {
namespace {

TEST(MetricsTest, CountsPerCounterAndTier) {
  CounterMetrics m;
  m.Add(Counter::kHit, Tier::kL1);
  m.Add(Counter::kHit, Tier::kL1, 2);
  m.Add(Counter::kHit, Tier::kL2);
  m.Add(Counter::kRefusedFill, Tier::kL2);
  auto s = m.snapshot();
  EXPECT_EQ(s.get(Counter::kHit, Tier::kL1), 3u);
  EXPECT_EQ(s.get(Counter::kHit, Tier::kL2), 1u);
  EXPECT_EQ(s.get(Counter::kMiss, Tier::kL1), 0u);
  EXPECT_EQ(s.get(Counter::kRefusedFill, Tier::kL2), 1u);
}

TEST(MetricsTest, LoadLatencyGoesIntoPowerOfTwoBuckets) {
  CounterMetrics m;
  m.ObserveLoad(std::chrono::nanoseconds(500));       // 0 us -> bucket 0
  m.ObserveLoad(std::chrono::microseconds(1));         // bucket 1
  m.ObserveLoad(std::chrono::microseconds(3));         // [2,4) -> bucket 2
  m.ObserveLoad(std::chrono::milliseconds(50));        // 50000 us -> bucket 16
  m.ObserveLoad(std::chrono::hours(100000));           // clamps to the last bucket
  auto s = m.snapshot();
  EXPECT_EQ(s.load_latency_us_buckets[0], 1u);
  EXPECT_EQ(s.load_latency_us_buckets[1], 1u);
  EXPECT_EQ(s.load_latency_us_buckets[2], 1u);
  EXPECT_EQ(s.load_latency_us_buckets[16], 1u);
  EXPECT_EQ(s.load_latency_us_buckets[CounterMetrics::kLatencyBuckets - 1], 1u);
}

TEST(MetricsTest, NamesAreStable) {
  EXPECT_EQ(CounterName(Counter::kLeaseWaitTimeout), "lease_wait_timeout");
  EXPECT_EQ(CounterName(Counter::kL2BehindLocal), "l2_behind_local");
  EXPECT_EQ(TierName(Tier::kLoader), "loader");
  for (int c = 0; c < kCounterCount; ++c) EXPECT_NE(CounterName(static_cast<Counter>(c)), "unknown");
}

TEST(MetricsTest, InvalidationFiguresAreKeptPerOutcomeStageAndCause) {
  CounterMetrics m;
  m.AddEvents(EventOutcome::kApplied, 3);
  m.AddEvents(EventOutcome::kIgnored);
  m.ObserveInvalidationLag(InvalidationStage::kL2, std::chrono::microseconds(3));   // bucket 2
  m.ObserveInvalidationLag(InvalidationStage::kL1, std::chrono::milliseconds(50));  // bucket 16
  m.ObserveInvalidationLag(InvalidationStage::kL1, std::chrono::nanoseconds(-5));   // clock skew: bucket 0
  m.AddL1Fence(L1FenceCause::kStarting);
  m.SetL1Fenced(true);
  auto s = m.snapshot();
  EXPECT_EQ(s.events_of(EventOutcome::kApplied), 3u);
  EXPECT_EQ(s.events_of(EventOutcome::kIgnored), 1u);
  EXPECT_EQ(s.events_of(EventOutcome::kDeadLettered), 0u);
  EXPECT_EQ(s.lags_of(InvalidationStage::kL2), 1u);
  EXPECT_EQ(s.lags_of(InvalidationStage::kL1), 2u);
  EXPECT_EQ(s.lag_us_buckets[static_cast<int>(InvalidationStage::kL2)][2], 1u);
  EXPECT_EQ(s.lag_us_buckets[static_cast<int>(InvalidationStage::kL1)][16], 1u);
  EXPECT_EQ(s.lag_us_buckets[static_cast<int>(InvalidationStage::kL1)][0], 1u);
  EXPECT_EQ(s.l1_fences[static_cast<int>(L1FenceCause::kStarting)], 1u);
  EXPECT_TRUE(s.l1_fenced);
  m.SetL1Fenced(false);
  EXPECT_FALSE(m.snapshot().l1_fenced);
  for (int o = 0; o < kEventOutcomeCount; ++o) EXPECT_NE(EventOutcomeName(static_cast<EventOutcome>(o)), "unknown");
  for (int c = 0; c < kL1FenceCauseCount; ++c) EXPECT_NE(L1FenceCauseName(static_cast<L1FenceCause>(c)), "unknown");
  EXPECT_EQ(InvalidationStageName(InvalidationStage::kL1), "l1");
  // The interface's defaults accept the calls and do nothing.
  Metrics::Noop()->AddEvents(EventOutcome::kApplied);
  Metrics::Noop()->SetConsumerLag("t", 0, 5);
}

}  // namespace
}  // namespace tiercache
