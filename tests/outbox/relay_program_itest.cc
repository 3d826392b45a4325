// The relay's remaining promises on the local PostgreSQL and Kafka: the
// standalone tiercache-outbox-relay program (and its --metrics-listen), Stop
// during a statement counting no database error, the poll fallback when no
// NOTIFY comes, retention of sent rows, and the metrics it reports,
// including the depth gauges while Kafka refuses every batch (librdkafka's
// mock cluster with its brokers down).
#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/http_get.h"
#include "common/kafka_test_util.h"
#include "common/test_env.h"
#include "tiercache/metrics.h"
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

#ifdef TIERCACHE_RELAY_WITH_PROMETHEUS
constexpr bool kRelayWithPrometheus = true;  // the program has --metrics-listen
#else
constexpr bool kRelayWithPrometheus = false;
#endif

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then
// closed): for a server the test starts next.
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

// The value of the series `name` (without labels) in a text exposition, or
// -1 when it is not there.
double SeriesValue(const std::string& text, const std::string& name) {
  const std::string head = name + " ";
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    if (text.compare(at, head.size(), head) == 0) return std::stod(text.substr(at + head.size(), end - at - head.size()));
    at = end + 1;
  }
  return -1;
}

// Runs the relay program with `args`; its stderr goes to `stderr_path`.
pid_t SpawnRelay(const std::vector<std::string>& args, const std::string& stderr_path) {
  std::vector<std::string> argv_s = {TIERCACHE_OUTBOX_RELAY_BIN};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

std::string ReadFile(const std::string& path) {
  std::string out;
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
    std::fclose(f);
  }
  return out;
}

// An outbox of the test's own: its tables in a fresh schema (search_path in
// the conninfo), so that the depth and age gauges, which cover the whole
// table, count only this test's rows whatever other tests left in the
// shared one. The sessions of conninfo() carry application_name = the
// schema's name, for pg_terminate_backend. Dropped at the end.
class OwnOutbox {
 public:
  explicit OwnOutbox(PGconn* admin) : admin_(admin) {
    std::random_device rd;
    schema_ = "tc_relay_test_" + std::to_string(::getpid()) + "_" + std::to_string(rd() % 1000000);
    conninfo_ = testing::PgConnString() + " options='-c search_path=" + schema_ + "' application_name=" + schema_;
  }
  ~OwnOutbox() {
    if (created_) Sql(admin_, "SET client_min_messages = warning; DROP SCHEMA IF EXISTS " + schema_ + " CASCADE");
  }
  // Creates the schema and migrates the outbox into it (`shards` shards).
  void Create(int shards) {
    ASSERT_TRUE(Sql(admin_, "CREATE SCHEMA " + schema_));
    created_ = true;
    const Status s = MigrateOutbox(conninfo_, shards);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  const std::string& conninfo() const { return conninfo_; }
  const std::string& schema() const { return schema_; }

 private:
  PGconn* admin_;
  std::string schema_, conninfo_;
  bool created_ = false;
};

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

  // One committed event per payload, through the writer (on `conn`, by
  // default the shared outbox's).
  void Commit(const std::vector<std::string>& payloads, PGconn* conn = nullptr) {
    if (conn == nullptr) conn = conn_.get();
    Result<OutboxWriter> w = OutboxWriter::Create(conn);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_TRUE(Sql(conn, "BEGIN"));
    std::vector<OutboxEvent> events;
    for (const std::string& p : payloads) events.push_back({topic_, "key", p, {}});
    ASSERT_TRUE(w->Append(conn, events).ok());
    ASSERT_TRUE(Sql(conn, "COMMIT"));
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


// The depth gauges are what an operator alerts on during a Kafka outage
// (docs/metrics.md): every round must refresh them from PostgreSQL, also
// one whose batches Kafka never acknowledged. And a PostgreSQL failure
// leaves them as they were (no bogus 0) and is counted.
TEST_F(RelayProgramTest, DepthGaugesAreRefreshedEveryRoundWhileKafkaRefusesEveryBatch) {
  OwnOutbox own(conn_.get());
  ASSERT_NO_FATAL_FAILURE(own.Create(/*shards=*/4));
  Conn writer(PQconnectdb(own.conninfo().c_str()));
  ASSERT_EQ(PQstatus(writer.get()), CONNECTION_OK) << PQerrorMessage(writer.get());
  testing::KafkaMockCluster kafka;
  ASSERT_TRUE(kafka.ok());
  ASSERT_EQ(kafka.SetDown(), RD_KAFKA_RESP_ERR_NO_ERROR);

  const auto before_commit = std::chrono::steady_clock::now();
  ASSERT_NO_FATAL_FAILURE(Commit({"unsendable-1", "unsendable-2", "unsendable-3"}, writer.get()));
  writer.reset();
  CounterMetrics metrics;
  OutboxRelayOptions o;
  o.conninfo = own.conninfo();
  o.publisher.brokers = kafka.bootstraps();
  o.publish_timeout = 300ms;  // each round: a batch refused within about 1.3 s
  o.backoff_min = 50ms;
  o.backoff_max = 200ms;
  o.poll_interval = 200ms;
  o.metrics = &metrics;
  auto relay = OutboxRelay::Create(o);
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  ASSERT_TRUE((*relay)->Start().ok());
  auto depth = [&] { return metrics.snapshot().outbox_unsent; };
  auto age = [&] { return metrics.snapshot().outbox_oldest_age; };
  auto state = [&] {
    const OutboxRelayStats st = (*relay)->stats();
    return "depth gauge " + std::to_string(depth()) + ", age gauge " + std::to_string(age().count()) +
           " ms; relay: shards " + std::to_string(st.shards_owned) + ", published " + std::to_string(st.published) +
           ", publish errors " + std::to_string(st.publish_errors) + ", db errors " + std::to_string(st.db_errors);
  };

  ASSERT_TRUE(WaitUntil([&] { return depth() == 3; }, 10s))
      << "the depth gauge was not set while every publish failed: " << state();
  const milliseconds first_age = age();
  // The age grows with the outage: refreshed round after round.
  ASSERT_TRUE(WaitUntil([&] { return age() >= std::max(first_age + 1000ms, milliseconds(1000)); }, 10s))
      << "the age gauge did not grow (first read " << first_age.count() << " ms): " << state();
  const milliseconds later_age = age();
  EXPECT_LE(later_age, std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - before_commit) + 1000ms)
      << "older than the rows";
  EXPECT_EQ(depth(), 3) << "depth is the rows appended";
  const OutboxRelayStats st = (*relay)->stats();
  EXPECT_GT(st.shards_owned, 0);
  EXPECT_EQ(st.published, 0u) << "Kafka was down";
  EXPECT_GE(st.publish_errors, 2u) << "several rounds failed on Kafka";
  EXPECT_EQ(st.db_errors, 0u);
  EXPECT_GE(metrics.snapshot().relay_errors_kafka, 2u);
  EXPECT_EQ(metrics.snapshot().relay_errors_database, 0u);

  // PostgreSQL fails under the relay (its session killed): counted as a
  // database error, the gauges keep their value, then refresh again once
  // it has reconnected.
  const milliseconds age_before_kill = age();
  ASSERT_GE(Count(conn_.get(), "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '" +
                                   own.schema() + "' AND pid <> pg_backend_pid()"),
            1);
  bool always_three = true;
  ASSERT_TRUE(WaitUntil([&] {
    always_three = always_three && depth() == 3;
    return metrics.snapshot().relay_errors_database >= 1 && (*relay)->stats().db_errors >= 1 &&
           age() >= age_before_kill + 1000ms;
  }, 15s)) << "after the relay's session was killed: " << state();
  EXPECT_TRUE(always_three) << "a database failure changed the depth gauge";
  EXPECT_EQ(depth(), 3);
  (*relay)->Stop();
}

// Stop while a statement of the relay waits (here for a lock another
// session holds) abandons it: that is no database error, and must not count
// as one (db_errors, the `database` relay-error counter: the documented
// alert). Once with the relay owning no shard, so the statement waiting is
// the depth query of its housekeeping, once owning them all, so it is the
// round's read.
TEST_F(RelayProgramTest, StoppingDuringAStatementCountsNoDatabaseError) {
  for (const bool owns_shards : {false, true}) {
    SCOPED_TRACE(owns_shards ? "the round's read waits" : "the depth query waits");
    OwnOutbox own(conn_.get());
    ASSERT_NO_FATAL_FAILURE(own.Create(/*shards=*/4));
    Conn holder(PQconnectdb(conninfo_.c_str()));
    ASSERT_EQ(PQstatus(holder.get()), CONNECTION_OK) << PQerrorMessage(holder.get());
    if (!owns_shards) {  // every shard taken (as another relay would): this relay owns none
      ASSERT_TRUE(Sql(holder.get(), "SELECT pg_try_advisory_lock(" + std::to_string(0x74630002) +
                                        ", s) FROM generate_series(0, 3) s"));
    }
    ASSERT_TRUE(Sql(holder.get(), "BEGIN"));
    ASSERT_TRUE(Sql(holder.get(), "LOCK TABLE " + own.schema() + ".tiercache_outbox IN ACCESS EXCLUSIVE MODE"));

    CounterMetrics metrics;
    OutboxRelayOptions o;
    o.conninfo = own.conninfo();
    o.publisher.brokers = testing::KafkaBootstrap();
    o.metrics = &metrics;
    auto relay = OutboxRelay::Create(o);
    ASSERT_TRUE(relay.ok()) << relay.status().ToString();
    ASSERT_TRUE((*relay)->Start().ok());
    const std::string waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + own.schema() +
                                "' AND wait_event_type = 'Lock' AND query LIKE '%FROM tiercache_outbox%'";
    ASSERT_TRUE(WaitUntil([&] { return Count(conn_.get(), waiting) == 1; }, 10s))
        << "the relay's statement never waited for the lock";
    if (!owns_shards) {
      EXPECT_EQ((*relay)->stats().shards_owned, 0);
    }
    const auto t0 = std::chrono::steady_clock::now();
    (*relay)->Stop();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s) << "Stop waited for the statement";
    EXPECT_EQ((*relay)->stats().db_errors, 0u);
    EXPECT_EQ(metrics.snapshot().relay_errors_database, 0u);
    Sql(holder.get(), "ROLLBACK");
    relay->reset();
  }
}

// tiercache-outbox-relay --metrics-listen: the program serves the outbox
// series of its relay (docs/metrics.md), refreshed while Kafka is down; a
// port already taken is one clear line and exit code 1. A build without
// the exporter refuses the flag (exit code 2).
TEST_F(RelayProgramTest, TheStandaloneRelayServesItsMetricsWithMetricsListen) {
  const std::string log = ::testing::TempDir() + "relay_metrics_" + std::to_string(::getpid()) + ".log";
  if (!kRelayWithPrometheus) {
    pid_t pid = SpawnRelay({"--conninfo", conninfo_, "--brokers", "127.0.0.1:1", "--metrics-listen", "127.0.0.1:0"}, log);
    ASSERT_GT(pid, 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << "status " << status;
    EXPECT_NE(ReadFile(log).find("no Prometheus exporter"), std::string::npos) << ReadFile(log);
    std::remove(log.c_str());
    GTEST_SKIP() << "built without the Prometheus exporter (TIERCACHE_WITH_PROMETHEUS=OFF): --metrics-listen refused";
  }
  OwnOutbox own(conn_.get());
  ASSERT_NO_FATAL_FAILURE(own.Create(/*shards=*/4));
  {
    Conn writer(PQconnectdb(own.conninfo().c_str()));
    ASSERT_EQ(PQstatus(writer.get()), CONNECTION_OK) << PQerrorMessage(writer.get());
    ASSERT_NO_FATAL_FAILURE(Commit({"waits-1", "waits-2", "waits-3", "waits-4"}, writer.get()));
  }
  testing::KafkaMockCluster kafka;  // its brokers down: every batch fails (after publish_timeout, 10 s)
  ASSERT_TRUE(kafka.ok());
  ASSERT_EQ(kafka.SetDown(), RD_KAFKA_RESP_ERR_NO_ERROR);
  const int port = FreePort();
  ASSERT_GT(port, 0);
  child_ = SpawnRelay({"--conninfo", own.conninfo(), "--brokers", kafka.bootstraps(), "--metrics-listen",
                       "127.0.0.1:" + std::to_string(port)},
                      log);
  ASSERT_GT(child_, 0);

  std::string body;
  auto scrape = [&] {
    Result<testing::HttpReply> got = testing::HttpGet(port, "/metrics");
    if (!got.ok() || got->status != 200) return false;
    body = got->body;
    return true;
  };
  ASSERT_TRUE(WaitUntil(scrape, 10s)) << "no /metrics on port " << port << "; stderr: " << ReadFile(log);
  EXPECT_GE(SeriesValue(body, "tiercache_outbox_unsent_rows"), 0) << body;
  EXPECT_GE(SeriesValue(body, "tiercache_outbox_oldest_unsent_age_seconds"), 0) << body;
  EXPECT_NE(body.find("tiercache_outbox_publish_lag_seconds_bucket"), std::string::npos) << body;
  EXPECT_NE(body.find("tiercache_outbox_relay_errors_total{cause=\"kafka\"}"), std::string::npos) << body;
  // The first round ends when Kafka has not acknowledged its batch (the
  // program's publish_timeout, 10 s); the gauges are refreshed then.
  ASSERT_TRUE(WaitUntil([&] { return scrape() && SeriesValue(body, "tiercache_outbox_unsent_rows") == 4; }, 40s))
      << "depth never read 4; last scrape:\n" << body << "\nstderr: " << ReadFile(log);
  EXPECT_GT(SeriesValue(body, "tiercache_outbox_oldest_unsent_age_seconds"), 0) << body;
  EXPECT_GE(SeriesValue(body, "tiercache_outbox_relay_errors_total{cause=\"kafka\"}"), 1) << body;
  EXPECT_EQ(SeriesValue(body, "tiercache_outbox_relay_errors_total{cause=\"database\"}"), 0) << body;

  // The same port again, taken by the first program: one line, exit code 1,
  // at once (before connecting anywhere).
  const std::string log2 = log + ".taken";
  const auto t0 = std::chrono::steady_clock::now();
  pid_t second = SpawnRelay({"--conninfo", own.conninfo(), "--brokers", kafka.bootstraps(), "--metrics-listen",
                             "127.0.0.1:" + std::to_string(port)},
                            log2);
  ASSERT_GT(second, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(second, &status, 0), second);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string err = ReadFile(log2);
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find("tiercache-outbox-relay: --metrics-listen 127.0.0.1:" + std::to_string(port) + ": "),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("UNAVAILABLE"), std::string::npos) << err;

  // A malformed address is a usage error (exit code 2).
  pid_t third = SpawnRelay({"--conninfo", own.conninfo(), "--brokers", kafka.bootstraps(), "--metrics-listen",
                            "127.0.0.1:notaport"},
                           log2);
  ASSERT_GT(third, 0);
  ASSERT_EQ(::waitpid(third, &status, 0), third);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << "status " << status << ": " << ReadFile(log2);

  ASSERT_EQ(::kill(child_, SIGTERM), 0);
  ASSERT_EQ(::waitpid(child_, &status, 0), child_);
  child_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  std::remove(log.c_str());
  std::remove(log2.c_str());
}

// --metrics-listen takes HOST:PORT, HOST an IPv4 address or a host name
// (the exporter's civetweb is built without IPv6), PORT in [0, 65535]:
// anything else is a usage error (exit code 2, at once, before anything
// starts), not "could not start" (1).
TEST_F(RelayProgramTest, AMalformedMetricsListenAddressIsAUsageError) {
  if (!kRelayWithPrometheus) GTEST_SKIP() << "built without the Prometheus exporter: the flag is refused (exit code 2)";
  const std::string log = ::testing::TempDir() + "relay_listen_" + std::to_string(::getpid()) + ".log";
  for (const std::string address : {"127.0.0.1:99999", "127.0.0.1:65536", "127.0.0.1:123456789012", ":9464",
                                     "127.0.0.1:", "127.0.0.1:-1", "9464", "[::1]:0", "[::1]:9464"}) {
    const auto t0 = std::chrono::steady_clock::now();
    const pid_t pid =
        SpawnRelay({"--conninfo", conninfo_, "--brokers", "127.0.0.1:1", "--metrics-listen", address}, log);
    ASSERT_GT(pid, 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    const std::string err = ReadFile(log);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << address << ": status " << status << ": " << err;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << address;
    EXPECT_NE(err.find("--metrics-listen"), std::string::npos) << address << ": " << err;
    if (address[0] == '[') {
      EXPECT_NE(err.find("IPv4"), std::string::npos) << address << ": " << err;
    }
  }
  std::remove(log.c_str());
}

}  // namespace
}  // namespace tiercache::outbox
