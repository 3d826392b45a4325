// Regression tests from an adversarial review: each comment tells the attack;
// the ones that found a defect failed before its fix.
// Adversary integration test (local broker): partitions added to the topic
// after the L1 follower started were never followed while L1 stayed trusted;
// now the follower notices them in its statistics, fences L1 and reads them.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "common/kafka_test_util.h"
#include "common/test_env.h"
#include "kafka/kafka_event_test_util.h"
#include "tiercache/events.h"
#include "tiercache/kafka/l1_follower.h"
#include "tiercache/l2_store.h"

namespace tiercache::kafka {
namespace {

using testing_events::EventFor;
using testing_events::WaitFor;
using testing_events::Version;

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

std::string AddPartitions(const std::string& topic, int total) {
  std::string err;
  auto admin = testing::MakeKafkaClient(RD_KAFKA_PRODUCER, {{"bootstrap.servers", testing::KafkaBootstrap()}}, &err);
  if (!admin) return err;
  char errstr[512];
  rd_kafka_NewPartitions_t* np = rd_kafka_NewPartitions_new(topic.c_str(), total, errstr, sizeof(errstr));
  rd_kafka_queue_t* q = rd_kafka_queue_new(admin.get());
  rd_kafka_CreatePartitions(admin.get(), &np, 1, nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 15000);
  std::string out = ev == nullptr ? "timeout" : "";
  if (ev != nullptr) {
    const rd_kafka_CreatePartitions_result_t* r = rd_kafka_event_CreatePartitions_result(ev);
    size_t n = 0;
    const rd_kafka_topic_result_t** tr = rd_kafka_CreatePartitions_result_topics(r, &n);
    if (rd_kafka_event_error(ev)) out = rd_kafka_event_error_string(ev);
    for (size_t i = 0; i < n; ++i) {
      if (rd_kafka_topic_result_error(tr[i])) out = rd_kafka_topic_result_error_string(tr[i]);
    }
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(q);
  rd_kafka_NewPartitions_destroy(np);
  return out;
}

TEST(AdversaryPartitionsITest, EventsOnAPartitionAddedAfterStartAreFollowed) {
  const std::string topic = testing::UniqueKafkaName("adv.posts");
  ASSERT_EQ(testing::CreateTopic(topic, 1, {}, testing::KafkaBootstrap()), "");
  CacheOptions co;
  co.l2 = MakeInMemoryL2Store();
  co.ttl_jitter = 0;
  co.early_refresh_beta = 0;
  co.l1.default_ttl = std::chrono::seconds(60);  // the L1 TTL is the only other bound
  auto cache = Cache::Create(co);
  ASSERT_TRUE(cache.ok());

  L1FollowerOptions o;
  o.brokers = testing::KafkaBootstrap();
  o.topics = {topic};
  o.max_lag = 300ms;
  o.check_interval = 50ms;
  std::atomic<int> dropped{0};
  o.on_dropped = [&](const InvalidationEvent& e, auto) {
    if (e.entity_id == "k") dropped.fetch_add(1);
  };
  auto f = L1Follower::Create(o, cache->get(), [](const InvalidationEvent& e) -> Result<InvalidationTargets> {
    return InvalidationTargets{{e.entity_id}, {}};
  });
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_TRUE((*f)->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return (*cache)->l1_trusted(); }, 20s));
  ASSERT_TRUE((*cache)->Get("k", Version(1)).ok());

  ASSERT_EQ(AddPartitions(topic, 2), "");
  std::this_thread::sleep_for(2s);
  // The relay publishes the invalidation of "k" to the new partition.
  std::string err;
  auto producer = testing::MakeKafkaClient(RD_KAFKA_PRODUCER, {{"bootstrap.servers", testing::KafkaBootstrap()}}, &err);
  ASSERT_TRUE(producer) << err;
  const std::string payload = EventFor("k", 2);
  ASSERT_EQ(rd_kafka_producev(producer.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(1),
                              RD_KAFKA_V_KEY("k", 1), RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
            RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_EQ(rd_kafka_flush(producer.get(), 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  const auto published = SteadyClock::now();

  std::this_thread::sleep_for(10s);
  Result<CachedValue> got = (*cache)->Get("k", Version(2));
  ASSERT_TRUE(got.ok());
  const long ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - published).count();
  std::printf("%ld ms after publication: trusted %d, dropped %d, served v%llu from %s\n", ms,
              static_cast<int>((*cache)->l1_trusted()), dropped.load(),
              static_cast<unsigned long long>(got->version()), got->source() == ValueSource::kL1 ? "L1" : "L2/loader");
  EXPECT_GT(dropped.load(), 0) << "the follower never read the new partition";
  EXPECT_FALSE((*cache)->l1_trusted() && dropped.load() == 0) << "L1 trusted although an event was never seen";
  EXPECT_FALSE(got->source() == ValueSource::kL1 && got->version() == 1u)
      << "a trusted L1 served a copy whose invalidation was published " << ms << " ms earlier (bound 400 ms)";
  (*f)->Stop();
}

}  // namespace
}  // namespace tiercache::kafka
