// InvalidationConsumer against the local broker and Redis Cluster: every
// published event applied at its version and its offset committed; old and
// redelivered events change nothing; two appliers of one partition at once
// never regress a key (the seed's GET-then-SET does, shown under the same
// forced interleaving); poison events go to the dead-letter topic with a
// reason while the partition keeps flowing.
#include "tiercache/kafka/invalidation_consumer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/kafka_test_util.h"
#include "common/test_env.h"
#include "redis/redis_test_util.h"
#include "tiercache/envelope.h"
#include "tiercache/events.h"
#include "tiercache/l2_store.h"
#include "tiercache/redis/redis_client.h"
#include "common/log_capture.h"

namespace tiercache::kafka {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

std::string PostKey(const std::string& community, const std::string& post) {
  return "post:{community:" + community + "}:" + post;
}

// The posts service's mapping: a post event invalidates the post's key.
Result<InvalidationTargets> MapPostEvent(const InvalidationEvent& e) {
  if (e.type != "post.created" && e.type != "post.updated" && e.type != "post.deleted") {
    return Status::InvalidArgument("unknown type '" + e.type + "'");
  }
  return InvalidationTargets{{PostKey(e.partition_key, e.entity_id)}, {}};
}

std::string EventJson(const std::string& id, const std::string& community, const std::string& post,
                      uint64_t version, const std::string& type = "post.updated") {
  InvalidationEvent e;
  e.event_id = id;
  e.type = type;
  e.entity_id = post;
  e.partition_key = community;
  e.version = version;
  e.occurred_at = std::chrono::system_clock::now();
  return *EncodeEvent(e);
}

class ConsumerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("kafka", testing::KafkaPort());
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    Result<std::unique_ptr<redis::RedisClient>> c = redis::RedisClient::Create(redis::testing::ClusterOptions());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::shared_ptr<redis::RedisClient>(std::move(*c));
    cache_ = MakeCache();
    ASSERT_TRUE(cache_);
    topic_ = testing::UniqueKafkaName("tiercache.test.posts");
    dlq_ = topic_ + ".dlq";
    ASSERT_EQ(testing::CreateTopic(topic_, kPartitions, {{"max.message.bytes", "3000000"}}), "");
    ASSERT_EQ(testing::CreateTopic(dlq_, 1, {{"max.message.bytes", "3000000"}}), "");
    PublisherOptions po;
    po.brokers = testing::KafkaBootstrap();
    po.max_message_bytes = 3000000;
    Result<std::unique_ptr<Publisher>> p = Publisher::Create(po);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    publisher_ = std::move(*p);
    tag_ = testing::UniqueKafkaName("c");
  }

  std::unique_ptr<Cache> MakeCache() {
    CacheOptions o;
    o.l2 = MakeRedisL2Store(client_);
    Result<std::unique_ptr<Cache>> cache = Cache::Create(o);
    EXPECT_TRUE(cache.ok()) << cache.status().ToString();
    return cache.ok() ? std::move(*cache) : nullptr;
  }

  std::unique_ptr<InvalidationConsumer> MakeConsumer(const std::string& group, Cache* cache,
                                                     std::function<void(const HandledEvent&)> on_handled = {}) {
    InvalidationConsumerOptions o;
    o.metrics = &metrics_;
    o.brokers = testing::KafkaBootstrap();
    o.group_id = group;
    o.topics = {topic_};
    o.dead_letter_topic = dlq_;
    o.session_timeout = 6000ms;
    o.on_handled = std::move(on_handled);
    Result<std::unique_ptr<InvalidationConsumer>> c =
        InvalidationConsumer::Create(o, cache, &MapPostEvent, publisher_.get());
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }

  void Publish(const std::string& community, const std::string& payload) {
    Result<Delivery> d = publisher_->PublishAndWait(topic_, community, payload, 10s);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
  }

  // The version of `key`'s tombstone in Redis, or -1 (none / not a tombstone).
  int64_t TombstoneVersion(const std::string& key) {
    Result<std::optional<std::string>> raw = client_->Get(key);
    if (!raw.ok() || !raw->has_value()) return -1;
    Result<EnvelopeView> e = DecodeEnvelope(**raw);
    if (!e.ok() || e->kind != EntryKind::kTombstone) return -1;
    return static_cast<int64_t>(e->version);
  }

  template <typename Pred>
  static bool WaitFor(Pred done, std::chrono::milliseconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    while (!done()) {
      if (SteadyClock::now() >= deadline) return done();
      std::this_thread::sleep_for(10ms);
    }
    return true;
  }

  static constexpr int kPartitions = 4;
  std::shared_ptr<redis::RedisClient> client_;
  std::unique_ptr<Cache> cache_;
  std::unique_ptr<Publisher> publisher_;
  std::string topic_, dlq_, tag_;
  CounterMetrics metrics_;
};

TEST_F(ConsumerTest, EveryEventIsAppliedAtItsVersionAndItsOffsetCommitted) {
  std::map<std::string, uint64_t> expected;  // key -> highest version
  int n = 0;
  for (int c = 0; c < 20; ++c) {
    for (int p = 0; p < 5; ++p) {
      for (uint64_t v = 1; v <= 3; ++v) {
        const std::string community = tag_ + "-" + std::to_string(c);
        ASSERT_TRUE(publisher_
                        ->Publish(topic_, community,
                                  EventJson("e" + std::to_string(n++), community, std::to_string(p), v), {})
                        .ok());
        expected[PostKey(community, std::to_string(p))] = v;
      }
    }
  }
  ASSERT_TRUE(publisher_->Flush(10s).ok());
  const std::string group = testing::UniqueKafkaName("tiercache.test.group");
  {
    auto consumer = MakeConsumer(group, cache_.get());
    ASSERT_TRUE(consumer && consumer->Start().ok());
    ASSERT_TRUE(WaitFor([&] { return consumer->stats().events >= 300; }, 60s))
        << "applied " << consumer->stats().events << " of 300";
    const InvalidationConsumerStats s = consumer->stats();
    EXPECT_EQ(s.events, 300u);
    EXPECT_EQ(s.keys_applied, 300u) << "each event of a key arrives in version order (one partition per key)";
    EXPECT_EQ(s.dead_lettered, 0u);
    consumer->Stop();  // commits what is stored
  }
  for (const auto& [key, v] : expected) EXPECT_EQ(TombstoneVersion(key), static_cast<int64_t>(v)) << key;

  // The same group again: only what came after the committed offsets.
  for (int i = 0; i < 10; ++i) {
    const std::string community = tag_ + "-late";
    Publish(community, EventJson("late" + std::to_string(i), community, std::to_string(i), 1));
  }
  auto again = MakeConsumer(group, cache_.get());
  ASSERT_TRUE(again && again->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return again->stats().events >= 10; }, 60s));
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(again->stats().events, 10u) << "events before the committed offsets were delivered again";
}

// Records the consumer lag per partition as the consumer reports it.
class LagRecorder final : public Metrics {
 public:
  void Add(Counter, Tier, uint64_t) override {}
  void ObserveLoad(std::chrono::nanoseconds) override {}
  void SetBreakerOpen(bool) override {}
  void SetConsumerLag(std::string_view topic, int32_t partition, int64_t messages) override {
    std::lock_guard<std::mutex> l(mu);
    reports[{std::string(topic), partition}].push_back(messages);
  }
  std::vector<int64_t> of(const std::string& topic, int32_t partition) {
    std::lock_guard<std::mutex> l(mu);
    return reports[{topic, partition}];
  }
  std::mutex mu;
  std::map<std::pair<std::string, int32_t>, std::vector<int64_t>> reports;
};

TEST_F(ConsumerTest, ConsumerLagIsReportedPerPartitionAndReachesZero) {
  const std::string community = tag_ + "-lag";
  constexpr int kEvents = 200;
  int32_t partition = -1;
  for (int i = 0; i < kEvents; ++i) {
    Result<Delivery> d =
        publisher_->PublishAndWait(topic_, community, EventJson("lag" + std::to_string(i), community, "1", i + 1), 10s);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    partition = d->partition;
  }
  LagRecorder lag;
  InvalidationConsumerOptions o;
  o.metrics = &lag;
  o.brokers = testing::KafkaBootstrap();
  o.group_id = testing::UniqueKafkaName("tiercache.test.lag");
  o.topics = {topic_};
  o.dead_letter_topic = dlq_;
  o.session_timeout = 6000ms;
  o.max_batch = 20;  // several batches, so the backlog is seen shrinking
  Result<std::unique_ptr<InvalidationConsumer>> c =
      InvalidationConsumer::Create(o, cache_.get(), &MapPostEvent, publisher_.get());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE((*c)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return (*c)->stats().events >= kEvents; }, 60s));
  ASSERT_TRUE(WaitFor([&] {
    std::vector<int64_t> r = lag.of(topic_, partition);
    return !r.empty() && r.back() == 0;
  }, 10s)) << "the lag never came down to 0";
  (*c)->Stop();
  const std::vector<int64_t> r = lag.of(topic_, partition);
  EXPECT_GT(*std::max_element(r.begin(), r.end()), 0) << "a backlog of " << kEvents << " was never reported";
  EXPECT_LE(*std::max_element(r.begin(), r.end()), kEvents);
  EXPECT_TRUE(std::is_sorted(r.rbegin(), r.rend())) << "the lag of a backlog with no new events only shrinks";
}

TEST_F(ConsumerTest, ReorderedAndRedeliveredEventsNeverRegressAVersion) {
  const std::string community = tag_;
  const std::string key = PostKey(community, "7");
  uint64_t n = 0;
  for (uint64_t v : {3, 2, 3, 1}) Publish(community, EventJson("r" + std::to_string(n++), community, "7", v));
  auto consumer = MakeConsumer(testing::UniqueKafkaName("tiercache.test.group"), cache_.get());
  ASSERT_TRUE(consumer && consumer->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return consumer->stats().events >= 4; }, 60s));
  const InvalidationConsumerStats s = consumer->stats();
  EXPECT_EQ(TombstoneVersion(key), 3);
  EXPECT_EQ(s.keys_applied, 1u);
  EXPECT_EQ(s.events_ignored, 3u) << "v2, the second v3 and v1 must change nothing";
  const CounterMetrics::Snapshot m = metrics_.snapshot();
  EXPECT_EQ(m.events_of(EventOutcome::kApplied), 1u);
  EXPECT_EQ(m.events_of(EventOutcome::kIgnored), 3u);
  EXPECT_EQ(m.lags_of(InvalidationStage::kL2), 4u);
}

// The seed's consumer: GET version; DEL post; SET version. `between` runs
// after the GET, before the writes (where a concurrent applier can slip in).
void SeedApply(redis::RedisClient& client, const std::string& key, uint64_t version,
               const std::function<void()>& between) {
  const std::string version_key = key + ":version";
  Result<std::optional<std::string>> seen = client.Get(version_key);
  const uint64_t current = seen.ok() && seen->has_value() ? std::stoull(**seen) : 0;
  between();
  if (version <= current) return;
  (void)client.Del({key});
  redis::SetOptions set;
  (void)client.Set(version_key, std::to_string(version), set);
}

// Two appliers of one partition at once, as during a rebalance hand-over:
// applier A reads the state for v2, then applier B applies v2 and v3, then A
// finishes. Under the seed's GET-then-SET the key ends at v2 (regressed);
// under InvalidateMany's atomic script it ends at v3.
TEST_F(ConsumerTest, TwoAppliersOfOnePartitionAtOnceNeverRegressButTheSeedsWayDoes) {
  const std::string seed_key = PostKey(tag_, "seed");
  {
    std::mutex mu;
    std::condition_variable cv;
    bool a_read = false, b_done = false;
    std::thread a([&] {
      SeedApply(*client_, seed_key, 2, [&] {
        std::unique_lock<std::mutex> l(mu);
        a_read = true;
        cv.notify_all();
        cv.wait(l, [&] { return b_done; });
      });
    });
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return a_read; });
    }
    SeedApply(*client_, seed_key, 2, [] {});
    SeedApply(*client_, seed_key, 3, [] {});
    {
      std::lock_guard<std::mutex> l(mu);
      b_done = true;
      cv.notify_all();
    }
    a.join();
    Result<std::optional<std::string>> v = client_->Get(seed_key + ":version");
    ASSERT_TRUE(v.ok() && v->has_value());
    EXPECT_EQ(**v, "2") << "the seed's way did not regress under the forced interleaving (the test would prove nothing)";
  }
  // tiercache: the same two appliers, each with its own cache (two pods),
  // hammering the same events concurrently in opposite orders.
  auto pod_a = MakeCache();
  auto pod_b = MakeCache();
  ASSERT_TRUE(pod_a && pod_b);
  for (int round = 0; round < 50; ++round) {
    const std::string key = PostKey(tag_, "r" + std::to_string(round));
    std::vector<Cache::Invalidation> forward, backward;
    for (uint64_t v = 1; v <= 20; ++v) forward.push_back({key, v});
    backward.assign(forward.rbegin(), forward.rend());
    std::thread a([&] {
      for (const auto& inv : forward) pod_a->InvalidateMany({inv});
    });
    std::thread b([&] {
      for (const auto& inv : backward) pod_b->InvalidateMany({inv});
    });
    a.join();
    b.join();
    ASSERT_EQ(TombstoneVersion(key), 20) << "regressed in round " << round;
  }
}

// Two real consumers (two services' groups) applying one shuffled stream
// with duplicates at once: every key ends at its highest version.
TEST_F(ConsumerTest, TwoConsumersOverAShuffledStreamWithDuplicatesEndAtTheHighestVersions) {
  std::mt19937_64 rng(42);
  std::vector<std::pair<std::string, uint64_t>> events;  // community, version (post "1")
  std::map<std::string, uint64_t> highest;
  for (int c = 0; c < 30; ++c) {
    const std::string community = tag_ + "-" + std::to_string(c);
    for (uint64_t v = 1; v <= 8; ++v) {
      events.push_back({community, v});
      if (rng() % 3 == 0) events.push_back({community, v});  // a redelivery
    }
    highest[PostKey(community, "1")] = 8;
  }
  std::shuffle(events.begin(), events.end(), rng);
  int n = 0;
  for (const auto& [community, v] : events) {
    ASSERT_TRUE(publisher_->Publish(topic_, community, EventJson("s" + std::to_string(n++), community, "1", v), {}).ok());
  }
  ASSERT_TRUE(publisher_->Flush(10s).ok());
  auto other_cache = MakeCache();
  auto a = MakeConsumer(testing::UniqueKafkaName("tiercache.test.group-a"), cache_.get());
  auto b = MakeConsumer(testing::UniqueKafkaName("tiercache.test.group-b"), other_cache.get());
  ASSERT_TRUE(a && b && a->Start().ok() && b->Start().ok());
  const uint64_t total = events.size();
  ASSERT_TRUE(WaitFor([&] { return a->stats().events >= total && b->stats().events >= total; }, 60s));
  for (const auto& [key, v] : highest) EXPECT_EQ(TombstoneVersion(key), static_cast<int64_t>(v)) << key;
}

TEST_F(ConsumerTest, PoisonEventsAreDeadLetteredWithAReasonAndThePartitionKeepsFlowing) {
  const std::string community = tag_;
  const std::string key = PostKey(community, "9");
  std::vector<std::string> poison = {
      "not json at all",
      R"({"event_id":"p2","type":"post.updated","entity_id":"9","partition_key":")" + community +
          R"(","occurred_at":"2026-12-06T10:14:00Z"})",  // no version
      R"({"event_id":"p3","type":"post.updated","entity_id":"9","partition_key":")" + community +
          R"(","version":"abc","occurred_at":"2026-12-06T10:14:00Z"})",
      std::string(1 << 20, 'x'),  // 1 MiB
      EventJson("p5", community, "9", 5, "post.archived"),  // unknown type
  };
  Publish(community, EventJson("ok1", community, "9", 1));
  for (const std::string& p : poison) Publish(community, p);
  Publish(community, EventJson("ok2", community, "9", 2));

  testing::LogCapture log;
  auto consumer = MakeConsumer(testing::UniqueKafkaName("tiercache.test.group"), cache_.get());
  ASSERT_TRUE(consumer && consumer->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return consumer->stats().events >= 2; }, 60s)) << "the partition stopped at a poison event";
  const InvalidationConsumerStats s = consumer->stats();
  EXPECT_EQ(s.dead_lettered, poison.size());
  EXPECT_EQ(metrics_.snapshot().events_of(EventOutcome::kDeadLettered), poison.size());
  EXPECT_EQ(TombstoneVersion(key), 2);
  // One line a second at most (a stream of poison events must not flood the
  // log): the first is written, the others counted into the next line.
  EXPECT_GE(log.Count("WARNING event dead-lettered"), 1) << log.All();
  EXPECT_LE(log.Count("WARNING event dead-lettered"), static_cast<int>(poison.size())) << log.All();

  std::vector<testing::ConsumedMessage> dead = testing::ConsumeFrom(dlq_, 1, RD_KAFKA_OFFSET_BEGINNING, poison.size());
  ASSERT_EQ(dead.size(), poison.size());
  std::set<std::string> reasons;
  for (size_t i = 0; i < dead.size(); ++i) {
    EXPECT_EQ(dead[i].value, poison[i]) << "the original bytes";
    EXPECT_EQ(dead[i].key, community);
    std::string reason;
    for (const auto& [name, value] : dead[i].headers) {
      if (name == "tiercache-dead-letter-reason") reason = value;
    }
    EXPECT_FALSE(reason.empty()) << "dead letter " << i << " has no reason";
    reasons.insert(reason);
  }
  EXPECT_EQ(reasons.size(), poison.size()) << "each poison event has its own reason";
  for (const std::string& r : reasons) std::printf("dead-letter reason: %s\n", r.c_str());
}

}  // namespace
}  // namespace tiercache::kafka
