// Regression tests from an adversarial review: each comment tells the attack;
// the ones that found a defect failed before its fix.
// Adversary tests for InvalidationConsumer on the mock cluster: a partition
// paused after an L2 error across a rebalance; Stop with the brokers down.
#include "tiercache/kafka/invalidation_consumer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "common/kafka_test_util.h"
#include "kafka/kafka_event_test_util.h"
#include "tiercache/envelope.h"
#include "tiercache/l2_store.h"

namespace tiercache::kafka {
namespace {

using testing_events::MapToKey;
using testing_events::EventFor;
using testing_events::WaitFor;

using namespace std::chrono_literals;

struct Env {
  testing::KafkaMockCluster cluster{1};
  std::shared_ptr<L2Store> l2 = MakeInMemoryL2Store();
  std::unique_ptr<Cache> cache;
  std::unique_ptr<Publisher> publisher;

  void Init() {
    ASSERT_TRUE(cluster.ok());
    ASSERT_EQ(rd_kafka_mock_topic_create(cluster.get(), "posts", 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    ASSERT_EQ(rd_kafka_mock_topic_create(cluster.get(), "posts.dlq", 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    CacheOptions co;
    co.l2 = l2;
    co.breaker_failure_threshold = 1000;
    auto c = Cache::Create(co);
    ASSERT_TRUE(c.ok());
    cache = std::move(*c);
    PublisherOptions po;
    po.brokers = cluster.bootstraps();
    po.extra = {{"log_level", "0"}};
    auto p = Publisher::Create(po);
    ASSERT_TRUE(p.ok());
    publisher = std::move(*p);
  }

  std::unique_ptr<InvalidationConsumer> Consumer(milliseconds backoff) {
    InvalidationConsumerOptions o;
    o.brokers = cluster.bootstraps();
    o.group_id = "svc";
    o.topics = {"posts"};
    o.dead_letter_topic = "posts.dlq";
    o.retry_backoff_min = backoff;
    o.retry_backoff_max = backoff;
    o.session_timeout = 6000ms;
    o.extra = {{"log_level", "0"}};
    auto c = InvalidationConsumer::Create(o, cache.get(), &MapToKey, publisher.get());
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }
};

// A's only partition is paused (L2 error, long backoff) when a second member
// joins and leaves: two eager rebalances. The rebalance callback forgets the
// pause (paused.clear()) but librdkafka keeps the application's pause flag
// on the partition, so nobody ever resumes it: once L2 is back, the event is
// never applied (and nothing later on that partition either).
TEST(AdversaryConsumerTest, APartitionPausedAcrossARebalanceIsNeverResumed) {
  Env env;
  env.Init();
  const std::string key = "a-key";
  InMemoryL2StoreSetShardDown(env.l2.get(), env.l2->ShardOf(key), true);
  ASSERT_TRUE(env.publisher->PublishAndWait("posts", key, EventFor(key, 1), 10s).ok());

  auto a = env.Consumer(4000ms);
  ASSERT_TRUE(a && a->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return a->stats().apply_retries >= 1; }, 30s));
  {
    auto b = env.Consumer(4000ms);
    ASSERT_TRUE(b && b->Start().ok());
    ASSERT_TRUE(WaitFor([&] { return a->stats().rebalances >= 2; }, 30s));
    std::this_thread::sleep_for(500ms);
    b->Stop();  // leaves: the partition goes (back) to a
  }
  ASSERT_TRUE(WaitFor([&] { return a->stats().rebalances >= 3; }, 30s)) << a->stats().rebalances;
  InMemoryL2StoreSetShardDown(env.l2.get(), env.l2->ShardOf(key), false);
  ASSERT_TRUE(env.publisher->PublishAndWait("posts", key, EventFor(key, 2), 10s).ok());
  const bool applied = WaitFor([&] { return a->stats().events >= 1; }, 20s);
  std::printf("after the rebalances: events %llu, retries %llu, rebalances %llu\n",
              static_cast<unsigned long long>(a->stats().events),
              static_cast<unsigned long long>(a->stats().apply_retries),
              static_cast<unsigned long long>(a->stats().rebalances));
  EXPECT_TRUE(applied) << "the partition paused before the rebalance never resumed: its events are stuck";
  a->Stop();
}

// Stop with every broker down while the consumer holds stored offsets.
TEST(AdversaryConsumerTest, StopIsBoundedWithTheBrokersDown) {
  Env env;
  env.Init();
  ASSERT_TRUE(env.publisher->PublishAndWait("posts", "k", EventFor("k", 1), 10s).ok());
  auto a = env.Consumer(50ms);
  ASSERT_TRUE(a && a->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return a->stats().events >= 1; }, 30s));
  ASSERT_TRUE(env.publisher->PublishAndWait("posts", "k", EventFor("k", 2), 10s).ok());
  ASSERT_TRUE(WaitFor([&] { return a->stats().events >= 2; }, 30s));
  ASSERT_EQ(env.cluster.SetDown(), RD_KAFKA_RESP_ERR_NO_ERROR);
  std::this_thread::sleep_for(1s);
  const auto t0 = std::chrono::steady_clock::now();
  a->Stop();
  a.reset();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  std::printf("Stop + destroy with brokers down: %lld ms\n", static_cast<long long>(ms.count()));
  EXPECT_LE(ms.count(), 6000 + 5000 + 2000);
}

// Control: the same rebalances with L2 healthy apply everything.
TEST(AdversaryConsumerTest, ControlTheSameRebalancesWithoutAPauseApplyEverything) {
  Env env;
  env.Init();
  const std::string key = "a-key";
  ASSERT_TRUE(env.publisher->PublishAndWait("posts", key, EventFor(key, 1), 10s).ok());
  auto a = env.Consumer(4000ms);
  ASSERT_TRUE(a && a->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return a->stats().events >= 1; }, 30s));
  {
    auto b = env.Consumer(4000ms);
    ASSERT_TRUE(b && b->Start().ok());
    ASSERT_TRUE(WaitFor([&] { return a->stats().rebalances >= 2; }, 30s));
    std::this_thread::sleep_for(500ms);
    b->Stop();
  }
  ASSERT_TRUE(WaitFor([&] { return a->stats().rebalances >= 3; }, 30s));
  ASSERT_TRUE(env.publisher->PublishAndWait("posts", key, EventFor(key, 2), 10s).ok());
  EXPECT_TRUE(WaitFor([&] { return a->stats().events >= 2; }, 20s));
  a->Stop();
}

}  // namespace
}  // namespace tiercache::kafka
