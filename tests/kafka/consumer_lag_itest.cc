// The consumer-lag gauge against the real broker: a partition whose applies
// keep failing (paused and rewound, so it fetches nothing) still reports
// how far behind it is, as events keep coming; a partition this process no
// longer owns (the consumer stopped: its partitions revoked) loses its
// series instead of keeping its last value for ever.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "common/kafka_test_util.h"
#include "common/test_env.h"
#include "kafka/kafka_event_test_util.h"
#include "tiercache/kafka/invalidation_consumer.h"
#include "tiercache/l2_store.h"
#include "tiercache/metrics.h"

namespace tiercache::kafka {
namespace {

using namespace std::chrono_literals;
using testing_events::EventFor;
using testing_events::MapToKey;
using testing_events::WaitFor;

int64_t LagOf(const CounterMetrics& m, const std::string& topic, int32_t partition) {
  const auto s = m.snapshot();
  auto it = s.consumer_lag.find({topic, partition});
  return it == s.consumer_lag.end() ? -1 : it->second;
}

TEST(ConsumerLagItest, APausedPartitionReportsItsLagAndARevokedOneLosesItsSeries) {
  TIERCACHE_REQUIRE_SERVER("kafka", ::tiercache::testing::KafkaPort());
  const std::string topic = ::tiercache::testing::UniqueKafkaName("tiercache.test.lag");
  ASSERT_EQ(::tiercache::testing::CreateTopic(topic, 1), "");
  ASSERT_EQ(::tiercache::testing::CreateTopic(topic + ".dlq", 1), "");

  auto l2 = MakeInMemoryL2Store();
  CacheOptions co;
  co.l2 = l2;
  co.breaker_failure_threshold = 1000;  // keep the breaker out of it
  auto cache = Cache::Create(co);
  ASSERT_TRUE(cache.ok());
  PublisherOptions po;
  po.brokers = ::tiercache::testing::KafkaBootstrap();
  auto publisher = Publisher::Create(po);
  ASSERT_TRUE(publisher.ok());

  const std::string key = "lag-key";
  InMemoryL2StoreSetShardDown(l2.get(), l2->ShardOf(key), true);
  ASSERT_TRUE((*publisher)->PublishAndWait(topic, key, EventFor(key, 1), 10s).ok());

  CounterMetrics metrics;
  InvalidationConsumerOptions o;
  o.brokers = ::tiercache::testing::KafkaBootstrap();
  o.group_id = ::tiercache::testing::UniqueKafkaName("tiercache.test.lag.group");
  o.topics = {topic};
  o.dead_letter_topic = topic + ".dlq";
  o.retry_backoff_min = 200ms;
  o.retry_backoff_max = 1000ms;
  o.metrics = &metrics;
  auto consumer = InvalidationConsumer::Create(o, cache->get(), &MapToKey, publisher->get());
  ASSERT_TRUE(consumer.ok()) << consumer.status().ToString();
  ASSERT_TRUE((*consumer)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return (*consumer)->stats().apply_retries >= 2; }, 60s)) << "the apply never failed";

  // 20 more events while the partition is stuck at the first: 21 behind.
  for (uint64_t v = 2; v <= 21; ++v) ASSERT_TRUE((*publisher)->Publish(topic, key, EventFor(key, v), {}).ok());
  ASSERT_TRUE((*publisher)->Flush(10s).ok());
  EXPECT_TRUE(WaitFor([&] { return LagOf(metrics, topic, 0) == 21; }, 15s))
      << "a paused partition's lag reads " << LagOf(metrics, topic, 0) << " (-1: never reported), not 21";
  EXPECT_EQ((*consumer)->stats().events, 0u);

  // The shard answers again: everything is applied, and the lag falls to 0.
  InMemoryL2StoreSetShardDown(l2.get(), l2->ShardOf(key), false);
  ASSERT_TRUE(WaitFor([&] { return (*consumer)->stats().events >= 21; }, 60s));
  EXPECT_TRUE(WaitFor([&] { return LagOf(metrics, topic, 0) == 0; }, 15s)) << LagOf(metrics, topic, 0);

  // Stopped: its partitions are revoked, and their series go with them.
  (*consumer)->Stop();
  EXPECT_EQ(LagOf(metrics, topic, 0), -1) << "a revoked partition kept its lag series";
}

}  // namespace
}  // namespace tiercache::kafka
