#include "tiercache/metrics.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

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
  EXPECT_EQ(TierName(Tier::kLoader), "loader");
  for (int c = 0; c < kCounterCount; ++c) EXPECT_NE(CounterName(static_cast<Counter>(c)), "unknown");
}

TEST(MetricsConcurrencyTest, ConcurrentAddsAreAllCounted) {
  CounterMetrics m;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) m.Add(Counter::kMiss, Tier::kL2);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(m.snapshot().get(Counter::kMiss, Tier::kL2), 40000u);
}

}  // namespace
}  // namespace tiercache
