// InvalidationConsumer against librdkafka's mock cluster (no server) and the
// in-memory L2 store: an L2 error never skips an event (the partition waits
// and retries while the others go on); an event raises a mapped group's
// floor to its version; bad options are refused.
#include "tiercache/kafka/invalidation_consumer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "common/kafka_test_util.h"
#include "kafka/kafka_event_test_util.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"

namespace tiercache::kafka {
namespace {

using testing_events::MapToKey;
using testing_events::MapToGroup;
using testing_events::FeedPage;
using testing_events::EventFor;
using testing_events::Version;
using testing_events::WaitFor;

using namespace std::chrono_literals;

TEST(InvalidationConsumerTest, CreateRefusesBadOptions) {
  CacheOptions co;
  auto cache = Cache::Create(co);
  ASSERT_TRUE(cache.ok());
  PublisherOptions po;
  po.brokers = "127.0.0.1:1";
  auto publisher = Publisher::Create(po);
  ASSERT_TRUE(publisher.ok());
  InvalidationConsumerOptions good;
  good.brokers = "127.0.0.1:1";
  good.group_id = "g";
  good.topics = {"t"};
  good.dead_letter_topic = "t.dlq";
  auto make = [&](InvalidationConsumerOptions o, EventMapper m = &MapToKey) {
    return InvalidationConsumer::Create(o, cache->get(), m, publisher->get()).status();
  };
  EXPECT_TRUE(make(good).ok());
  for (auto bad : std::vector<std::function<void(InvalidationConsumerOptions&)>>{
           [](auto& o) { o.brokers.clear(); }, [](auto& o) { o.group_id.clear(); },
           [](auto& o) { o.topics.clear(); }, [](auto& o) { o.dead_letter_topic.clear(); },
           [](auto& o) { o.topics = {"t.dlq"}; }, [](auto& o) { o.max_batch = 0; },
           [](auto& o) { o.fetch_wait = 0ms; }, [](auto& o) { o.retry_backoff_max = 1ms; },
           [](auto& o) { o.auto_offset_reset = "middle"; },
           [](auto& o) { o.extra = {{"enable.auto.offset.store", "true"}}; },
           [](auto& o) { o.extra = {{"no.such.property", "1"}}; }}) {
    InvalidationConsumerOptions o = good;
    bad(o);
    EXPECT_TRUE(make(o).IsInvalidArgument());
  }
  EXPECT_TRUE(make(good, EventMapper()).IsInvalidArgument());
  EXPECT_TRUE(InvalidationConsumer::Create(good, nullptr, &MapToKey, publisher->get()).status().IsInvalidArgument());
}

// Keys "a..." live on one in-memory shard, "b..." on another. With a's shard
// down, a's partition retries with backoff and stores no offset (nothing is
// skipped); b's events are applied meanwhile. When the shard comes back, a's
// event is applied.
TEST(InvalidationConsumerTest, AnL2ErrorPausesItsPartitionAndSkipsNothing) {
  testing::KafkaMockCluster cluster(1);
  ASSERT_TRUE(cluster.ok());
  ASSERT_EQ(rd_kafka_mock_topic_create(cluster.get(), "posts", 2, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_EQ(rd_kafka_mock_topic_create(cluster.get(), "posts.dlq", 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
  auto l2 = MakeInMemoryL2Store();
  CacheOptions co;
  co.l2 = l2;
  co.breaker_failure_threshold = 1000;  // keep the breaker out of it
  auto cache = Cache::Create(co);
  ASSERT_TRUE(cache.ok());
  PublisherOptions po;
  po.brokers = cluster.bootstraps();
  po.extra = {{"log_level", "0"}};
  auto publisher = Publisher::Create(po);
  ASSERT_TRUE(publisher.ok());

  const std::string a_key = "a-key", b_key = "b-key";
  const int a_shard = l2->ShardOf(a_key);
  ASSERT_NE(a_shard, l2->ShardOf(b_key));
  InMemoryL2StoreSetShardDown(l2.get(), a_shard, true);
  // Each key to its own partition.
  ASSERT_TRUE((*publisher)->Publish("posts", a_key, EventFor(a_key, 1), {}).ok());
  ASSERT_TRUE((*publisher)->Flush(10s).ok());

  InvalidationConsumerOptions o;
  o.brokers = cluster.bootstraps();
  o.group_id = "svc";
  o.topics = {"posts"};
  o.dead_letter_topic = "posts.dlq";
  o.retry_backoff_min = 10ms;
  o.retry_backoff_max = 50ms;
  o.session_timeout = 6000ms;
  o.extra = {{"log_level", "0"}};
  auto consumer = InvalidationConsumer::Create(o, cache->get(), &MapToKey, publisher->get());
  ASSERT_TRUE(consumer.ok()) << consumer.status().ToString();
  ASSERT_TRUE((*consumer)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return (*consumer)->stats().apply_retries >= 3; }, 30s))
      << "the failing partition was not retried";
  EXPECT_EQ((*consumer)->stats().events, 0u) << "an event whose apply failed was counted as done";

  // Another key's events flow meanwhile (another partition, another shard),
  // unless both keys share a partition: then they wait too, which is allowed.
  ASSERT_TRUE((*publisher)->Publish("posts", b_key, EventFor(b_key, 1), {}).ok());
  ASSERT_TRUE((*publisher)->Flush(10s).ok());

  InMemoryL2StoreSetShardDown(l2.get(), a_shard, false);
  ASSERT_TRUE(WaitFor([&] { return (*consumer)->stats().events >= 2; }, 30s)) << "the event was skipped or stuck";
  Result<std::optional<std::string>> raw = l2->Get(a_key, 100ms);
  ASSERT_TRUE(raw.ok() && raw->has_value());
  Result<EnvelopeView> e = DecodeEnvelope(**raw);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->kind, EntryKind::kTombstone);
  EXPECT_EQ(e->version, 1u);
  (*consumer)->Stop();
}

// A mapped group gets the event's version as its floor: after the event, a
// member loaded below it (a replica behind the change) is refused.
TEST(InvalidationConsumerTest, AnEventRaisesItsGroupsFloorToItsVersion) {
  testing::KafkaMockCluster cluster(1);
  ASSERT_TRUE(cluster.ok());
  ASSERT_EQ(rd_kafka_mock_topic_create(cluster.get(), "posts", 2, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_EQ(rd_kafka_mock_topic_create(cluster.get(), "posts.dlq", 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
  CacheOptions co;
  co.l2 = MakeInMemoryL2Store();
  auto cache = Cache::Create(co);
  ASSERT_TRUE(cache.ok());
  PublisherOptions po;
  po.brokers = cluster.bootstraps();
  po.extra = {{"log_level", "0"}};
  auto publisher = Publisher::Create(po);
  ASSERT_TRUE(publisher.ok());
  ASSERT_TRUE((*publisher)->Publish("posts", "c42", EventFor("c42", 57), {}).ok());
  ASSERT_TRUE((*publisher)->Flush(10s).ok());

  InvalidationConsumerOptions o;
  o.brokers = cluster.bootstraps();
  o.group_id = "svc";
  o.topics = {"posts"};
  o.dead_letter_topic = "posts.dlq";
  o.session_timeout = 6000ms;
  o.extra = {{"log_level", "0"}};
  auto consumer = InvalidationConsumer::Create(o, cache->get(), &MapToGroup, publisher->get());
  ASSERT_TRUE(consumer.ok()) << consumer.status().ToString();
  ASSERT_TRUE((*consumer)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return (*consumer)->stats().events >= 1; }, 30s)) << "the event was not applied";
  (*consumer)->Stop();
  GetOptions g;
  g.group = "feed:{c42}";
  Result<CachedValue> behind = (*cache)->Get(FeedPage("c42", 1), Version(56), g);
  EXPECT_TRUE(behind.status().IsAborted()) << "a member below the event's version was served";
  Result<CachedValue> current = (*cache)->Get(FeedPage("c42", 1), Version(57), g);
  ASSERT_TRUE(current.ok()) << current.status().ToString();
  EXPECT_EQ(current->version(), 57u);
}

}  // namespace
}  // namespace tiercache::kafka
