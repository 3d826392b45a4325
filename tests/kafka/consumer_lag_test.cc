// The paused partitions' lag query must not hold up the consumer: with the
// leader of a paused partition answering in 20 s (librdkafka's mock cluster),
// an event on a healthy partition is still applied at once, and Stop() stays
// prompt. (query_watermark_offsets waited for the slow reply however long:
// 19 s before the event was applied.)
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <chrono>
#include <string>
#include <thread>

#include "common/kafka_test_util.h"
#include "kafka/kafka_event_test_util.h"
#include "tiercache/kafka/invalidation_consumer.h"
#include "tiercache/kafka/publisher.h"
#include "tiercache/l2_store.h"
#include "tiercache/metrics.h"

namespace tiercache::kafka {
namespace {

using namespace std::chrono_literals;
using testing_events::EventFor;
using testing_events::MapToKey;
using testing_events::WaitFor;
using Clock = std::chrono::steady_clock;

TEST(ConsumerLagTest, ASlowLeaderOfAPausedPartitionDoesNotHoldUpTheOthers) {
  testing::KafkaMockCluster cluster(2);
  ASSERT_TRUE(cluster.ok());
  rd_kafka_mock_cluster_t* mcl = cluster.get();
  ASSERT_EQ(rd_kafka_mock_topic_create(mcl, "t", 2, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_EQ(rd_kafka_mock_topic_create(mcl, "t.dlq", 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_mock_partition_set_leader(mcl, "t", 0, 1);
  rd_kafka_mock_partition_set_leader(mcl, "t", 1, 2);
  rd_kafka_mock_partition_set_leader(mcl, "t.dlq", 0, 2);
  rd_kafka_mock_coordinator_set(mcl, "group", "g", 2);

  auto l2 = MakeInMemoryL2Store();
  ASSERT_NE(l2->ShardOf("akey"), l2->ShardOf("bkey"));
  CacheOptions co;
  co.l2 = l2;
  co.breaker_failure_threshold = 1000;
  auto cache = Cache::Create(co);
  ASSERT_TRUE(cache.ok());
  PublisherOptions po;
  po.brokers = cluster.bootstraps();
  po.extra = {{"log_level", "0"}};
  auto publisher = Publisher::Create(po);
  ASSERT_TRUE(publisher.ok());
  auto produce = [&](int32_t partition, const std::string& key) {
    std::string error;
    testing::KafkaPtr p = testing::MakeKafkaClient(
        RD_KAFKA_PRODUCER, {{"bootstrap.servers", cluster.bootstraps()}, {"log_level", "0"}}, &error);
    ASSERT_TRUE(p) << error;
    const std::string payload = EventFor(key, 1);
    ASSERT_EQ(rd_kafka_producev(p.get(), RD_KAFKA_V_TOPIC("t"), RD_KAFKA_V_PARTITION(partition),
                                RD_KAFKA_V_KEY(key.data(), key.size()),
                                RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
              RD_KAFKA_RESP_ERR_NO_ERROR);
    ASSERT_EQ(rd_kafka_flush(p.get(), 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  };

  InMemoryL2StoreSetShardDown(l2.get(), l2->ShardOf("akey"), true);  // partition 0's applies fail
  produce(0, "akey");
  CounterMetrics metrics;
  InvalidationConsumerOptions o;
  o.brokers = cluster.bootstraps();
  o.group_id = "g";
  o.topics = {"t"};
  o.dead_letter_topic = "t.dlq";
  o.auto_offset_reset = "earliest";
  o.retry_backoff_min = 15s;  // stays paused for the whole test
  o.retry_backoff_max = 15s;
  o.metrics = &metrics;
  o.extra = {{"log_level", "0"}};
  auto consumer = InvalidationConsumer::Create(o, cache->get(), &MapToKey, publisher->get());
  ASSERT_TRUE(consumer.ok()) << consumer.status().ToString();
  ASSERT_TRUE((*consumer)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return (*consumer)->stats().apply_retries >= 1; }, 60s)) << "never paused";
  rd_kafka_mock_broker_set_rtt(mcl, 1, 20000);  // partition 0's leader: 20 s per answer
  std::this_thread::sleep_for(3s);              // lag queries run meanwhile

  const auto t0 = Clock::now();
  produce(1, "bkey");
  EXPECT_TRUE(WaitFor([&] { return (*consumer)->stats().events >= 1; }, 60s));
  const auto applied_after = Clock::now() - t0;
  EXPECT_LT(applied_after, 4s) << "the healthy partition's event waited "
                               << std::chrono::duration<double>(applied_after).count() << " s";
  const auto t1 = Clock::now();
  (*consumer)->Stop();
  EXPECT_LT(Clock::now() - t1, 5s) << "Stop() held up by the lag query";
  rd_kafka_mock_broker_set_rtt(mcl, 1, 0);
}

}  // namespace
}  // namespace tiercache::kafka
