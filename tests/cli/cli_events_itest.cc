// `tiercache events tail` and `tiercache events publish` against the local
// Kafka broker: events published by hand and read back decoded, with their
// partition, offset and lag; malformed events refused before anything is sent
// and malformed messages marked while the tail goes on; following, --max,
// --last, SIGINT; a topic that does not exist and a broker that is not there.
// From an adversarial review: publish to a topic that does not exist (not
// created), --last after retention deleted the first records, partitions
// added while tailing, SIGINT while the metadata does not come, a timeout too
// short for the publisher's linger, null keys and tombstones.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/cli_runner.h"
#include "common/kafka_test_util.h"
#include "common/test_env.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
using testing::Cli;
using testing::CliProcess;
using testing::CliRun;
using testing::Contains;
using testing::Show;

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

int DeadPort() {
  for (int port = 9890; port < 9990; ++port) {
    if (!testing::PortAcceptsConnections(port)) return port;
  }
  return 1;
}

// A valid event's JSON, partition key 42, at `version`.
std::string EventJson(int version) {
  return "{\"event_id\":\"e" + std::to_string(version) +
         "\",\"type\":\"post.updated\",\"entity_id\":\"7\",\"partition_key\":\"42\",\"version\":" +
         std::to_string(version) + ",\"occurred_at\":\"2026-12-07T10:00:00.000Z\"}";
}

// Waits (at most 10 s) until the broker's metadata shows `topic` with
// `partitions` partitions: a topic just created may not be there yet, and
// the CLI would call it missing.
bool TopicVisible(const std::string& topic, int partitions) {
  std::string error;
  testing::KafkaPtr consumer = testing::MakeKafkaClient(
      RD_KAFKA_CONSUMER, {{"bootstrap.servers", testing::KafkaBootstrap()}, {"allow.auto.create.topics", "false"}},
      &error);
  if (!consumer) return false;
  rd_kafka_topic_t* rkt = rd_kafka_topic_new(consumer.get(), topic.c_str(), nullptr);
  bool seen = false;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!seen && std::chrono::steady_clock::now() < deadline) {
    const rd_kafka_metadata_t* md = nullptr;
    if (rd_kafka_metadata(consumer.get(), 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      seen = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
             md->topics[0].partition_cnt == partitions;
      rd_kafka_metadata_destroy(md);
    }
    if (!seen) std::this_thread::sleep_for(100ms);
  }
  rd_kafka_topic_destroy(rkt);
  return seen;
}

// One admin request on the local broker: `request` starts it on the queue,
// `check` reads its result. "" or the reason it failed.
std::string AdminCall(const std::function<void(rd_kafka_t*, rd_kafka_queue_t*)>& request,
                      const std::function<std::string(rd_kafka_event_t*)>& check) {
  std::string error;
  testing::KafkaPtr admin =
      testing::MakeKafkaClient(RD_KAFKA_PRODUCER, {{"bootstrap.servers", testing::KafkaBootstrap()}}, &error);
  if (!admin) return error;
  rd_kafka_queue_t* q = rd_kafka_queue_new(admin.get());
  request(admin.get(), q);
  error = "no admin result within 30 s";
  if (rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000); ev != nullptr) {
    error = rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR ? rd_kafka_event_error_string(ev) : check(ev);
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(q);
  return error;
}

// Deletes the records of `topic`/`partition` below `offset` (what retention does).
std::string DeleteRecordsBelow(const std::string& topic, int32_t partition, int64_t offset) {
  return AdminCall(
      [&](rd_kafka_t* rk, rd_kafka_queue_t* q) {
        rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(list, topic.c_str(), partition)->offset = offset;
        rd_kafka_DeleteRecords_t* del = rd_kafka_DeleteRecords_new(list);
        rd_kafka_topic_partition_list_destroy(list);
        rd_kafka_DeleteRecords(rk, &del, 1, nullptr, q);
        rd_kafka_DeleteRecords_destroy(del);
      },
      [](rd_kafka_event_t* ev) -> std::string {
        const rd_kafka_topic_partition_list_t* res =
            rd_kafka_DeleteRecords_result_offsets(rd_kafka_event_DeleteRecords_result(ev));
        if (res == nullptr || res->cnt != 1) return "no DeleteRecords result";
        return res->elems[0].err == RD_KAFKA_RESP_ERR_NO_ERROR ? "" : rd_kafka_err2str(res->elems[0].err);
      });
}

// Grows `topic` to `total` partitions.
std::string GrowPartitions(const std::string& topic, int total) {
  return AdminCall(
      [&](rd_kafka_t* rk, rd_kafka_queue_t* q) {
        char errstr[256];
        rd_kafka_NewPartitions_t* np = rd_kafka_NewPartitions_new(topic.c_str(), total, errstr, sizeof(errstr));
        rd_kafka_CreatePartitions(rk, &np, 1, nullptr, q);
        rd_kafka_NewPartitions_destroy(np);
      },
      [](rd_kafka_event_t* ev) -> std::string {
        size_t n = 0;
        const rd_kafka_topic_result_t** res =
            rd_kafka_CreatePartitions_result_topics(rd_kafka_event_CreatePartitions_result(ev), &n);
        if (n != 1) return "no CreatePartitions result";
        return rd_kafka_topic_result_error(res[0]) == RD_KAFKA_RESP_ERR_NO_ERROR
                   ? ""
                   : rd_kafka_err2str(rd_kafka_topic_result_error(res[0]));
      });
}

// Produces to an explicit partition; a null key or value is sent as null.
rd_kafka_resp_err_t Produce(rd_kafka_t* producer, const std::string& topic, int32_t partition,
                            const std::string* key, const std::string* value) {
  const void* key_data = key == nullptr ? nullptr : key->data();
  const size_t key_size = key == nullptr ? 0 : key->size();
  void* value_data = value == nullptr ? nullptr : const_cast<char*>(value->data());
  const size_t value_size = value == nullptr ? 0 : value->size();
  return rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(partition),
                           RD_KAFKA_V_KEY(key_data, key_size), RD_KAFKA_V_VALUE(value_data, value_size),
                           RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
}

// A TCP port that accepts connections (the kernel's backlog) and never
// answers: a broker that hangs.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd_, 64) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return;
    }
    port_ = ntohs(a.sin_port);
  }
  ~SilentListener() {
    if (fd_ >= 0) ::close(fd_);
  }
  SilentListener(const SilentListener&) = delete;
  SilentListener& operator=(const SilentListener&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

class CliEventsItest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("kafka", testing::KafkaPort());
    topic_ = testing::UniqueKafkaName("cli.events");
    ASSERT_EQ(testing::CreateTopic(topic_, 3), "");
    ASSERT_TRUE(TopicVisible(topic_, 3));
  }

  // A publish gets --timeout-ms 5000, not 1000: librdkafka 2.0.2's producer
  // may ask for a topic's metadata only at its once-a-second scan when the
  // topic comes up just after the connection, so a first message can take a
  // second on a healthy broker.
  CliRun Events(const std::string& command, std::vector<std::string> args) {
    args.insert(args.begin(), {"events", command, "--brokers", testing::KafkaBootstrap(), "--topic", topic_});
    return Cli(args, "", command == "publish" ? 5000 : 1000);
  }
  CliRun Publish(const std::string& entity, const std::string& key, uint64_t version,
                 const std::string& type = "post.updated") {
    return Events("publish", {"--type", type, "--entity-id", entity, "--partition-key", key, "--version",
                              std::to_string(version)});
  }
  // Every event on the topic now, one line each.
  std::vector<std::string> TailAll() {
    CliRun r = Events("tail", {"--from-beginning", "--exit-at-end"});
    EXPECT_EQ(r.code, 0) << Show(r);
    EXPECT_EQ(r.err, "") << Show(r);
    return Lines(r.out);
  }

  std::string topic_;
};

TEST_F(CliEventsItest, PublishedEventIsReadBackDecodedWithPartitionOffsetAndLag) {
  CliRun p = Publish("7", "42", 13);
  ASSERT_EQ(p.code, 0) << Show(p);
  ASSERT_TRUE(Contains(p.out, "published " + topic_ + "/")) << Show(p);
  ASSERT_TRUE(Contains(p.out, " key=42 ")) << Show(p);
  // The partition and offset it was given, as "<topic>/<p> offset=<o>".
  const std::string where = p.out.substr(10, p.out.find(" key=") - 10);

  std::vector<std::string> lines = TailAll();
  ASSERT_EQ(lines.size(), 1u);
  const std::string& line = lines[0];
  EXPECT_TRUE(line.starts_with(where + " lag=0 key=42 version=13 type=post.updated entity=7 event_id=")) << line;
  EXPECT_TRUE(Contains(line, " occurred_at=20")) << line;
  EXPECT_TRUE(Contains(line, " age_ms=")) << line;
  EXPECT_FALSE(Contains(line, "WARNING")) << line;

  // Two more on the same key: same partition, next offsets; the first of the
  // three now has two messages behind it.
  ASSERT_EQ(Publish("7", "42", 14).code, 0);
  ASSERT_EQ(Publish("7", "42", 15).code, 0);
  lines = TailAll();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_TRUE(lines[0].starts_with(where + " lag=2 ")) << lines[0];
  EXPECT_TRUE(Contains(lines[1], " lag=1 ") && Contains(lines[1], " version=14 ")) << lines[1];
  EXPECT_TRUE(Contains(lines[2], " lag=0 ") && Contains(lines[2], " version=15 ")) << lines[2];
}

TEST_F(CliEventsItest, MalformedEventIsRefusedAndNothingIsSent) {
  struct Case {
    std::vector<std::string> args;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {{"--type", "post", "--entity-id", "7", "--partition-key", "42", "--version", "3"}, "is not <entity>.<action>"},
      {{"--type", "post.updated", "--entity-id", "7", "--partition-key", "42", "--version", "0"}, "version"},
      {{"--type", "post.updated", "--partition-key", "42", "--version", "3"}, "entity_id"},
      {{"--type", "post.updated", "--entity-id", "7", "--partition-key", "42", "--version", "x"}, "version"},
      {{"--json", "{\"type\":\"post.updated\"}"}, "malformed event"},
      {{"--json", "not json"}, "malformed event"},
      {{"--json", "{}", "--version", "3"}, "excludes"},
  };
  for (const Case& c : cases) {
    CliRun r = Events("publish", c.args);
    EXPECT_EQ(r.code, 2) << Show(r);
    EXPECT_EQ(r.out, "") << Show(r);
    EXPECT_EQ(Lines(r.err).size(), 1u) << Show(r);
    EXPECT_TRUE(Contains(r.err, c.reason)) << c.reason << "\n" << Show(r);
  }
  CliRun bad_topic = Cli({"events", "publish", "--brokers", testing::KafkaBootstrap(), "--topic", "no such topic",
                          "--type", "post.updated", "--entity-id", "7", "--partition-key", "42", "--version", "3"});
  EXPECT_EQ(bad_topic.code, 2) << Show(bad_topic);
  EXPECT_TRUE(Contains(bad_topic.err, "is not a Kafka topic name")) << Show(bad_topic);

  EXPECT_TRUE(TailAll().empty()) << "a refused event reached the topic";
}

TEST_F(CliEventsItest, WholeEventAsJsonKeepsItsIdSoItCanBeRedelivered) {
  const std::string json =
      "{\"event_id\":\"redelivery-1\",\"type\":\"post.deleted\",\"entity_id\":\"9\",\"partition_key\":\"5\","
      "\"version\":4,\"occurred_at\":\"2026-12-07T10:00:00.000Z\"}";
  for (int i = 0; i < 2; ++i) {
    CliRun r = Events("publish", {"--json", json});
    ASSERT_EQ(r.code, 0) << Show(r);
  }
  std::vector<std::string> lines = TailAll();
  ASSERT_EQ(lines.size(), 2u);
  for (const std::string& line : lines) {
    EXPECT_TRUE(Contains(line, " key=5 version=4 type=post.deleted entity=9 event_id=redelivery-1 "
                               "occurred_at=2026-12-07T10:00:00.000Z ")) << line;
  }
}

TEST_F(CliEventsItest, TailMarksMalformedMessagesAndKeyMismatchesAndGoesOn) {
  std::string error;
  testing::KafkaPtr producer = testing::MakeKafkaClient(
      RD_KAFKA_PRODUCER, {{"bootstrap.servers", testing::KafkaBootstrap()}}, &error);
  ASSERT_TRUE(producer) << error;
  auto produce = [&](const std::string& key, const std::string& value) {
    ASSERT_EQ(rd_kafka_producev(producer.get(), RD_KAFKA_V_TOPIC(topic_.c_str()), RD_KAFKA_V_PARTITION(0),
                                RD_KAFKA_V_KEY(key.data(), key.size()),
                                RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
              RD_KAFKA_RESP_ERR_NO_ERROR);
  };
  produce("42", std::string("not an event\x01", 13));
  produce("41",
          "{\"event_id\":\"e1\",\"type\":\"post.updated\",\"entity_id\":\"7\",\"partition_key\":\"42\",\"version\":2,"
          "\"occurred_at\":\"2026-12-07T10:00:00.000Z\"}");
  ASSERT_EQ(rd_kafka_flush(producer.get(), 10000), RD_KAFKA_RESP_ERR_NO_ERROR);

  std::vector<std::string> lines = TailAll();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(lines[0].starts_with(topic_ + "/0 offset=0 lag=1 key=42 MALFORMED: malformed event: ")) << lines[0];
  EXPECT_TRUE(Contains(lines[0], "payload=not an event\\x01")) << lines[0];
  EXPECT_TRUE(lines[1].starts_with(topic_ + "/0 offset=1 lag=0 key=41 version=2 ")) << lines[1];
  EXPECT_TRUE(Contains(lines[1], "WARNING: the message key is not the event's partition key '42'")) << lines[1];
}

TEST_F(CliEventsItest, TailFollowsNewEventsUntilMax) {
  CliProcess tail({"events", "tail", "--brokers", testing::KafkaBootstrap(), "--topic", topic_, "--max", "2"});
  ASSERT_TRUE(tail.started());
  // The tail starts at the end: events published before it is positioned are
  // not shown, so publish until it has seen two (at most 30).
  int published = 0;
  while (!tail.Wait(300ms) && published < 30) {
    ASSERT_EQ(Publish("7", "42", ++published).code, 0);
  }
  ASSERT_TRUE(tail.Wait(10s)) << "tail --max 2 still running after " << published << " events";
  EXPECT_EQ(tail.code(), 0) << tail.err();
  const std::vector<std::string> lines = Lines(tail.out());
  ASSERT_EQ(lines.size(), 2u) << tail.out();
  // Consecutive versions on one key: the second line is the next event.
  const size_t at = lines[0].find(" version=") + 9;
  const uint64_t first = std::stoull(lines[0].substr(at));
  EXPECT_TRUE(Contains(lines[1], " version=" + std::to_string(first + 1) + " ")) << lines[1];
}

TEST_F(CliEventsItest, TailStopsCleanlyOnSigint) {
  CliProcess tail({"events", "tail", "--brokers", testing::KafkaBootstrap(), "--topic", topic_});
  ASSERT_TRUE(tail.started());
  EXPECT_FALSE(tail.Wait(1500ms)) << "tail exited on its own: " << tail.err();
  tail.Signal(SIGINT);
  ASSERT_TRUE(tail.Wait(3s)) << "tail did not stop on SIGINT";
  EXPECT_EQ(tail.code(), 0) << tail.err();
  EXPECT_EQ(tail.err(), "");
}

TEST_F(CliEventsItest, TailLastGivesTheLastEventsOfEachPartition) {
  for (uint64_t v = 1; v <= 4; ++v) ASSERT_EQ(Publish("7", "42", v).code, 0);
  CliRun r = Events("tail", {"--last", "2", "--exit-at-end"});
  ASSERT_EQ(r.code, 0) << Show(r);
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << Show(r);
  EXPECT_TRUE(Contains(lines[0], " version=3 ")) << lines[0];
  EXPECT_TRUE(Contains(lines[1], " version=4 ")) << lines[1];
}

TEST_F(CliEventsItest, ErrorPathsGiveOneLineAndTheirExitCode) {
  CliRun missing = Cli({"events", "tail", "--brokers", testing::KafkaBootstrap(), "--topic", topic_ + ".nosuch",
                        "--exit-at-end"});
  EXPECT_EQ(missing.code, 3) << Show(missing);
  EXPECT_TRUE(Contains(missing.err, "does not exist")) << Show(missing);
  EXPECT_EQ(Lines(missing.err).size(), 1u) << Show(missing);

  const std::string dead = "127.0.0.1:" + std::to_string(DeadPort());
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"events", "tail", "--brokers", dead, "--topic", topic_, "--exit-at-end"},
        std::vector<std::string>{"events", "publish", "--brokers", dead, "--topic", topic_, "--type",
                                 "post.updated", "--entity-id", "7", "--partition-key", "42", "--version", "3"}}) {
    const auto start = std::chrono::steady_clock::now();
    CliRun r = Cli(args);  // --timeout-ms 1000
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(r.code, 4) << Show(r);
    EXPECT_EQ(r.out, "") << Show(r);
    EXPECT_EQ(Lines(r.err).size(), 1u) << Show(r);
    EXPECT_LT(took, 6s) << Show(r);
  }

  CliRun both = Events("tail", {"--last", "2", "--from-beginning"});
  EXPECT_EQ(both.code, 2) << Show(both);
  CliRun no_topic = Cli({"events", "tail", "--brokers", testing::KafkaBootstrap()});
  EXPECT_EQ(no_topic.code, 2) << Show(no_topic);
  EXPECT_TRUE(Contains(no_topic.err, "--topic")) << Show(no_topic);
  CliRun bad_max = Events("tail", {"--max", "0"});
  EXPECT_EQ(bad_max.code, 2) << Show(bad_max);

  for (const char* command : {"tail", "publish"}) {
    CliRun help = Cli({"events", command, "--help"});
    EXPECT_EQ(help.code, 0) << Show(help);
    EXPECT_TRUE(Contains(help.out, "--topic")) << Show(help);
  }
}

TEST_F(CliEventsItest, PublishToATopicThatDoesNotExistFailsAndDoesNotCreateIt) {
  const std::string missing = topic_ + ".typo";
  CliRun r = Cli({"events", "publish", "--brokers", testing::KafkaBootstrap(), "--topic", missing, "--type",
                  "post.updated", "--entity-id", "7", "--partition-key", "42", "--version", "3"});
  EXPECT_EQ(r.code, 3) << Show(r);
  EXPECT_EQ(r.out, "") << Show(r);
  EXPECT_EQ(Lines(r.err).size(), 1u) << Show(r);
  EXPECT_TRUE(Contains(r.err, "topic '" + missing + "' does not exist")) << Show(r);
  // Not created by the attempt either (the broker auto-creates topics).
  CliRun tail = Cli({"events", "tail", "--brokers", testing::KafkaBootstrap(), "--topic", missing, "--exit-at-end"});
  EXPECT_EQ(tail.code, 3) << Show(tail);
}

TEST_F(CliEventsItest, TailLastStartsAtTheLogStartOnceRetentionDeletedTheFirstRecords) {
  const std::string topic = testing::UniqueKafkaName("cli.events.retained");
  ASSERT_EQ(testing::CreateTopic(topic, 1), "");
  ASSERT_TRUE(TopicVisible(topic, 1));
  std::string error;
  testing::KafkaPtr producer =
      testing::MakeKafkaClient(RD_KAFKA_PRODUCER, {{"bootstrap.servers", testing::KafkaBootstrap()}}, &error);
  ASSERT_TRUE(producer) << error;
  const std::string key = "42";
  for (int v = 1; v <= 10; ++v) {
    const std::string value = EventJson(v);
    ASSERT_EQ(Produce(producer.get(), topic, 0, &key, &value), RD_KAFKA_RESP_ERR_NO_ERROR);
  }
  ASSERT_EQ(rd_kafka_flush(producer.get(), 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  ASSERT_EQ(DeleteRecordsBelow(topic, 0, 6), "");

  CliRun r = Cli({"events", "tail", "--brokers", testing::KafkaBootstrap(), "--topic", topic, "--last", "100",
                  "--exit-at-end"});
  ASSERT_EQ(r.code, 0) << Show(r);
  EXPECT_EQ(r.err, "") << Show(r);
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 4u) << Show(r);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(lines[i].starts_with(topic + "/0 offset=" + std::to_string(6 + i) + " ")) << lines[i];
  }
}

TEST_F(CliEventsItest, TailReadsPartitionsAddedWhileItRuns) {
  const std::string topic = testing::UniqueKafkaName("cli.events.grown");
  ASSERT_EQ(testing::CreateTopic(topic, 1), "");
  ASSERT_TRUE(TopicVisible(topic, 1));
  CliProcess tail({"events", "tail", "--brokers", testing::KafkaBootstrap(), "--topic", topic});
  ASSERT_TRUE(tail.started());
  EXPECT_FALSE(tail.Wait(1500ms)) << "tail exited on its own: " << tail.err();
  ASSERT_EQ(GrowPartitions(topic, 3), "");

  std::string error;
  testing::KafkaPtr producer = testing::MakeKafkaClient(
      RD_KAFKA_PRODUCER,
      {{"bootstrap.servers", testing::KafkaBootstrap()}, {"topic.metadata.refresh.interval.ms", "1000"}}, &error);
  ASSERT_TRUE(producer) << error;
  // An event on each partition the tail has not shown yet, every 500 ms, until
  // it has shown all three (the producer learns of the new partitions too).
  std::set<int> seen;
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  for (int v = 1; seen.size() < 3 && std::chrono::steady_clock::now() < deadline; ++v) {
    const std::string key = "42", value = EventJson(v);
    for (int p = 0; p < 3; ++p) {
      if (seen.count(p) == 0) Produce(producer.get(), topic, p, &key, &value);
    }
    rd_kafka_flush(producer.get(), 500);
    std::this_thread::sleep_for(500ms);
    for (const std::string& line : Lines(tail.out())) {
      if (line.starts_with(topic + "/")) seen.insert(std::stoi(line.substr(topic.size() + 1)));
    }
  }
  EXPECT_EQ(seen, (std::set<int>{0, 1, 2})) << tail.out() << tail.err();
  tail.Signal(SIGINT);
  ASSERT_TRUE(tail.Wait(3s)) << "tail did not stop on SIGINT";
  EXPECT_EQ(tail.code(), 0) << tail.err();
  EXPECT_EQ(tail.err(), "");
}

TEST_F(CliEventsItest, TailStopsOnSigintWhileTheBrokerDoesNotAnswer) {
  SilentListener silent;
  ASSERT_NE(silent.port(), 0);
  CliProcess tail({"events", "tail", "--brokers", "127.0.0.1:" + std::to_string(silent.port()), "--topic", topic_},
                  20000);
  ASSERT_TRUE(tail.started());
  EXPECT_FALSE(tail.Wait(1s)) << "tail exited on its own: " << tail.err();
  tail.Signal(SIGINT);
  ASSERT_TRUE(tail.Wait(2s)) << "tail did not stop on SIGINT while waiting for the metadata";
  EXPECT_EQ(tail.code(), 0) << tail.err();
  EXPECT_EQ(tail.out(), "");
  EXPECT_EQ(tail.err(), "");
}

TEST_F(CliEventsItest, PublishWithATinyTimeoutGivesOneLineNotTheLibrarysInternals) {
  const std::string dead = "127.0.0.1:" + std::to_string(DeadPort());
  CliRun r = Cli({"events", "publish", "--brokers", dead, "--topic", topic_, "--type", "post.updated", "--entity-id",
                  "7", "--partition-key", "42", "--version", "3"},
                 "", 1);
  EXPECT_EQ(r.code, 4) << Show(r);
  EXPECT_EQ(r.out, "") << Show(r);
  EXPECT_EQ(Lines(r.err).size(), 1u) << Show(r);
  EXPECT_FALSE(Contains(r.err, "linger")) << Show(r);
}

TEST_F(CliEventsItest, TailShowsNullKeysAndTombstones) {
  std::string error;
  testing::KafkaPtr producer =
      testing::MakeKafkaClient(RD_KAFKA_PRODUCER, {{"bootstrap.servers", testing::KafkaBootstrap()}}, &error);
  ASSERT_TRUE(producer) << error;
  const std::string key = "42", value = EventJson(2);
  // One at a time: a retried first request must not land after the others.
  for (const auto& [k, v] : {std::pair<const std::string*, const std::string*>{nullptr, nullptr},
                             {&key, nullptr},
                             {nullptr, &value}}) {
    ASSERT_EQ(Produce(producer.get(), topic_, 0, k, v), RD_KAFKA_RESP_ERR_NO_ERROR);
    ASSERT_EQ(rd_kafka_flush(producer.get(), 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  }

  std::vector<std::string> lines = TailAll();
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], topic_ + "/0 offset=0 lag=2 key=(null) NULL-PAYLOAD (a tombstone: not an event)");
  EXPECT_EQ(lines[1], topic_ + "/0 offset=1 lag=1 key=42 NULL-PAYLOAD (a tombstone: not an event)");
  EXPECT_TRUE(lines[2].starts_with(topic_ + "/0 offset=2 lag=0 key=(null) version=2 ")) << lines[2];
  EXPECT_TRUE(Contains(lines[2], "WARNING: the message key is not the event's partition key '42'")) << lines[2];
}

}  // namespace
}  // namespace tiercache
