// The transactional outbox on the local PostgreSQL and Kafka broker:
//   * atomicity: a transaction that appends events and rolls back yields no
//     event on Kafka; one that commits yields exactly its events (same bytes,
//     key and headers; at least once, a duplicate carries the same event id);
//   * order: 4 writer threads bump rows of shared keys and append each
//     version's event in the same transaction, two relays run at once (and
//     one hands its shards over midway): per key, after dropping repeats of
//     an event id seen before, Kafka holds exactly versions 1, 2, ..., N;
//   * the mechanism behind it: an Append waits for an open transaction that
//     appended to the same shard (until it commits or rolls back), not for
//     one of another shard, so a shard's seq order is its commit order;
//   * a relay process killed (SIGKILL, from the `after_publish` hook) between
//     the broker's acknowledgement and the mark: the relay that takes over
//     publishes those events again, with the same ids, and a consumer that
//     applies by version ignores the copies; nothing is lost;
//   * the broker stopped (SIGSTOP) for 30 s during 200 writes/s: writes go on,
//     the outbox grows, then drains; 0 lost; commit -> publish lag printed
//     before, during and after the outage.
//
// Isolation: the outbox table is shared (with other tests and programs), so
// every test uses a topic of its own and counts only rows and events of that
// topic. Rows of the test table `outbox_test_posts` are named after the topic.
//
// The killed relay is a copy of this program: a static hook sees
// TIERCACHE_OUTBOX_RELAY_WORKER and registers the relay as GoogleTest's
// global set-up (so it runs once main() has started), which never returns.
#include <fcntl.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/kafka_test_util.h"
#include "common/test_env.h"
#include "tiercache/events.h"
#include "tiercache/outbox.h"

extern char** environ;

namespace tiercache::outbox {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;
using SysClock = std::chrono::system_clock;

constexpr int kPartitions = 3;
constexpr char kWorkerEnv[] = "TIERCACHE_OUTBOX_RELAY_WORKER";
constexpr char kKillTest[] = "OutboxTest.ARelayKilledBetweenPublishAndMarkIsFollowedByCopiesWithTheSameEventIds";

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

double Ms(std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Waits until `done()` (polled every `step`) or `timeout`; returns done().
bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout,
               std::chrono::milliseconds step = 20ms) {
  const auto deadline = SteadyClock::now() + timeout;
  while (!done()) {
    if (SteadyClock::now() >= deadline) return done();
    std::this_thread::sleep_for(step);
  }
  return true;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// ---- libpq ------------------------------------------------------------------------

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

std::string ErrorOf(PGconn* c, const PgResult& r) {
  std::string state;
  if (r != nullptr && PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) != nullptr) {
    state = std::string(" [") + PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) + "]";
  }
  return PQerrorMessage(c) + state;
}

// The first column of the first row as an integer, or -1.
int64_t QueryInt(PGconn* c, const std::string& sql, const std::vector<std::string>& params = {}) {
  PgResult r = Exec(c, sql, params);
  if (!Ok(r) || PQntuples(r.get()) < 1 || PQgetisnull(r.get(), 0, 0)) return -1;
  return std::stoll(PQgetvalue(r.get(), 0, 0));
}

// ---- events -----------------------------------------------------------------------

std::string Payload(const std::string& id, const std::string& key, const std::string& entity, uint64_t version,
                    SysClock::time_point at = SysClock::now()) {
  InvalidationEvent e;
  e.event_id = id;
  e.type = "post.updated";
  e.entity_id = entity;
  e.partition_key = key;
  e.version = version;
  e.occurred_at = at;
  return *EncodeEvent(e);
}

// One message read back from the topic.
struct Received {
  std::string id;  // its event_id ("" when the payload is not an event)
  uint64_t version = 0;
  std::string key, value;
  kafka::Headers headers;
  int32_t partition = -1;
  int64_t offset = -1;
  SysClock::time_point at;  // when this reader got it
};

// Reads every partition of a topic from the beginning on a thread of its own
// (plain librdkafka consumer, no group), keeping every message with the time
// it arrived.
class TopicReader {
 public:
  TopicReader(const std::string& topic, int partitions) {
    consumer_ = testing::MakeKafkaClient(RD_KAFKA_CONSUMER,
                                         {{"bootstrap.servers", testing::KafkaBootstrap()},
                                          {"group.id", testing::UniqueKafkaName("tiercache.test.outbox.reader")},
                                          {"enable.auto.commit", "false"},
                                          {"fetch.wait.max.ms", "5"},
                                          {"log_level", "0"}},
                                         &error_);
    if (!consumer_) return;
    rd_kafka_poll_set_consumer(consumer_.get());
    rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; ++p) {
      rd_kafka_topic_partition_list_add(parts, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    const rd_kafka_resp_err_t err = rd_kafka_assign(consumer_.get(), parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      error_ = rd_kafka_err2str(err);
      return;
    }
    thread_ = std::thread([this] { Run(); });
  }
  ~TopicReader() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    if (consumer_) rd_kafka_consumer_close(consumer_.get());
  }
  TopicReader(const TopicReader&) = delete;
  TopicReader& operator=(const TopicReader&) = delete;

  const std::string& error() const { return error_; }

  std::vector<Received> Messages() const {
    std::lock_guard<std::mutex> l(mu_);
    return messages_;
  }
  size_t DistinctIds() const {
    std::lock_guard<std::mutex> l(mu_);
    return ids_.size();
  }
  size_t Malformed() const {
    std::lock_guard<std::mutex> l(mu_);
    return malformed_;
  }

  // Waits at most `timeout` for every id of `ids`; returns those still missing.
  std::vector<std::string> WaitForIds(const std::vector<std::string>& ids, std::chrono::milliseconds timeout) const {
    std::vector<std::string> missing;
    WaitUntil(
        [&] {
          missing.clear();
          std::lock_guard<std::mutex> l(mu_);
          for (const std::string& id : ids) {
            if (ids_.count(id) == 0) missing.push_back(id);
          }
          return missing.empty();
        },
        timeout, 50ms);
    return missing;
  }

 private:
  void Run() {
    while (!stop_.load()) {
      rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer_.get(), 100);
      if (m == nullptr) continue;
      const SysClock::time_point at = SysClock::now();
      if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        Received r;
        r.at = at;
        r.partition = m->partition;
        r.offset = m->offset;
        if (m->key != nullptr) r.key.assign(static_cast<const char*>(m->key), m->key_len);
        if (m->payload != nullptr) r.value.assign(static_cast<const char*>(m->payload), m->len);
        rd_kafka_headers_t* hdrs = nullptr;
        if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
          const char* name = nullptr;
          const void* value = nullptr;
          size_t size = 0;
          for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
               ++i) {
            r.headers.emplace_back(name, value == nullptr ? "" : std::string(static_cast<const char*>(value), size));
          }
        }
        if (Result<InvalidationEvent> e = ParseEvent(r.value); e.ok()) {
          r.id = e->event_id;
          r.version = e->version;
        }
        std::lock_guard<std::mutex> l(mu_);
        if (r.id.empty()) {
          ++malformed_;
        } else {
          ids_.insert(r.id);
        }
        messages_.push_back(std::move(r));
      }
      rd_kafka_message_destroy(m);
    }
  }

  testing::KafkaPtr consumer_;
  std::string error_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<Received> messages_;  // GUARDED_BY(mu_), in arrival order (per partition: offset order)
  std::set<std::string> ids_;       // GUARDED_BY(mu_)
  size_t malformed_ = 0;            // GUARDED_BY(mu_)
};

// What a per-key walk over the topic found (CheckOrder).
struct OrderReport {
  size_t messages = 0;
  size_t distinct = 0;
  size_t duplicates = 0;          // messages whose event id came before
  size_t ignored_by_version = 0;  // duplicates a consumer applying by version ignores
  std::vector<std::string> problems;
};

// Walks the messages per key in Kafka order (one key lives in one partition,
// and the reader keeps each partition's offset order). A message whose event
// id was seen before is a duplicate: it must be byte-identical to the first
// copy (so it carries the same version) and a consumer that applies by
// version ignores it. Every other message must carry its key's next version
// (1, 2, 3, ...): commit order, none lost, none reordered. At the end every
// key of `last_versions` must have reached its version.
OrderReport CheckOrder(const std::vector<Received>& messages, const std::map<std::string, uint64_t>& last_versions) {
  OrderReport rep;
  std::map<std::string, const Received*> first;  // event id ->
  std::map<std::string, uint64_t> next_expected, applied;
  auto problem = [&rep](const std::string& p) {
    if (rep.problems.size() < 10) rep.problems.push_back(p);
  };
  for (const Received& m : messages) {
    ++rep.messages;
    if (m.id.empty()) {
      problem("a message that is not an event at " + std::to_string(m.partition) + "/" + std::to_string(m.offset));
      continue;
    }
    if (auto it = first.find(m.id); it != first.end()) {
      ++rep.duplicates;
      if (it->second->value != m.value || it->second->key != m.key) {
        problem("event " + m.id + " published twice with different contents");
      }
      if (m.version <= applied[m.key]) ++rep.ignored_by_version;
      continue;
    }
    first[m.id] = &m;
    ++rep.distinct;
    if (last_versions.count(m.key) == 0) {
      problem("event " + m.id + " has a key this test never wrote: '" + m.key + "'");
      continue;
    }
    uint64_t& expected = next_expected.try_emplace(m.key, 1).first->second;
    if (m.version != expected) {
      problem("key " + m.key + ": version " + std::to_string(m.version) + " (event " + m.id + ") where " +
              std::to_string(expected) + " was due (partition " + std::to_string(m.partition) + " offset " +
              std::to_string(m.offset) + ")");
    }
    expected = std::max(expected, m.version + 1);
    applied[m.key] = std::max(applied[m.key], m.version);
  }
  for (const auto& [key, last] : last_versions) {
    if (applied[key] != last) {
      problem("key " + key + " ends at version " + std::to_string(applied[key]) + ", committed up to " +
              std::to_string(last));
    }
  }
  return rep;
}

std::string Join(const std::vector<std::string>& v, size_t at_most = 5) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < at_most; ++i) out += (i ? "\n  " : "  ") + v[i];
  if (v.size() > at_most) out += "\n  ... (" + std::to_string(v.size()) + " in all)";
  return out;
}

// ---- the worker process: a relay that dies after its first acknowledged batch -------

int RelayWorker() {
  OutboxRelayOptions o;
  o.conninfo = testing::PgConnString();
  o.publisher.brokers = testing::KafkaBootstrap();
  o.publisher.client_id = "tiercache-outbox-test-killed-relay";
  o.batch = static_cast<size_t>(std::atoi(Env("OUTBOX_WORKER_BATCH").c_str()));
  o.claim_interval = 200ms;
  static std::atomic<bool> killed{false};
  o.after_publish = [](size_t rows) {
    if (!killed.exchange(true)) {
      std::fprintf(stderr, "relay worker %d: batch of %zu rows acknowledged, kill -9 before the mark\n", getpid(),
                   rows);
      ::raise(SIGKILL);
    }
  };
  Result<std::unique_ptr<OutboxRelay>> relay = OutboxRelay::Create(std::move(o));
  if (!relay.ok()) {
    std::fprintf(stderr, "relay worker: Create: %s\n", relay.status().ToString().c_str());
    return 2;
  }
  if (Status s = (*relay)->Start(); !s.ok()) {
    std::fprintf(stderr, "relay worker: Start: %s\n", s.ToString().c_str());
    return 3;
  }
  std::this_thread::sleep_for(60s);
  std::fprintf(stderr, "relay worker: no batch acknowledged in 60 s\n");
  return 5;
}

class RelayWorkerEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const int code = RelayWorker();
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(code);
  }
};

void ResumeStoppedBroker();

struct RelayWorkerHook {
  RelayWorkerHook() {
    if (!Env(kWorkerEnv).empty()) {
      ::testing::AddGlobalTestEnvironment(new RelayWorkerEnvironment);
    } else {
      std::atexit(ResumeStoppedBroker);  // never leave the broker stopped
    }
  }
} relay_worker_hook;

// Starts a copy of this program as a relay worker (its stdout /dev/null, its
// stderr ours); it dies with this process. -1 on failure.
pid_t SpawnRelayWorker(size_t batch) {
  std::vector<std::string> env = {std::string(kWorkerEnv) + "=1", "OUTBOX_WORKER_BATCH=" + std::to_string(batch)};
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string(*e).rfind("GTEST_", 0) != 0) env.emplace_back(*e);
  }
  std::vector<char*> envp;
  for (std::string& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe", filter = std::string("--gtest_filter=") + kKillTest;
  char* argv[] = {exe.data(), filter.data(), nullptr};
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {  // async-signal-safe calls only until execve
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
      ::dup2(null, STDIN_FILENO);
      ::dup2(null, STDOUT_FILENO);
    }
    ::execve(exe.c_str(), argv, envp.data());
    ::_exit(127);
  }
  return pid;
}

// ---- the fixture ------------------------------------------------------------------

// A broker this process stopped (SIGSTOP), resumed at exit at the latest.
std::atomic<int> g_stopped_broker{-1};
void ResumeStoppedBroker() {
  const int pid = g_stopped_broker.exchange(-1);
  if (pid > 0) ::kill(pid, SIGCONT);
}

class OutboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("kafka", testing::KafkaPort());
    TIERCACHE_REQUIRE_SERVER("postgresql", testing::PgPort());
    conninfo_ = testing::PgConnString();
    const Status migrated = MigrateOutbox(conninfo_);
    ASSERT_TRUE(migrated.ok()) << "MigrateOutbox: " << migrated.ToString();
    conn_ = Connect();
    ASSERT_EQ(PQstatus(conn_.get()), CONNECTION_OK) << PQerrorMessage(conn_.get());
    PgResult r = Exec(conn_.get(),
                      "CREATE TABLE IF NOT EXISTS outbox_test_posts (id text PRIMARY KEY, version bigint NOT NULL)");
    ASSERT_TRUE(Ok(r)) << ErrorOf(conn_.get(), r);
    Result<OutboxWriter> w = OutboxWriter::Create(conn_.get());
    ASSERT_TRUE(w.ok()) << "OutboxWriter::Create: " << w.status().ToString();
    writer_.emplace(*w);
    topic_ = testing::UniqueKafkaName("tiercache.test.outbox");
    ASSERT_EQ(testing::CreateTopic(topic_, kPartitions), "");
    reader_ = std::make_unique<TopicReader>(topic_, kPartitions);
    ASSERT_EQ(reader_->error(), "");
  }

  void TearDown() override {
    ResumeStoppedBroker();  // also when the test failed while the broker was stopped
    for (pid_t pid : workers_) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    for (auto& relay : relays_) relay->Stop();
    relays_.clear();
    reader_.reset();
  }

  OutboxRelayOptions RelayOptions() const {
    OutboxRelayOptions o;
    o.conninfo = conninfo_;
    o.publisher.brokers = testing::KafkaBootstrap();
    o.publisher.client_id = "tiercache-outbox-test-relay";
    o.claim_interval = 200ms;
    return o;
  }

  // Creates and starts a relay (kept until TearDown).
  OutboxRelay* StartRelay(OutboxRelayOptions o) {
    Result<std::unique_ptr<OutboxRelay>> relay = OutboxRelay::Create(std::move(o));
    EXPECT_TRUE(relay.ok()) << "OutboxRelay::Create: " << relay.status().ToString();
    if (!relay.ok()) return nullptr;
    const Status started = (*relay)->Start();
    EXPECT_TRUE(started.ok()) << "OutboxRelay::Start: " << started.ToString();
    if (!started.ok()) return nullptr;
    relays_.push_back(std::move(*relay));
    return relays_.back().get();
  }
  OutboxRelay* StartRelay() { return StartRelay(RelayOptions()); }

  OutboxEvent Event(const std::string& id, const std::string& key, uint64_t version,
                    kafka::Headers headers = {}) const {
    return OutboxEvent{topic_, key, Payload(id, key, "post-" + key, version), std::move(headers)};
  }

  // BEGIN, Append, then COMMIT or ROLLBACK, on `c`.
  Status Transact(PGconn* c, const std::vector<OutboxEvent>& events, bool commit) const {
    if (!Ok(Exec(c, "BEGIN"))) return Status::Unavailable(PQerrorMessage(c));
    Status s = writer_->Append(c, events);
    if (!s.ok()) {
      Exec(c, "ROLLBACK");
      return s;
    }
    PgResult r = Exec(c, commit ? "COMMIT" : "ROLLBACK");
    if (!Ok(r)) return Status::Internal(ErrorOf(c, r));
    return Status();
  }

  // Rows of this test's topic (unsent only, or all).
  int64_t Rows(bool unsent_only) {
    return QueryInt(conn_.get(),
                    std::string("SELECT count(*) FROM tiercache_outbox WHERE topic = $1") +
                        (unsent_only ? " AND sent_at IS NULL" : ""),
                    {topic_});
  }
  // Waits until no row of this test's topic is unsent; false at the deadline.
  bool WaitDrained(std::chrono::milliseconds timeout) {
    return WaitUntil([&] { return Rows(true) == 0; }, timeout, 100ms);
  }

  std::string conninfo_, topic_;
  Conn conn_;
  std::optional<OutboxWriter> writer_;
  std::unique_ptr<TopicReader> reader_;
  std::vector<std::unique_ptr<OutboxRelay>> relays_;
  std::vector<pid_t> workers_;
};

// ---- a. atomicity -----------------------------------------------------------------

TEST_F(OutboxTest, ARolledBackTransactionYieldsNoEventAndACommittedOneExactlyItsEvents) {
  ASSERT_NE(StartRelay(), nullptr);
  const std::vector<std::string> keys = {"c1", "c2", "c3"};
  std::vector<std::string> rolled_back_ids, committed_ids;
  std::map<std::string, OutboxEvent> committed;  // event id -> what was appended
  auto event = [&](const std::string& name, const std::string& key, uint64_t v, kafka::Headers h = {}) {
    return Event(topic_ + "/" + name, key, v, std::move(h));
  };
  auto id_of = [](const OutboxEvent& e) { return ParseEvent(e.payload)->event_id; };
  auto note = [&](const std::vector<OutboxEvent>& events, bool was_committed) {
    for (const OutboxEvent& e : events) {
      (was_committed ? committed_ids : rolled_back_ids).push_back(id_of(e));
      if (was_committed) committed[id_of(e)] = e;
    }
  };
  const std::string row = topic_ + "/row";

  // 1. A row change and three events, rolled back.
  ASSERT_TRUE(Ok(Exec(conn_.get(), "BEGIN")));
  ASSERT_TRUE(Ok(Exec(conn_.get(), "INSERT INTO outbox_test_posts (id, version) VALUES ($1, 1)", {row})));
  std::vector<OutboxEvent> batch;
  for (const std::string& k : keys) batch.push_back(event("rolled-back-" + k, k, 1));
  Status s = writer_->Append(conn_.get(), batch);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(Ok(Exec(conn_.get(), "ROLLBACK")));
  note(batch, false);

  // 2. An event appended, then a later statement fails: the transaction is
  //    aborted and rolled back.
  ASSERT_TRUE(Ok(Exec(conn_.get(), "BEGIN")));
  batch = {event("aborted-c1", "c1", 1)};
  s = writer_->Append(conn_.get(), batch);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(Ok(Exec(conn_.get(), "SELECT 1 / 0")));
  ASSERT_TRUE(Ok(Exec(conn_.get(), "ROLLBACK")));
  note(batch, false);

  // 3. Append outside a transaction is refused (it would commit on its own).
  batch = {event("no-transaction-c2", "c2", 1)};
  s = writer_->Append(conn_.get(), batch);
  EXPECT_TRUE(s.IsInvalidArgument()) << "Append without BEGIN: " << s.ToString();
  note(batch, false);

  // 4. A row change and four events (two on one key; headers, repeated and
  //    empty ones included), committed.
  ASSERT_TRUE(Ok(Exec(conn_.get(), "BEGIN")));
  ASSERT_TRUE(Ok(Exec(conn_.get(), "INSERT INTO outbox_test_posts (id, version) VALUES ($1, 1)", {row})));
  batch.clear();
  for (size_t i = 0; i < keys.size(); ++i) {
    batch.push_back(event("committed-" + keys[i], keys[i], 1,
                          {{"source", "outbox-itest"}, {"n", std::to_string(i)}, {"n", "repeat"}}));
  }
  batch.push_back(event("committed-c1-v2", "c1", 2, {{"empty", ""}}));
  s = writer_->Append(conn_.get(), batch);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(Ok(Exec(conn_.get(), "COMMIT")));
  note(batch, true);

  // 5. Rolled back after the committed one, on the same key.
  batch = {event("rolled-back-later-c1", "c1", 3)};
  s = Transact(conn_.get(), batch, /*commit=*/false);
  ASSERT_TRUE(s.ok()) << s.ToString();
  note(batch, false);

  // 6. One more committed event per key: once these are on Kafka, whatever
  //    came before them in their shards has been relayed too.
  batch.clear();
  for (const std::string& k : keys) batch.push_back(event("last-" + k, k, k == "c1" ? 3 : 2));
  s = Transact(conn_.get(), batch, /*commit=*/true);
  ASSERT_TRUE(s.ok()) << s.ToString();
  note(batch, true);

  const std::vector<std::string> missing = reader_->WaitForIds(committed_ids, 30s);
  ASSERT_TRUE(missing.empty()) << missing.size() << " committed events not on Kafka after 30 s:\n" << Join(missing);
  ASSERT_TRUE(WaitDrained(10s)) << Rows(true) << " rows of the topic still unsent 10 s after their events arrived";
  std::this_thread::sleep_for(500ms);  // anything else the relay sent would have arrived by now

  // The database: the rolled-back rows are gone, the committed ones are there.
  EXPECT_EQ(Rows(false), static_cast<int64_t>(committed_ids.size()));
  EXPECT_EQ(QueryInt(conn_.get(), "SELECT count(*) FROM outbox_test_posts WHERE id = $1", {row}), 1);

  // Kafka: exactly the committed events (the same bytes, key and headers),
  // each at least once, copies identical; none of the rolled-back ones.
  const std::vector<Received> got = reader_->Messages();
  std::map<std::string, int> copies;
  for (const Received& m : got) {
    ++copies[m.id];
    auto it = committed.find(m.id);
    if (it == committed.end()) {
      ADD_FAILURE() << "unexpected message on the topic: event '" << m.id << "' (" << m.value << ")";
      continue;
    }
    EXPECT_EQ(m.key, it->second.key) << m.id;
    EXPECT_EQ(m.value, it->second.payload) << m.id;
    EXPECT_EQ(m.headers, it->second.headers) << m.id;
  }
  for (const std::string& id : rolled_back_ids) EXPECT_EQ(copies.count(id), 0u) << "rolled-back event on Kafka: " << id;
  size_t duplicates = 0;
  for (const auto& [id, n] : copies) duplicates += static_cast<size_t>(n - 1);
  EXPECT_EQ(copies.size(), committed_ids.size());
  std::printf("atomicity: %zu committed events on Kafka (%zu duplicates), %zu rolled-back events absent\n",
              copies.size(), duplicates, rolled_back_ids.size());
  // Per key, in commit order.
  const OrderReport order = CheckOrder(got, {{"c1", 3}, {"c2", 2}, {"c3", 2}});
  EXPECT_TRUE(order.problems.empty()) << Join(order.problems);
}

// ---- b. order: two relays, concurrent writers on shared keys ----------------------

TEST_F(OutboxTest, TwoRelaysAndConcurrentWritersOnSharedKeysKeepEveryKeysCommitOrder) {
  constexpr int kWriters = 4, kTxnsPerWriter = 250, kKeys = 8;
  const int shards = writer_->shards();
  // Relay A takes at most half the shards, B the rest; A stops midway and B
  // takes A's shards over.
  OutboxRelayOptions oa = RelayOptions();
  oa.max_shards = std::max(1, shards / 2);
  oa.batch = 50;
  OutboxRelay* a = StartRelay(oa);
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return a->stats().shards_owned > 0; }, 10s))
      << "relay A owns no shard 10 s after Start (another relay holds them all?)";
  OutboxRelayOptions ob = RelayOptions();
  ob.batch = 50;
  OutboxRelay* b = StartRelay(ob);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return b->stats().shards_owned > 0; }, 10s))
      << "relay B owns no shard 10 s after Start; A owns " << a->stats().shards_owned;
  std::printf("order: %d shards; relay A owns %d, relay B %d\n", shards, a->stats().shards_owned,
              b->stats().shards_owned);

  // Keys in distinct shards spread over the whole shard space, so that both
  // relays own some of them.
  std::vector<std::string> keys;
  for (int k = 0, n = 0; k < kKeys; ++n) {
    const std::string key = "community-" + std::to_string(n);
    if (ShardOf(key, shards) * kKeys / shards == k) {
      keys.push_back(key);
      ++k;
    }
  }
  auto row_of = [&](const std::string& key) { return topic_ + "/" + key; };

  std::mutex mu;
  std::vector<std::string> committed_ids;  // GUARDED_BY(mu)
  std::vector<std::string> errors;         // GUARDED_BY(mu)
  std::atomic<int> committed_txns{0}, retries{0};
  auto write = [&](int w) {
    Conn c = Connect();
    if (PQstatus(c.get()) != CONNECTION_OK) {
      std::lock_guard<std::mutex> l(mu);
      errors.push_back(std::string("connect: ") + PQerrorMessage(c.get()));
      return;
    }
    std::mt19937 rng(static_cast<unsigned>(w * 7919 + 1));
    for (int t = 0; t < kTxnsPerWriter;) {
      // One key, or two (a quarter of the time), in key order.
      std::vector<int> ks = {static_cast<int>(rng() % kKeys)};
      if (rng() % 4 == 0) ks.push_back((ks[0] + 1 + static_cast<int>(rng() % (kKeys - 1))) % kKeys);
      std::sort(ks.begin(), ks.end());
      std::string error;
      std::vector<OutboxEvent> events;
      std::vector<std::string> ids;
      bool retry = false;
      if (!Ok(Exec(c.get(), "BEGIN"))) {
        error = PQerrorMessage(c.get());
      }
      for (int k : ks) {
        if (!error.empty()) break;
        PgResult r = Exec(c.get(),
                          "INSERT INTO outbox_test_posts (id, version) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE "
                          "SET version = outbox_test_posts.version + 1 RETURNING version",
                          {row_of(keys[k])});
        if (!Ok(r) || PQntuples(r.get()) != 1) {
          const char* state = r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
          retry = state != nullptr && (std::string(state) == "40P01" || std::string(state) == "40001");
          error = ErrorOf(c.get(), r);
          break;
        }
        const uint64_t version = std::stoull(PQgetvalue(r.get(), 0, 0));
        ids.push_back(topic_ + "/w" + std::to_string(w) + "-" + std::to_string(t) + "-" + keys[k]);
        events.push_back(Event(ids.back(), keys[k], version));
      }
      if (error.empty()) {
        if (rng() % 2 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 300));
        Status s = writer_->Append(c.get(), events);
        if (!s.ok()) error = "Append: " + s.ToString();
      }
      // Hold the transaction open after the append now and then, so that
      // others queue behind it and commits interleave.
      if (error.empty() && rng() % 5 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
      if (error.empty()) {
        PgResult r = Exec(c.get(), "COMMIT");
        if (!Ok(r)) error = "COMMIT: " + ErrorOf(c.get(), r);
      }
      if (!error.empty()) {
        Exec(c.get(), "ROLLBACK");
        if (retry) {
          ++retries;
          continue;
        }
        std::lock_guard<std::mutex> l(mu);
        errors.push_back(error);
        return;
      }
      {
        std::lock_guard<std::mutex> l(mu);
        committed_ids.insert(committed_ids.end(), ids.begin(), ids.end());
      }
      ++committed_txns;
      ++t;
    }
  };
  // Warm-up: version 1 of every key, until both relays have published some
  // (their keys' shards) and their producers are connected.
  for (const std::string& k : keys) {
    ASSERT_TRUE(Ok(Exec(conn_.get(), "BEGIN")));
    PgResult r = Exec(conn_.get(), "INSERT INTO outbox_test_posts (id, version) VALUES ($1, 1) RETURNING version",
                      {row_of(k)});
    ASSERT_TRUE(Ok(r)) << ErrorOf(conn_.get(), r);
    committed_ids.push_back(topic_ + "/warm-up-" + k);
    const Status s = writer_->Append(conn_.get(), {Event(committed_ids.back(), k, 1)});
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(Ok(Exec(conn_.get(), "COMMIT")));
  }
  const std::vector<std::string> warm_missing = reader_->WaitForIds(committed_ids, 30s);
  ASSERT_TRUE(warm_missing.empty()) << warm_missing.size() << " warm-up events not on Kafka after 30 s:\n"
                                    << Join(warm_missing);
  ASSERT_TRUE(a->stats().published > 0 && b->stats().published > 0)
      << "the warm-up did not go through both relays: A published " << a->stats().published << ", B "
      << b->stats().published << " (A owns " << a->stats().shards_owned << " shards, B "
      << b->stats().shards_owned << ")";

  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) writers.emplace_back(write, w);
  // Midway, relay A stops (releasing its shards) and B takes them over.
  const bool midway = WaitUntil([&] { return committed_txns.load() >= kWriters * kTxnsPerWriter / 2; }, 60s, 5ms);
  const uint64_t a_published_before_stop = a->stats().published;
  a->Stop();
  const OutboxRelayStats a_stats = a->stats();
  for (std::thread& t : writers) t.join();
  {
    std::lock_guard<std::mutex> l(mu);
    ASSERT_TRUE(errors.empty()) << "writers failed:\n" << Join(errors);
  }
  ASSERT_TRUE(midway) << "the writers did not reach half their transactions in 60 s";
  EXPECT_TRUE(WaitUntil([&] { return b->stats().shards_owned == shards; }, 10s))
      << "relay B owns " << b->stats().shards_owned << " of " << shards << " shards 10 s after relay A stopped";

  // The last committed version of every key.
  std::map<std::string, uint64_t> last_versions;
  for (const std::string& k : keys) {
    const int64_t v = QueryInt(conn_.get(), "SELECT version FROM outbox_test_posts WHERE id = $1", {row_of(k)});
    ASSERT_GT(v, 0) << "no row for key " << k;
    last_versions[k] = static_cast<uint64_t>(v);
  }
  const std::vector<std::string> missing = reader_->WaitForIds(committed_ids, 60s);
  ASSERT_TRUE(missing.empty()) << missing.size() << " of " << committed_ids.size()
                               << " committed events not on Kafka 60 s after the last commit:\n"
                               << Join(missing);
  EXPECT_TRUE(WaitDrained(10s)) << Rows(true) << " rows of the topic unsent after their events arrived";
  const OrderReport order = CheckOrder(reader_->Messages(), last_versions);
  const OutboxRelayStats b_stats = b->stats();
  std::printf(
      "order: %d transactions (%d retried after a deadlock), %zu events; on Kafka %zu messages, %zu distinct, "
      "%zu duplicates; relay A published %llu (%llu when told to stop midway), relay B %llu\n",
      committed_txns.load(), retries.load(), committed_ids.size(), order.messages, order.distinct, order.duplicates,
      static_cast<unsigned long long>(a_stats.published), static_cast<unsigned long long>(a_published_before_stop),
      static_cast<unsigned long long>(b_stats.published));
  EXPECT_TRUE(order.problems.empty()) << "per-key commit order broken:\n" << Join(order.problems, 10);
  EXPECT_EQ(order.distinct, committed_ids.size());
  EXPECT_EQ(reader_->Malformed(), 0u);
}

// What makes seq order commit order: an Append waits for every open
// transaction that appended to the same shard (until it commits or rolls
// back), and only then draws its seq; an Append to another shard does not wait.
TEST_F(OutboxTest, AnAppendWaitsForTheOpenTransactionsOfItsShardSoSeqOrderIsCommitOrder) {
  ASSERT_NE(StartRelay(), nullptr);
  const int shards = writer_->shards();
  const std::string key = "community-a";
  std::string other;  // a key of another shard
  for (int n = 0; other.empty(); ++n) {
    const std::string k = "community-" + std::to_string(n);
    if (ShardOf(k, shards) != ShardOf(key, shards)) other = k;
  }
  Conn second = Connect();
  ASSERT_EQ(PQstatus(second.get()), CONNECTION_OK) << PQerrorMessage(second.get());
  // Round 0: T1 (key v1) rolls back, T2 (key v1) commits. Round 1: T1 (key
  // v2) commits, T2 (key v3) commits. The other key gets v1, v2.
  auto id = [&](const char* what, int round) { return topic_ + "/" + what + "-" + std::to_string(round); };
  const uint64_t t1_version[2] = {1, 2}, t2_version[2] = {1, 3};
  for (int round = 0; round < 2; ++round) {
    const bool first_commits = round == 1;
    SCOPED_TRACE(first_commits ? "the first transaction commits" : "the first transaction rolls back");
    // T1 appends to the key's shard and stays open.
    ASSERT_TRUE(Ok(Exec(conn_.get(), "BEGIN")));
    Status s = writer_->Append(conn_.get(), {Event(id("t1", round), key, t1_version[round])});
    ASSERT_TRUE(s.ok()) << s.ToString();
    // An append to another shard goes through at once.
    s = Transact(second.get(), {Event(id("other", round), other, static_cast<uint64_t>(round + 1))}, /*commit=*/true);
    ASSERT_TRUE(s.ok()) << s.ToString();
    // T2 appends to T1's shard: it waits for T1.
    std::atomic<bool> appended{false};
    Status t2;
    ASSERT_TRUE(Ok(Exec(second.get(), "BEGIN")));
    std::thread t([&] {
      t2 = writer_->Append(second.get(), {Event(id("t2", round), key, t2_version[round])});
      appended.store(true);
    });
    std::this_thread::sleep_for(500ms);
    const bool waited = !appended.load();
    const bool ended = Ok(Exec(conn_.get(), first_commits ? "COMMIT" : "ROLLBACK"));
    const bool went_on = WaitUntil([&] { return appended.load(); }, 10s);
    if (!went_on) {  // so that the join below cannot hang: end T1, cancel T2's statement
      PQclear(PQexec(conn_.get(), "ROLLBACK"));
      if (PGcancel* cancel = PQgetCancel(second.get())) {
        char err[256];
        PQcancel(cancel, err, sizeof(err));
        PQfreeCancel(cancel);
      }
    }
    t.join();
    ASSERT_TRUE(ended) << PQerrorMessage(conn_.get());
    EXPECT_TRUE(waited) << "an Append did not wait for an open transaction that appended to its shard";
    EXPECT_TRUE(went_on) << "the waiting Append did not go on within 10 s of the other transaction's end";
    ASSERT_TRUE(t2.ok()) << t2.ToString();
    ASSERT_TRUE(Ok(Exec(second.get(), "COMMIT")));
  }
  const std::vector<std::string> ids = {id("t2", 0), id("t1", 1), id("t2", 1), id("other", 0), id("other", 1)};
  const std::vector<std::string> missing = reader_->WaitForIds(ids, 30s);
  ASSERT_TRUE(missing.empty()) << missing.size() << " committed events not on Kafka after 30 s:\n" << Join(missing);
  ASSERT_TRUE(WaitDrained(10s)) << Rows(true) << " rows of the topic still unsent";
  const OrderReport order = CheckOrder(reader_->Messages(), {{key, 3}, {other, 2}});
  EXPECT_TRUE(order.problems.empty()) << "not in commit order:\n" << Join(order.problems);
  EXPECT_EQ(order.distinct, ids.size()) << "the rolled-back event is on Kafka, or an event is missing";
}

// ---- c. kill -9 between publish and mark ------------------------------------------

TEST_F(OutboxTest, ARelayKilledBetweenPublishAndMarkIsFollowedByCopiesWithTheSameEventIds) {
  constexpr int kKeys = 8, kVersions = 40;
  constexpr size_t kBatch = 25;
  // The events, committed while no relay of this process runs.
  std::vector<std::string> ids;
  std::map<std::string, uint64_t> last_versions;
  for (int v = 1; v <= kVersions; ++v) {
    for (int k = 0; k < kKeys; ++k) {
      const std::string key = "community-" + std::to_string(k);
      ids.push_back(topic_ + "/" + key + "@" + std::to_string(v));
      const Status s = Transact(conn_.get(), {Event(ids.back(), key, static_cast<uint64_t>(v))}, /*commit=*/true);
      ASSERT_TRUE(s.ok()) << s.ToString();
      last_versions[key] = static_cast<uint64_t>(v);
    }
  }
  const int64_t foreign = QueryInt(conn_.get(), "SELECT count(*) FROM tiercache_outbox WHERE sent_at IS NULL AND topic <> $1",
                                   {topic_});
  if (foreign > 0) std::printf("kill: note: %lld unsent rows of other topics are in the outbox\n", (long long)foreign);

  // A relay in a process of its own, killed by its after_publish hook after
  // its first acknowledged batch.
  const pid_t worker = SpawnRelayWorker(kBatch);
  ASSERT_GT(worker, 0) << "could not start the relay worker";
  workers_.push_back(worker);
  int status = 0;
  const bool exited = WaitUntil([&] { return ::waitpid(worker, &status, WNOHANG) == worker; }, 60s, 10ms);
  ASSERT_TRUE(exited) << "the relay worker is still running 60 s after its start";
  workers_.clear();
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the relay worker did not die by SIGKILL from its after_publish hook: "
      << (WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status)) +
                                  " (2: Create failed, 3: Start failed, 5: no batch acknowledged, 127: exec failed)"
                            : "signal " + std::to_string(WTERMSIG(status)));

  // What the killed relay published (acknowledged by the broker) and what it
  // marked sent.
  ASSERT_TRUE(WaitUntil([&] { return reader_->DistinctIds() > 0; }, 15s))
      << "nothing of this test's topic on Kafka after the worker died: its acknowledged batch was not ours "
      << "(" << foreign << " unsent rows of other topics were in the outbox)";
  std::this_thread::sleep_for(1s);  // the rest of what it published
  const size_t published_by_killed = reader_->DistinctIds();
  const int64_t marked_by_killed = Rows(false) - Rows(true);
  std::printf("kill: the killed relay published %zu events and marked %lld sent\n", published_by_killed,
              static_cast<long long>(marked_by_killed));
  EXPECT_GT(static_cast<int64_t>(published_by_killed), marked_by_killed)
      << "the kill did not land between publish and mark for any event of this topic";

  // A normal relay takes over: everything arrives, the acknowledged but
  // unmarked events a second time.
  ASSERT_NE(StartRelay(), nullptr);
  const std::vector<std::string> missing = reader_->WaitForIds(ids, 60s);
  ASSERT_TRUE(missing.empty()) << missing.size() << " of " << ids.size()
                               << " committed events not on Kafka 60 s after the new relay started:\n"
                               << Join(missing);
  ASSERT_TRUE(WaitDrained(15s)) << Rows(true) << " rows of the topic still unsent";
  std::this_thread::sleep_for(500ms);
  const OrderReport order = CheckOrder(reader_->Messages(), last_versions);
  std::printf(
      "kill: %zu events committed; on Kafka %zu messages, %zu distinct, %zu duplicates (all with the id and "
      "version of their first copy: %s), %zu ignored by version\n",
      ids.size(), order.messages, order.distinct, order.duplicates, order.problems.empty() ? "yes" : "NO",
      order.ignored_by_version);
  EXPECT_TRUE(order.problems.empty()) << Join(order.problems, 10);
  EXPECT_EQ(order.distinct, ids.size());
  EXPECT_GE(static_cast<int64_t>(order.duplicates), static_cast<int64_t>(published_by_killed) - marked_by_killed)
      << "events acknowledged but never marked were not published again";
  EXPECT_EQ(order.ignored_by_version, order.duplicates) << "a copy carried a version newer than what was applied";
}

// ---- d. Kafka down for 30 s during 200 writes/s -----------------------------------

TEST_F(OutboxTest, KafkaStoppedFor30sDuring200WritesPerSecondLosesNothingAndTheOutboxDrains) {
  constexpr int kRate = 200, kKeys = 20;
  constexpr auto kBefore = 7s, kOutage = 30s, kAfter = 8s;
  const int broker = testing::KafkaBrokerPid();
  ASSERT_GT(broker, 0) << "no local Kafka broker process found";
  OutboxRelay* relay = StartRelay();
  ASSERT_NE(relay, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return relay->stats().shards_owned > 0; }, 10s)) << "the relay owns no shard after 10 s";
  // Warm-up: the relay's producer learns the new topic (librdkafka takes about
  // 1 s for a topic's first message), so "before" measures the steady state.
  const std::string warm_up = topic_ + "/warm-up";
  Status warmed = Transact(conn_.get(), {Event(warm_up, "warm-up", 1)}, /*commit=*/true);
  ASSERT_TRUE(warmed.ok()) << warmed.ToString();
  ASSERT_TRUE(reader_->WaitForIds({warm_up}, 30s).empty()) << "the warm-up event is not on Kafka after 30 s";

  struct Committed {
    std::string id;
    SysClock::time_point at;  // COMMIT returned
  };
  std::mutex mu;
  std::vector<Committed> committed;  // GUARDED_BY(mu)
  std::string write_error;           // GUARDED_BY(mu)
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    Conn c = Connect();
    if (PQstatus(c.get()) != CONNECTION_OK) {
      std::lock_guard<std::mutex> l(mu);
      write_error = PQerrorMessage(c.get());
      return;
    }
    const auto start = SteadyClock::now();
    for (int i = 0; !stop.load(); ++i) {
      std::this_thread::sleep_until(start + std::chrono::microseconds(1000000 / kRate) * i);
      const std::string key = "community-" + std::to_string(i % kKeys);
      const std::string id = topic_ + "/" + std::to_string(i);
      const Status s = Transact(c.get(), {Event(id, key, static_cast<uint64_t>(i / kKeys + 1))}, /*commit=*/true);
      const SysClock::time_point at = SysClock::now();
      std::lock_guard<std::mutex> l(mu);
      if (!s.ok()) {
        write_error = "transaction " + std::to_string(i) + ": " + s.ToString();
        return;
      }
      committed.push_back({id, at});
    }
  });
  auto committed_count = [&] {
    std::lock_guard<std::mutex> l(mu);
    return committed.size();
  };

  std::this_thread::sleep_for(kBefore);
  g_stopped_broker.store(broker);  // resumed by TearDown (or at exit) whatever happens
  if (::kill(broker, SIGSTOP) != 0) {
    stop.store(true);
    writer.join();
    FAIL() << "could not SIGSTOP the broker (pid " << broker << ")";
  }
  const SysClock::time_point stopped_at = SysClock::now();
  const size_t committed_at_stop = committed_count();
  int64_t max_depth = 0;
  while (SysClock::now() - stopped_at < kOutage) {
    max_depth = std::max(max_depth, Rows(true));
    std::this_thread::sleep_for(1s);
  }
  const Result<OutboxStatus> during = GetOutboxStatus(conninfo_);
  ResumeStoppedBroker();
  const SysClock::time_point resumed_at = SysClock::now();
  const size_t committed_in_outage = committed_count() - committed_at_stop;
  std::this_thread::sleep_for(kAfter);
  stop.store(true);
  writer.join();
  {
    std::lock_guard<std::mutex> l(mu);
    ASSERT_EQ(write_error, "") << "the writer failed";
  }
  ASSERT_TRUE(during.ok()) << "GetOutboxStatus: " << during.status().ToString();
  std::printf("outage: %zu commits during the 30 s outage (%.0f/s); this topic's outbox peaked at %lld unsent rows; "
              "GetOutboxStatus at the end of the outage: %lld unsent, oldest %lld ms\n",
              committed_in_outage, committed_in_outage / 30.0, static_cast<long long>(max_depth),
              static_cast<long long>(during->unsent), static_cast<long long>(during->oldest_unsent_age.count()));
  EXPECT_GE(committed_in_outage, static_cast<size_t>(kRate * 30 / 2)) << "writes stalled while Kafka was down";
  EXPECT_GE(max_depth, static_cast<int64_t>(kRate * 10)) << "the outbox did not grow while Kafka was down";
  EXPECT_GE(during->unsent, max_depth / 2);

  // Everything committed reaches Kafka, and the outbox drains.
  std::vector<Committed> all;
  {
    std::lock_guard<std::mutex> l(mu);
    all = committed;
  }
  std::vector<std::string> ids;
  for (const Committed& c : all) ids.push_back(c.id);
  const std::vector<std::string> missing = reader_->WaitForIds(ids, 60s);
  ASSERT_TRUE(missing.empty()) << missing.size() << " of " << ids.size()
                               << " committed events lost: not on Kafka 60 s after the broker was resumed:\n"
                               << Join(missing);
  ASSERT_TRUE(WaitDrained(15s)) << Rows(true) << " rows of the topic still unsent after all their events arrived";
  const Result<OutboxStatus> after = GetOutboxStatus(conninfo_);
  ASSERT_TRUE(after.ok()) << after.status().ToString();

  // Commit -> first receipt by a consumer, by when the commit happened.
  const std::vector<Received> got = reader_->Messages();
  std::map<std::string, SysClock::time_point> first_seen;
  for (const Received& m : got) first_seen.try_emplace(m.id, m.at);
  SysClock::time_point backlog_done = resumed_at;  // the last event committed before the resume arrived
  for (const Committed& c : all) {
    if (c.at < resumed_at) backlog_done = std::max(backlog_done, first_seen[c.id]);
  }
  std::vector<double> before, outage, after_resume, after_drain;
  for (const Committed& c : all) {
    const double lag = Ms(first_seen[c.id] - c.at);
    if (c.at < stopped_at - 1s) {  // the last second's publishes may have been caught by the stop
      before.push_back(lag);
    } else if (c.at < resumed_at) {
      outage.push_back(lag);
    } else if (c.at < backlog_done) {
      after_resume.push_back(lag);
    } else {
      after_drain.push_back(lag);
    }
  }
  auto print = [](const char* phase, const std::vector<double>& v) {
    std::printf("  %-62s %5zu events  p50 %9.1f ms  p99 %9.1f ms  max %9.1f ms\n", phase, v.size(),
                Percentile(v, 0.5), Percentile(v, 0.99), Percentile(v, 1.0));
  };
  std::printf("outage: commit -> publish lag (commit returned -> first received by a consumer):\n");
  print("before the outage", before);
  print("during (committed in the last 1 s before or while stopped)", outage);
  print("after the resume, while the backlog drained", after_resume);
  print("after the backlog drained", after_drain);
  SysClock::time_point last_seen = all.back().at;
  for (const auto& [id, at] : first_seen) last_seen = std::max(last_seen, at);
  std::printf("outage: the outage's backlog was on Kafka %.2f s after the resume; all %zu events %.0f ms after the "
              "last commit (%.1f s after the resume); GetOutboxStatus afterwards: %lld unsent (all topics)\n",
              std::chrono::duration<double>(backlog_done - resumed_at).count(), all.size(),
              Ms(last_seen - all.back().at), std::chrono::duration<double>(last_seen - resumed_at).count(),
              static_cast<long long>(after->unsent));
  const OutboxRelayStats st = relay->stats();
  std::printf("outage: relay published %llu, batches %llu, publish errors %llu, db errors %llu\n",
              static_cast<unsigned long long>(st.published), static_cast<unsigned long long>(st.batches),
              static_cast<unsigned long long>(st.publish_errors), static_cast<unsigned long long>(st.db_errors));

  std::map<std::string, uint64_t> last_versions = {{"warm-up", 1}};
  for (size_t i = 0; i < all.size(); ++i) {
    last_versions["community-" + std::to_string(i % kKeys)] = i / kKeys + 1;
  }
  const OrderReport order = CheckOrder(got, last_versions);
  std::printf("outage: on Kafka %zu messages, %zu distinct, %zu duplicates\n", order.messages, order.distinct,
              order.duplicates);
  EXPECT_TRUE(order.problems.empty()) << Join(order.problems, 10);
  EXPECT_EQ(order.distinct, all.size() + 1);  // and the warm-up event
}

}  // namespace
}  // namespace tiercache::outbox
