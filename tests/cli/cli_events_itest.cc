// `tiercache events tail` and `tiercache events publish` against the local
// Kafka broker: events published by hand and read back decoded, with their
// partition, offset and lag; malformed events refused before anything is sent
// and malformed messages marked while the tail goes on; following, --max,
// --last, SIGINT; a topic that does not exist and a broker that is not there.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
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

class CliEventsItest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("kafka", testing::KafkaPort());
    topic_ = testing::UniqueKafkaName("cli.events");
    ASSERT_EQ(testing::CreateTopic(topic_, 3), "");
  }

  CliRun Events(const std::string& command, std::vector<std::string> args) {
    args.insert(args.begin(), {"events", command, "--brokers", testing::KafkaBootstrap(), "--topic", topic_});
    return Cli(args);
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

}  // namespace
}  // namespace tiercache
