// Publisher against the local Kafka broker (make services-up): keyed messages
// come back in per-key order with their headers at the reported offsets;
// refused messages and unreachable brokers give error reports, never hangs.
#include "tiercache/kafka/publisher.h"

#include <arpa/inet.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/kafka_test_util.h"
#include "common/test_env.h"

namespace tiercache::kafka {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using tiercache::testing::KafkaBootstrap;
using tiercache::testing::KafkaPort;
using tiercache::testing::CreateTopic;
using Consumed = tiercache::testing::ConsumedMessage;

std::string UniqueTopic(const std::string& what) { return testing::UniqueKafkaName("tiercache.publisher." + what); }

std::vector<Consumed> Consume(const std::string& topic, int partitions, int64_t start, size_t count) {
  return testing::ConsumeFrom(topic, partitions, start, count);
}

long ElapsedMs(Clock::time_point start) {
  return static_cast<long>(std::chrono::duration_cast<milliseconds>(Clock::now() - start).count());
}

// A loopback port nobody listens on (bound, then released).
int UnusedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

PublisherOptions LocalOptions() {
  PublisherOptions o;
  o.brokers = KafkaBootstrap();
  o.delivery_timeout = milliseconds(30000);
  return o;
}

// Every report for message i, in arrival order.
struct ReportLog {
  std::mutex mu;
  std::vector<std::vector<Result<Delivery>>> reports;  // GUARDED_BY(mu)
  std::vector<long> arrival_ms;                        // GUARDED_BY(mu)
  Clock::time_point start = Clock::now();

  explicit ReportLog(size_t n) : reports(n), arrival_ms(n, -1) {}
  DeliveryCallback For(size_t i) {
    return [this, i](const Result<Delivery>& r) {
      std::lock_guard<std::mutex> lock(mu);
      reports[i].push_back(r);
      arrival_ms[i] = ElapsedMs(start);
    };
  }
  size_t Total() {
    std::lock_guard<std::mutex> lock(mu);
    size_t n = 0;
    for (const auto& r : reports) n += r.size();
    return n;
  }
  bool WaitTotal(size_t n, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Total() < n) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return true;
  }
};

TEST(PublisherIntegration, KeyedMessagesArriveOncePerKeyInOrderWithHeaders) {
  TIERCACHE_REQUIRE_SERVER("kafka", KafkaPort());
  const std::string topic = UniqueTopic("keyed");
  constexpr int kPartitions = 3;
  ASSERT_EQ(CreateTopic(topic, kPartitions), "");
  Result<std::unique_ptr<Publisher>> pub = Publisher::Create(LocalOptions());
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();

  constexpr size_t kKeys = 20;
  constexpr size_t kMessages = 1000;
  ReportLog log(kMessages);
  const auto start = Clock::now();
  for (size_t i = 0; i < kMessages; ++i) {
    const std::string key = "community:" + std::to_string(i % kKeys);
    const std::string seq = std::to_string(i / kKeys);
    Status s = (*pub)->Publish(topic, key, key + "#" + seq, log.For(i),
                               {{"seq", seq}, {"origin", "itest"}, {"seq", "again-" + seq}});
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  Status flushed = (*pub)->Flush(milliseconds(30000));
  ASSERT_TRUE(flushed.ok()) << flushed.ToString();
  RecordProperty("publish_and_flush_ms", std::to_string(ElapsedMs(start)));
  EXPECT_EQ((*pub)->outstanding(), 0u);

  std::map<std::pair<int32_t, int64_t>, size_t> by_position;  // where each message landed
  for (size_t i = 0; i < kMessages; ++i) {
    ASSERT_EQ(log.reports[i].size(), 1u) << "message " << i;
    const Result<Delivery>& r = log.reports[i][0];
    ASSERT_TRUE(r.ok()) << "message " << i << ": " << r.status().ToString();
    by_position[{r->partition, r->offset}] = i;
  }
  EXPECT_EQ(by_position.size(), kMessages) << "two messages reported at one position";

  std::vector<Consumed> got = Consume(topic, kPartitions, RD_KAFKA_OFFSET_BEGINNING, kMessages);
  ASSERT_EQ(got.size(), kMessages);
  std::map<std::string, size_t> next_seq;
  std::map<std::string, int32_t> partition_of;
  for (const Consumed& c : got) {
    const std::string seq = std::to_string(next_seq[c.key]++);
    EXPECT_EQ(c.value, c.key + "#" + seq) << "out of per-key order";
    EXPECT_EQ(c.headers, (Headers{{"seq", seq}, {"origin", "itest"}, {"seq", "again-" + seq}}));
    auto [it, inserted] = partition_of.emplace(c.key, c.partition);
    EXPECT_EQ(it->second, c.partition) << "key " << c.key << " spread over partitions";
    auto pos = by_position.find({c.partition, c.offset});
    ASSERT_NE(pos, by_position.end()) << "consumed at an offset no report named";
    EXPECT_EQ(pos->second % kKeys, std::stoul(c.key.substr(c.key.find(':') + 1)));
  }
  EXPECT_EQ(next_seq.size(), kKeys);
  for (const auto& [key, n] : next_seq) EXPECT_EQ(n, kMessages / kKeys) << key;
}

TEST(PublisherIntegration, PublishAndWaitReturnsWhereTheMessageIs) {
  TIERCACHE_REQUIRE_SERVER("kafka", KafkaPort());
  const std::string topic = UniqueTopic("wait");
  ASSERT_EQ(CreateTopic(topic, 3), "");
  Result<std::unique_ptr<Publisher>> pub = Publisher::Create(LocalOptions());
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  ASSERT_TRUE((*pub)->PublishAndWait(topic, "warm", "up", milliseconds(30000)).ok());

  const auto start = Clock::now();
  Result<Delivery> d = (*pub)->PublishAndWait(topic, "the-key", "the-payload", milliseconds(30000), {{"h", "v"}});
  RecordProperty("publish_and_wait_ms", std::to_string(ElapsedMs(start)));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_GE(d->partition, 0);
  ASSERT_GE(d->offset, 0);

  std::string error;
  testing::KafkaPtr consumer = testing::MakeKafkaClient(RD_KAFKA_CONSUMER,
                                 {{"bootstrap.servers", KafkaBootstrap()}, {"group.id", UniqueTopic("reader")}},
                                 &error);
  ASSERT_TRUE(consumer) << error;
  rd_kafka_poll_set_consumer(consumer.get());
  rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(parts, topic.c_str(), d->partition)->offset = d->offset;
  ASSERT_EQ(rd_kafka_assign(consumer.get(), parts), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(parts);
  rd_kafka_message_t* m = nullptr;
  for (auto deadline = Clock::now() + std::chrono::seconds(30); m == nullptr && Clock::now() < deadline;) {
    m = rd_kafka_consumer_poll(consumer.get(), 200);
    if (m != nullptr && m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_message_destroy(m);
      m = nullptr;
    }
  }
  ASSERT_NE(m, nullptr) << "nothing at partition " << d->partition << " offset " << d->offset;
  EXPECT_EQ(m->offset, d->offset);
  EXPECT_EQ(std::string(static_cast<const char*>(m->key), m->key_len), "the-key");
  EXPECT_EQ(std::string(static_cast<const char*>(m->payload), m->len), "the-payload");
  rd_kafka_message_destroy(m);
  rd_kafka_consumer_close(consumer.get());
}

// The broker has auto.create.topics.enable=true, so "a topic that cannot be
// created" is one whose name Kafka forbids, and a message above the topic's
// max.message.bytes is refused by the broker (the client allows it).
TEST(PublisherIntegration, RefusedMessagesGetAnErrorReportNotAHang) {
  TIERCACHE_REQUIRE_SERVER("kafka", KafkaPort());
  const std::string small_topic = UniqueTopic("small");
  ASSERT_EQ(CreateTopic(small_topic, 1, {{"max.message.bytes", "1024"}}), "");
  PublisherOptions o = LocalOptions();
  o.delivery_timeout = milliseconds(5000);
  Result<std::unique_ptr<Publisher>> pub = Publisher::Create(o);
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();

  auto start = Clock::now();
  Result<Delivery> too_large = (*pub)->PublishAndWait(small_topic, "k", std::string(8192, 'x'), milliseconds(15000));
  RecordProperty("too_large_ms", std::to_string(ElapsedMs(start)));
  EXPECT_TRUE(too_large.status().IsInvalidArgument()) << too_large.status().ToString();

  start = Clock::now();
  Result<Delivery> bad_topic = (*pub)->PublishAndWait("tiercache.bad!topic name", "k", "v", milliseconds(15000));
  const long bad_topic_ms = ElapsedMs(start);
  RecordProperty("bad_topic_ms", std::to_string(bad_topic_ms));
  RecordProperty("bad_topic_status", bad_topic.status().ToString());
  EXPECT_FALSE(bad_topic.ok());
  EXPECT_FALSE(bad_topic.status().IsDeadlineExceeded() && bad_topic_ms >= 15000) << "no report: a hang";
  EXPECT_LT(bad_topic_ms, 5000 + 3000);

  // The publisher still delivers afterwards.
  Result<Delivery> fine = (*pub)->PublishAndWait(small_topic, "k", "small", milliseconds(15000));
  EXPECT_TRUE(fine.ok()) << fine.status().ToString();
}

TEST(PublisherIntegration, UnreachableBrokersFailEveryMessageAndCloseFast) {
  const std::string brokers = "127.0.0.1:" + std::to_string(UnusedPort());
  PublisherOptions o;
  o.brokers = brokers;
  o.delivery_timeout = milliseconds(500);
  o.extra = {{"log_level", "0"}};  // refused connections are the point here
  Result<std::unique_ptr<Publisher>> pub = Publisher::Create(o);
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();

  constexpr size_t kMessages = 50;
  constexpr long kSlackMs = 2000;  // librdkafka scans for expired messages once a second
  ReportLog log(kMessages);
  for (size_t i = 0; i < kMessages; ++i) ASSERT_TRUE((*pub)->Publish("t", "k" + std::to_string(i), "v", log.For(i)).ok());
  ASSERT_TRUE(log.WaitTotal(kMessages, milliseconds(500 + kSlackMs)));
  long latest = 0;
  for (size_t i = 0; i < kMessages; ++i) {
    ASSERT_EQ(log.reports[i].size(), 1u) << i;
    EXPECT_TRUE(log.reports[i][0].status().IsUnavailable()) << log.reports[i][0].status().ToString();
    latest = std::max(latest, log.arrival_ms[i]);
  }
  RecordProperty("last_report_ms", std::to_string(latest));

  auto start = Clock::now();
  Result<Delivery> waited = (*pub)->PublishAndWait("t", "k", "v", milliseconds(10000));
  RecordProperty("publish_and_wait_ms", std::to_string(ElapsedMs(start)));
  EXPECT_FALSE(waited.ok());
  EXPECT_TRUE(waited.status().IsUnavailable()) << waited.status().ToString();
  EXPECT_LT(ElapsedMs(start), 500 + kSlackMs);

  // Destruction with nothing outstanding, then with messages outstanding.
  start = Clock::now();
  pub->reset();
  RecordProperty("idle_destroy_ms", std::to_string(ElapsedMs(start)));
  EXPECT_LT(ElapsedMs(start), 1000);

  o.delivery_timeout = milliseconds(60000);
  o.close_timeout = milliseconds(200);
  Result<std::unique_ptr<Publisher>> busy = Publisher::Create(o);
  ASSERT_TRUE(busy.ok()) << busy.status().ToString();
  ReportLog pending(kMessages);
  for (size_t i = 0; i < kMessages; ++i) ASSERT_TRUE((*busy)->Publish("t", "k", "v", pending.For(i)).ok());
  start = Clock::now();
  busy->reset();
  RecordProperty("busy_destroy_ms", std::to_string(ElapsedMs(start)));
  EXPECT_LT(ElapsedMs(start), 200 + 1500);
  for (size_t i = 0; i < kMessages; ++i) {
    ASSERT_EQ(pending.reports[i].size(), 1u) << i;
    EXPECT_TRUE(pending.reports[i][0].status().IsCancelled()) << pending.reports[i][0].status().ToString();
  }
}

}  // namespace
}  // namespace tiercache::kafka
