// Proves the local Kafka broker is real: librdkafka creates a topic, an
// idempotent producer writes 100 keyed messages, and a consumer in a consumer
// group reads all 100 in per-key order and commits its offsets.
#include <librdkafka/rdkafka.h>

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>

#include "common/test_env.h"

namespace tiercache::testing {
namespace {

using Clock = std::chrono::steady_clock;

struct KafkaDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
using Kafka = std::unique_ptr<rd_kafka_t, KafkaDeleter>;

// Builds a client; on failure returns null and puts the reason in *error.
Kafka MakeClient(rd_kafka_type_t type, const std::map<std::string, std::string>& props, std::string* error,
                 void (*dr_cb)(rd_kafka_t*, const rd_kafka_message_t*, void*) = nullptr) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (const auto& [k, v] : props) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
      *error = k + ": " + errstr;
      rd_kafka_conf_destroy(conf);
      return nullptr;
    }
  }
  if (dr_cb != nullptr) rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  rd_kafka_t* rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));  // takes conf on success
  if (rk == nullptr) {
    *error = errstr;
    rd_kafka_conf_destroy(conf);
  }
  return Kafka(rk);
}

std::string CreateTopic(rd_kafka_t* rk, const std::string& topic, int partitions) {
  char errstr[512];
  rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, errstr, sizeof(errstr));
  if (nt == nullptr) return errstr;
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &nt, 1, nullptr, q);
  std::string error = "no CreateTopics result within 30 s";
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000);
  if (ev != nullptr) {
    if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      error = rd_kafka_event_error_string(ev);
    } else {
      size_t n = 0;
      const rd_kafka_topic_result_t** res =
          rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
      error = n == 1 && rd_kafka_topic_result_error(res[0]) == RD_KAFKA_RESP_ERR_NO_ERROR
                  ? ""
                  : (n == 1 ? rd_kafka_err2str(rd_kafka_topic_result_error(res[0])) : "no topic result");
    }
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
  return error;
}

int g_delivery_errors = 0;  // touched only by the producer's poll/flush thread (this one)
void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) ++g_delivery_errors;
}

TEST(KafkaSmoke, KeyedMessagesAreConsumedInPerKeyOrderAndCommitted) {
  TIERCACHE_REQUIRE_SERVER("kafka", KafkaPort());
  std::mt19937_64 rng(std::random_device{}());
  const std::string suffix = std::to_string(rng() % 1000000000);
  const std::string topic = "tiercache.smoke." + suffix;
  constexpr int kKeys = 10;
  constexpr int kPerKey = 10;

  std::string error;
  Kafka producer = MakeClient(RD_KAFKA_PRODUCER,
                              {{"bootstrap.servers", KafkaBootstrap()},
                               {"enable.idempotence", "true"},
                               {"acks", "all"},
                               {"linger.ms", "5"},
                               {"message.timeout.ms", "30000"}},
                              &error, &OnDelivery);
  ASSERT_TRUE(producer) << error;
  ASSERT_EQ(CreateTopic(producer.get(), topic, 3), "");

  g_delivery_errors = 0;
  for (int seq = 0; seq < kPerKey; ++seq) {
    for (int k = 0; k < kKeys; ++k) {
      std::string key = "community:" + std::to_string(k);
      std::string value = key + "#" + std::to_string(seq);
      rd_kafka_resp_err_t err = rd_kafka_producev(
          producer.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
          RD_KAFKA_V_VALUE(value.data(), value.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
      ASSERT_EQ(err, RD_KAFKA_RESP_ERR_NO_ERROR) << rd_kafka_err2str(err);
    }
  }
  ASSERT_EQ(rd_kafka_flush(producer.get(), 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_EQ(g_delivery_errors, 0);

  Kafka consumer = MakeClient(RD_KAFKA_CONSUMER,
                              {{"bootstrap.servers", KafkaBootstrap()},
                               {"group.id", "tiercache.smoke.group." + suffix},
                               {"auto.offset.reset", "earliest"},
                               {"enable.auto.commit", "false"}},
                              &error);
  ASSERT_TRUE(consumer) << error;
  rd_kafka_poll_set_consumer(consumer.get());
  rd_kafka_topic_partition_list_t* sub = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(sub, topic.c_str(), RD_KAFKA_PARTITION_UA);
  ASSERT_EQ(rd_kafka_subscribe(consumer.get(), sub), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(sub);

  std::map<std::string, int> next_seq;
  int received = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (received < kKeys * kPerKey && Clock::now() < deadline) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer.get(), 500);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::string key(static_cast<const char*>(m->key), m->key_len);
      std::string value(static_cast<const char*>(m->payload), m->len);
      EXPECT_EQ(value, key + "#" + std::to_string(next_seq[key])) << "out of per-key order";
      ++next_seq[key];
      ++received;
    } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      ADD_FAILURE() << "consumer error: " << rd_kafka_message_errstr(m);
    }
    rd_kafka_message_destroy(m);
  }
  ASSERT_EQ(received, kKeys * kPerKey);
  for (const auto& [key, n] : next_seq) EXPECT_EQ(n, kPerKey) << key;

  // Commit synchronously, then read the committed offsets back from the broker.
  ASSERT_EQ(rd_kafka_commit(consumer.get(), nullptr, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_t* parts = nullptr;
  ASSERT_EQ(rd_kafka_assignment(consumer.get(), &parts), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_EQ(rd_kafka_committed(consumer.get(), parts, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  int64_t committed = 0;
  for (int i = 0; i < parts->cnt; ++i) committed += parts->elems[i].offset > 0 ? parts->elems[i].offset : 0;
  rd_kafka_topic_partition_list_destroy(parts);
  EXPECT_EQ(committed, kKeys * kPerKey);
  EXPECT_EQ(rd_kafka_consumer_close(consumer.get()), RD_KAFKA_RESP_ERR_NO_ERROR);
}

}  // namespace
}  // namespace tiercache::testing
