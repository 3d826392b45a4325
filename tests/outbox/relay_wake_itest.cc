// The outbox relay's wake-up on the local PostgreSQL and Kafka broker: a
// commit whose NOTIFY reaches the relay while it runs a statement of its own
// (libpq then reads the notification into its input buffer together with the
// statement's reply, and the socket has nothing new) is published at once,
// not a poll_interval later; and the extra round it causes ends in a wait,
// not a busy loop.
//
// Isolation: the outbox table is shared, so the test uses a topic of its own,
// counts only rows of that topic and deletes its unsent rows at the end.
#include <libpq-fe.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/kafka_test_util.h"
#include "common/test_env.h"
#include "tiercache/outbox.h"

namespace tiercache::outbox {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout,
               std::chrono::milliseconds step = 20ms) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() >= deadline) return done();
    std::this_thread::sleep_for(step);
  }
  return true;
}

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Conn = std::unique_ptr<PGconn, ConnDeleter>;
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

// A connection that does not print NOTICEs ("already exists, skipping").
Conn Connect() {
  Conn c(PQconnectdb(testing::PgConnString().c_str()));
  if (PQstatus(c.get()) == CONNECTION_OK) PQclear(PQexec(c.get(), "SET client_min_messages TO warning"));
  return c;
}
PgResult Exec(PGconn* c, const std::string& sql, const std::vector<std::string>& params = {}) {
  std::vector<const char*> values;
  for (const std::string& p : params) values.push_back(p.c_str());
  return PgResult(PQexecParams(c, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                               nullptr, 0));
}
bool Ok(const PgResult& r) {
  return r != nullptr && (PQresultStatus(r.get()) == PGRES_COMMAND_OK || PQresultStatus(r.get()) == PGRES_TUPLES_OK);
}
// The first column of the first row as a double, or -1.
double QueryDouble(PGconn* c, const std::string& sql, const std::vector<std::string>& params = {}) {
  PgResult r = Exec(c, sql, params);
  if (!Ok(r) || PQntuples(r.get()) < 1 || PQgetisnull(r.get(), 0, 0)) return -1;
  return std::stod(PQgetvalue(r.get(), 0, 0));
}

class RelayWakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("kafka", testing::KafkaPort());
    TIERCACHE_REQUIRE_SERVER("postgresql", testing::PgPort());
    conninfo_ = testing::PgConnString();
    ASSERT_TRUE(MigrateOutbox(conninfo_).ok());
    conn_ = Connect();
    ASSERT_EQ(PQstatus(conn_.get()), CONNECTION_OK);
    Result<OutboxWriter> w = OutboxWriter::Create(conn_.get());
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    writer_.emplace(*w);
    topic_ = testing::UniqueKafkaName("tiercache.test.wake");
    ASSERT_EQ(testing::CreateTopic(topic_, 3), "");
    app_name_ = testing::UniqueKafkaName("tiercache_wake_relay");
  }
  void TearDown() override {
    if (relay_) relay_->Stop();
    relay_.reset();
    Conn c = Connect();
    Exec(c.get(), "DELETE FROM tiercache_outbox WHERE topic = $1 AND sent_at IS NULL", {topic_});
  }

  Status Commit(PGconn* c, const std::string& key, const std::string& payload) {
    if (!Ok(Exec(c, "BEGIN"))) return Status::Unavailable(PQerrorMessage(c));
    Status s = writer_->Append(c, {{topic_, key, payload, {}}});
    if (!s.ok()) {
      Exec(c, "ROLLBACK");
      return s;
    }
    if (!Ok(Exec(c, "COMMIT"))) return Status::Internal(PQerrorMessage(c));
    return Status::Ok();
  }
  // Whether the committed row of `key` is marked sent: none of the topic's
  // unsent rows has that key (a query on the small unsent index; the sent
  // rows of the shared table may be many and have no index on topic).
  bool Sent(const std::string& key) {
    return QueryDouble(conn_.get(),
                       "SELECT count(*) FROM tiercache_outbox WHERE topic = $1 AND key = $2 AND sent_at IS NULL",
                       {topic_, key}) == 0;
  }
  // Seconds since the relay's session last started a statement (-1: no such
  // session).
  double RelayIdleSeconds() {
    return QueryDouble(conn_.get(),
                       "SELECT extract(epoch FROM clock_timestamp() - query_start)::float8 FROM pg_stat_activity "
                       "WHERE application_name = $1",
                       {app_name_});
  }

  std::string conninfo_, topic_, app_name_;
  Conn conn_;
  std::optional<OutboxWriter> writer_;
  std::unique_ptr<OutboxRelay> relay_;
};

// The relay publishes `first`; its after_publish hook (on the relay's thread,
// before Mark) commits `second` from another connection. The NOTIFY of that
// commit reaches the relay's session while it is idle or during Mark's
// UPDATE, and libpq reads it with Mark's reply: the socket is then quiet.
// Before the fix Wait() polled only the socket and slept the whole
// poll_interval (5 s here) with `second` waiting; now it sees the queued
// notification and runs one more round at once.
TEST_F(RelayWakeTest, ACommitNotifiedDuringARoundIsPublishedWithoutWaitingForThePollInterval) {
  Conn hook_conn = Connect();
  ASSERT_EQ(PQstatus(hook_conn.get()), CONNECTION_OK);
  std::atomic<bool> armed{false};
  std::atomic<bool> fired{false};
  std::atomic<int64_t> second_committed_ns{0}, second_acked_ns{0};
  std::string hook_error;  // written by the relay's thread before `fired`
  // The hook uses the locals above: stop the relay before they go, also
  // when an assertion returns early.
  struct StopRelay {
    std::unique_ptr<OutboxRelay>& relay;
    ~StopRelay() {
      if (relay) relay->Stop();
    }
  } stop_relay{relay_};

  OutboxRelayOptions o;
  // application_name identifies the relay's session in pg_stat_activity.
  o.conninfo = conninfo_ + " application_name=" + app_name_;
  o.publisher.brokers = testing::KafkaBootstrap();
  o.poll_interval = 5000ms;
  // Wait() also ends at the next claim: keep that far away too.
  o.claim_interval = 60000ms;
  o.after_publish = [&](size_t) {
    if (!armed.load()) return;
    if (fired.load()) {  // a later batch: the one with the second row, normally
      if (second_acked_ns.load() == 0) second_acked_ns.store(Clock::now().time_since_epoch().count());
      return;
    }
    Status s = Commit(hook_conn.get(), "wake-second", "second");
    if (!s.ok()) hook_error = s.ToString();
    second_committed_ns.store(Clock::now().time_since_epoch().count());
    fired.store(true);
  };
  Result<std::unique_ptr<OutboxRelay>> r = OutboxRelay::Create(std::move(o));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  relay_ = std::move(*r);
  ASSERT_TRUE(relay_->Start().ok());
  // It claims every free shard on its first round (the next try is a minute
  // away): another relay on this table would take our rows.
  ASSERT_TRUE(WaitUntil([&] { return relay_->stats().shards_owned == writer_->shards(); }, 10s))
      << "the relay owns " << relay_->stats().shards_owned << " of " << writer_->shards()
      << " shards: another relay holds some";
  std::this_thread::sleep_for(300ms);  // let it finish its first round and wait

  armed.store(true);
  const auto first_committed = Clock::now();
  ASSERT_TRUE(Commit(conn_.get(), "wake-first", "first").ok());
  ASSERT_TRUE(WaitUntil([&] { return Sent("wake-first"); }, 10s)) << "the first row is not published";
  const double first_ms = Ms(Clock::now() - first_committed);
  ASSERT_TRUE(WaitUntil([&] { return fired.load(); }, 5s)) << "after_publish was not called";
  ASSERT_EQ(hook_error, "");
  const Clock::time_point second_committed{Clock::duration(second_committed_ns.load())};

  // Poll finely; give it up to 10 s so that a late publication is measured.
  const bool sent = WaitUntil([&] { return Sent("wake-second"); }, 10s, 5ms);
  const double second_ms = Ms(Clock::now() - second_committed);
  const int64_t acked_ns = second_acked_ns.load();
  std::printf("wake: first row marked sent %.0f ms after its commit; second (committed in after_publish) %s %.0f ms "
              "after its commit (acknowledged by Kafka after %.0f ms; poll_interval 5000 ms)\n",
              first_ms, sent ? "marked sent" : "NOT marked sent", second_ms,
              acked_ns == 0 ? -1.0 : Ms(Clock::time_point(Clock::duration(acked_ns)) - second_committed));
  ASSERT_TRUE(sent) << "the second row is not published within 10 s";
  EXPECT_LT(second_ms, 1000) << "the NOTIFY read by libpq during the round was ignored: the relay slept the "
                                "poll_interval with a commit waiting";

  // The extra round ends in a wait: the relay's session stays idle (no
  // statement started) for most of the next 2 s. A relay looping on the
  // notification would start statements all the time.
  int busy = 0, samples = 0;
  double idle_max = 0;
  for (auto until = Clock::now() + 2s; Clock::now() < until; std::this_thread::sleep_for(100ms)) {
    const double idle = RelayIdleSeconds();
    ASSERT_GE(idle, 0) << "no session named " << app_name_ << " in pg_stat_activity";
    ++samples;
    if (idle < 0.1) ++busy;
    idle_max = std::max(idle_max, idle);
  }
  std::printf("wake: afterwards the relay's session started a statement <100 ms before %d of %d samples; longest "
              "idle %.2f s\n",
              busy, samples, idle_max);
  EXPECT_LT(busy, samples / 2) << "the relay runs rounds back to back (busy loop on a notification)";
  EXPECT_GT(idle_max, 1.0) << "the relay did not go back to waiting after the extra round";
}

}  // namespace
}  // namespace tiercache::outbox
