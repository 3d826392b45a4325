// The relay's remaining promises on the local PostgreSQL and Kafka: the
// standalone tiercache-outbox-relay program, the poll fallback when no
// NOTIFY comes, retention of sent rows, and the metrics it reports.
#include <libpq-fe.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/kafka_test_util.h"
#include "common/test_env.h"
#include "tiercache/outbox.h"

extern char** environ;

namespace tiercache::outbox {
namespace {

using namespace std::chrono_literals;

struct PgFree {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, PgFree>;

bool Sql(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok) ADD_FAILURE() << sql << ": " << PQresultErrorMessage(r);
  PQclear(r);
  return ok;
}

int64_t Count(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  const int64_t n = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? std::stoll(PQgetvalue(r, 0, 0)) : -1;
  PQclear(r);
  return n;
}

bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// Records what the relay reports.
class RelayMetrics final : public Metrics {
 public:
  void Add(Counter, Tier, uint64_t) override {}
  void ObserveLoad(std::chrono::nanoseconds) override {}
  void SetBreakerOpen(bool) override {}
  void SetOutboxDepth(int64_t unsent, std::chrono::milliseconds) override {
    depth_reports++;
    last_depth = unsent;
  }
  void ObserveOutboxPublishLag(std::chrono::nanoseconds lag) override {
    lags++;
    if (lag < 0ns || lag > 60s) odd_lags++;
  }
  std::atomic<int> depth_reports{0}, lags{0}, odd_lags{0};
  std::atomic<int64_t> last_depth{-1};
};

class RelayProgramTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("kafka", testing::KafkaPort());
    TIERCACHE_REQUIRE_SERVER("postgresql", testing::PgPort());
    conninfo_ = testing::PgConnString();
    ASSERT_TRUE(MigrateOutbox(conninfo_).ok());
    conn_.reset(PQconnectdb(conninfo_.c_str()));
    ASSERT_EQ(PQstatus(conn_.get()), CONNECTION_OK) << PQerrorMessage(conn_.get());
    topic_ = testing::UniqueKafkaName("tiercache.test.relayprog");
    ASSERT_EQ(testing::CreateTopic(topic_, 1), "");
  }
  void TearDown() override {
    if (child_ > 0) {
      ::kill(child_, SIGKILL);
      ::waitpid(child_, nullptr, 0);
    }
    if (conn_) Sql(conn_.get(), "DELETE FROM tiercache_outbox WHERE topic = '" + topic_ + "'");
  }

  // One committed event per payload, through the writer.
  void Commit(const std::vector<std::string>& payloads) {
    Result<OutboxWriter> w = OutboxWriter::Create(conn_.get());
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_TRUE(Sql(conn_.get(), "BEGIN"));
    std::vector<OutboxEvent> events;
    for (const std::string& p : payloads) events.push_back({topic_, "key", p, {}});
    ASSERT_TRUE(w->Append(conn_.get(), events).ok());
    ASSERT_TRUE(Sql(conn_.get(), "COMMIT"));
  }

  std::string conninfo_, topic_;
  Conn conn_;
  pid_t child_ = -1;
};

TEST_F(RelayProgramTest, TheStandaloneRelayPublishesAndStopsCleanlyOnSigterm) {
  std::vector<std::string> argv_s = {TIERCACHE_OUTBOX_RELAY_BIN, "--conninfo", conninfo_, "--brokers",
                                     testing::KafkaBootstrap(), "--migrate"};
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  ASSERT_EQ(posix_spawn(&child_, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  ASSERT_NO_FATAL_FAILURE(Commit({"from-the-program-1", "from-the-program-2"}));
  std::vector<testing::ConsumedMessage> got = testing::ConsumeFrom(topic_, 1, -2 /*beginning*/, 2, 30s);
  ASSERT_EQ(got.size(), 2u) << "the program did not publish the committed events";
  EXPECT_EQ(got[0].value, "from-the-program-1");
  EXPECT_EQ(got[1].value, "from-the-program-2");
  ASSERT_TRUE(WaitUntil([&] {
    return Count(conn_.get(), "SELECT count(*) FROM tiercache_outbox WHERE topic = '" + topic_ +
                                  "' AND sent_at IS NULL") == 0;
  }, 10s)) << "published but not marked sent";
  ASSERT_EQ(::kill(child_, SIGTERM), 0);
  int status = 0;
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::waitpid(child_, &status, 0), child_);
  child_ = -1;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 15s);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);

  // Bad arguments: exit code 2, one line on stderr.
  std::vector<std::string> bad_s = {TIERCACHE_OUTBOX_RELAY_BIN, "--batch", "0"};
  std::vector<char*> bad;
  for (auto& a : bad_s) bad.push_back(a.data());
  bad.push_back(nullptr);
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, bad[0], nullptr, nullptr, bad.data(), environ), 0);
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2);
}

TEST_F(RelayProgramTest, WithoutANotifyThePollPublishesWithinItsInterval) {
  OutboxRelayOptions o;
  o.conninfo = conninfo_;
  o.publisher.brokers = testing::KafkaBootstrap();
  o.poll_interval = 500ms;
  o.claim_interval = 60s;  // so that only the poll can wake the relay
  auto relay = OutboxRelay::Create(o);
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  ASSERT_TRUE((*relay)->Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return (*relay)->stats().shards_owned > 0; }, 10s));
  // A row written without Append (so without its NOTIFY), e.g. by another tool.
  ASSERT_TRUE(Sql(conn_.get(),
                  "INSERT INTO tiercache_outbox (shard, seq, topic, key, payload) VALUES (" +
                      std::to_string(ShardOf("key", static_cast<int>(Count(conn_.get(), "SELECT shards FROM tiercache_outbox_meta")))) +
                      ", nextval('tiercache_outbox_seq'), '" + topic_ + "', 'key', 'no-notify'::bytea)"));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<testing::ConsumedMessage> got = testing::ConsumeFrom(topic_, 1, -2, 1, 10s);
  ASSERT_EQ(got.size(), 1u) << "the poll fallback never published the row";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(got[0].value, "no-notify");
}

TEST_F(RelayProgramTest, RetentionDeletesOnlySentRowsOlderThanItAndTheRelayReportsItsMetrics) {
  const std::string shard = std::to_string(ShardOf("key", static_cast<int>(Count(conn_.get(), "SELECT shards FROM tiercache_outbox_meta"))));
  auto row = [&](const std::string& payload, const std::string& sent_at) {
    return "INSERT INTO tiercache_outbox (shard, seq, topic, key, payload, sent_at) VALUES (" + shard +
           ", nextval('tiercache_outbox_seq'), '" + topic_ + "', 'key', '" + payload + "'::bytea, " + sent_at + ")";
  };
  ASSERT_TRUE(Sql(conn_.get(), row("old-sent", "now() - interval '2 hours'")));
  ASSERT_TRUE(Sql(conn_.get(), row("recent-sent", "now() - interval '10 minutes'")));
  RelayMetrics metrics;
  OutboxRelayOptions o;
  o.conninfo = conninfo_;
  o.publisher.brokers = testing::KafkaBootstrap();
  o.retention = std::chrono::hours(1);
  o.retention_interval = 200ms;
  o.metrics = &metrics;
  auto relay = OutboxRelay::Create(o);
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  ASSERT_TRUE((*relay)->Start().ok());
  ASSERT_NO_FATAL_FAILURE(Commit({"unsent-then-published"}));
  const std::string of_topic = "SELECT count(*) FROM tiercache_outbox WHERE topic = '" + topic_ + "'";
  ASSERT_TRUE(WaitUntil([&] {
    return Count(conn_.get(), of_topic + " AND convert_from(payload, 'UTF8') = 'old-sent'") == 0;
  }, 15s)) << "the old sent row was not deleted";
  EXPECT_EQ(Count(conn_.get(), of_topic + " AND convert_from(payload, 'UTF8') = 'recent-sent'"), 1);
  ASSERT_TRUE(WaitUntil([&] { return metrics.lags.load() >= 1 && metrics.depth_reports.load() >= 1; }, 10s));
  EXPECT_EQ(Count(conn_.get(), of_topic + " AND convert_from(payload, 'UTF8') = 'unsent-then-published'"), 1)
      << "a just-published row is within retention";
  EXPECT_EQ(metrics.odd_lags.load(), 0) << "publish lags outside [0, 60 s]";
  EXPECT_GE((*relay)->stats().deleted, 1u);
  (*relay)->Stop();
}

}  // namespace
}  // namespace tiercache::outbox
