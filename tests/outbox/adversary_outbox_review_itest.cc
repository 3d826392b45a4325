// Adversarial review of the transactional outbox (include/tiercache/outbox.h)
// against the local PostgreSQL and Kafka. Each test forces one interleaving
// or input the contract claims to handle. Every test uses topics of its own
// and deletes its unsent rows at the end (poison rows must not block other
// relays sharing the table).
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
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

bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout,
               std::chrono::milliseconds step = 20ms) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() >= deadline) return done();
    std::this_thread::sleep_for(step);
  }
  return true;
}
double Secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Conn = std::unique_ptr<PGconn, ConnDeleter>;
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

Conn Connect(const std::string& info = testing::PgConnString()) {
  Conn c(PQconnectdb(info.c_str()));
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
int64_t QueryInt(PGconn* c, const std::string& sql, const std::vector<std::string>& params = {}) {
  PgResult r = Exec(c, sql, params);
  if (!Ok(r) || PQntuples(r.get()) < 1 || PQgetisnull(r.get(), 0, 0)) return -1;
  return std::stoll(PQgetvalue(r.get(), 0, 0));
}
[[maybe_unused]] std::string Sqlstate(const PgResult& r) {
  const char* s = r ? PQresultErrorField(r.get(), PG_DIAG_SQLSTATE) : nullptr;
  return s ? s : "";
}

struct Msg {
  std::string topic, key, value;
  bool has_key = false;
  kafka::Headers headers;
  int32_t partition = -1;
  int64_t offset = -1;
};

// Reads whole topics from the beginning on a thread of its own.
class Reader {
 public:
  Reader(const std::vector<std::string>& topics, int partitions) {
    consumer_ = testing::MakeKafkaClient(RD_KAFKA_CONSUMER,
                                         {{"bootstrap.servers", testing::KafkaBootstrap()},
                                          {"group.id", testing::UniqueKafkaName("tiercache.test.adv.reader")},
                                          {"enable.auto.commit", "false"},
                                          {"fetch.wait.max.ms", "5"},
                                          {"log_level", "0"}},
                                         &error_);
    if (!consumer_) return;
    rd_kafka_poll_set_consumer(consumer_.get());
    rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(partitions);
    for (const std::string& t : topics) {
      for (int p = 0; p < partitions; ++p) {
        rd_kafka_topic_partition_list_add(parts, t.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
      }
    }
    rd_kafka_assign(consumer_.get(), parts);
    rd_kafka_topic_partition_list_destroy(parts);
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        rd_kafka_message_t* m = rd_kafka_consumer_poll(consumer_.get(), 100);
        if (m == nullptr) continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
          Msg r;
          r.topic = rd_kafka_topic_name(m->rkt);
          r.partition = m->partition;
          r.offset = m->offset;
          r.has_key = m->key != nullptr;
          if (m->key != nullptr) r.key.assign(static_cast<const char*>(m->key), m->key_len);
          if (m->payload != nullptr) r.value.assign(static_cast<const char*>(m->payload), m->len);
          rd_kafka_headers_t* hdrs = nullptr;
          if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            const char* name = nullptr;
            const void* value = nullptr;
            size_t size = 0;
            for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
                 ++i) {
              r.headers.emplace_back(name, value ? std::string(static_cast<const char*>(value), size) : "");
            }
          }
          std::lock_guard<std::mutex> l(mu_);
          msgs_.push_back(std::move(r));
        }
        rd_kafka_message_destroy(m);
      }
    });
  }
  ~Reader() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    if (consumer_) rd_kafka_consumer_close(consumer_.get());
  }
  const std::string& error() const { return error_; }
  std::vector<Msg> Messages() const {
    std::lock_guard<std::mutex> l(mu_);
    return msgs_;
  }
  size_t CountValue(const std::string& v) const {
    std::lock_guard<std::mutex> l(mu_);
    return static_cast<size_t>(std::count_if(msgs_.begin(), msgs_.end(), [&](const Msg& m) { return m.value == v; }));
  }
  bool WaitForValues(const std::vector<std::string>& values, std::chrono::milliseconds timeout) const {
    return WaitUntil(
        [&] {
          for (const std::string& v : values) {
            if (CountValue(v) == 0) return false;
          }
          return true;
        },
        timeout, 50ms);
  }

 private:
  testing::KafkaPtr consumer_;
  std::string error_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<Msg> msgs_;
};

std::atomic<int> g_stopped_broker{-1};
void ResumeBroker() {
  const int pid = g_stopped_broker.exchange(-1);
  if (pid > 0) ::kill(pid, SIGCONT);
}
struct ResumeAtExit {
  ResumeAtExit() { std::atexit(ResumeBroker); }
} resume_at_exit;

class AdversaryOutboxTest : public ::testing::Test {
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
    topic_ = NewTopic({});
  }
  void TearDown() override {
    ResumeBroker();
    for (auto& r : relays_) r->Stop();
    relays_.clear();
    reader_.reset();
    // Never leave rows of this test behind for other relays (poison rows!).
    Conn c = Connect();
    for (const std::string& t : topics_) {
      Exec(c.get(), "DELETE FROM tiercache_outbox WHERE topic = $1 AND sent_at IS NULL", {t});
    }
    for (const std::string& sql : cleanup_sql_) Exec(c.get(), sql);
  }

  std::string NewTopic(const std::map<std::string, std::string>& config) {
    std::string t = testing::UniqueKafkaName("tiercache.test.adv");
    EXPECT_EQ(testing::CreateTopic(t, 3, config), "");
    topics_.push_back(t);
    return t;
  }
  void StartReader() {
    reader_ = std::make_unique<Reader>(topics_, 3);
    ASSERT_EQ(reader_->error(), "");
  }

  OutboxRelayOptions Options() const {
    OutboxRelayOptions o;
    o.conninfo = conninfo_;
    o.publisher.brokers = testing::KafkaBootstrap();
    o.claim_interval = 200ms;
    return o;
  }
  OutboxRelay* StartRelay(OutboxRelayOptions o) {
    auto r = OutboxRelay::Create(std::move(o));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return nullptr;
    EXPECT_TRUE((*r)->Start().ok());
    relays_.push_back(std::move(*r));
    return relays_.back().get();
  }
  // Waits until `relay` owns every shard (no other relay runs on this table).
  void OwnAll(OutboxRelay* r) {
    ASSERT_TRUE(WaitUntil([&] { return r->stats().shards_owned == writer_->shards(); }, 10s))
        << "the relay owns " << r->stats().shards_owned << " shards: another relay holds some";
  }

  Status Commit(PGconn* c, const std::vector<OutboxEvent>& events) {
    if (!Ok(Exec(c, "BEGIN"))) return Status::Unavailable(PQerrorMessage(c));
    Status s = writer_->Append(c, events);
    if (!s.ok()) {
      Exec(c, "ROLLBACK");
      return s;
    }
    if (!Ok(Exec(c, "COMMIT"))) return Status::Internal(PQerrorMessage(c));
    return Status::Ok();
  }

  // Two keys of different shards.
  std::pair<std::string, std::string> TwoShardKeys() {
    const int n = writer_->shards();
    std::string a = "adv-a", b;
    for (int i = 0; b.empty(); ++i) {
      std::string k = "adv-b" + std::to_string(i);
      if (ShardOf(k, n) != ShardOf(a, n)) b = k;
    }
    return {a, b};
  }
  int64_t Unsent(const std::string& topic) {
    return QueryInt(conn_.get(), "SELECT count(*) FROM tiercache_outbox WHERE topic = $1 AND sent_at IS NULL",
                    {topic});
  }

  std::string conninfo_, topic_;
  std::vector<std::string> topics_, cleanup_sql_;
  Conn conn_;
  std::optional<OutboxWriter> writer_;
  std::unique_ptr<Reader> reader_;
  std::vector<std::unique_ptr<OutboxRelay>> relays_;
};

// ---- 5. bad input ------------------------------------------------------------------

// Found: a committed event Kafka will never accept (payload above the
// publisher's max_message_bytes, 1 MB by default; Append took up to 1 GiB)
// stopped the relay from publishing the other shards' events, for good. Now
// Append refuses it (OutboxWriter's max_payload_bytes); a row the broker
// refuses anyway is dead-lettered (next test).
TEST_F(AdversaryOutboxTest, AnOversizedPayloadMustNotBlockOtherShards) {
  StartReader();
  OutboxRelay* relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  OwnAll(relay);
  const auto [ka, kb] = TwoShardKeys();
  const Status big = Commit(conn_.get(), {{topic_, ka, std::string(1500000, 'x'), {}}});
  EXPECT_TRUE(big.IsInvalidArgument()) << big.ToString();
  // Other shard, committed after: NOTIFYs keep coming as writers write.
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(Commit(conn_.get(), {{topic_, kb, "kb-" + std::to_string(i), {}}}).ok());
    std::this_thread::sleep_for(100ms);
  }
  const bool other_delivered = reader_->WaitForValues({"kb-0"}, 5s);
  const OutboxRelayStats st = relay->stats();
  std::printf("oversized: kb-0 delivered: %d; publish_errors after ~5 s of writes: %llu; unsent of topic: %lld\n",
              other_delivered, (unsigned long long)st.publish_errors, (long long)Unsent(topic_));
  EXPECT_TRUE(other_delivered) << "one oversized row blocks every shard of the relay (and stays unsent forever)";
  // With backoff (100 ms doubling to 5 s) ~6 retries fit in 5 s; NOTIFYs cut the backoff short.
  EXPECT_LT(st.publish_errors, 15u) << "the backoff is bypassed by every NOTIFY: a retry per commit";
}

// Found: a row the broker refuses (topic max.message.bytes smaller than the
// payload, an asynchronous kInvalidArgument) blocked its shard forever; once
// its shard's backlog filled a batch, the other shards starved too. Now it
// is dead-lettered and shards are read fairly.
TEST_F(AdversaryOutboxTest, ABrokerRejectedRowMustNotStarveOtherShards) {
  const std::string small = NewTopic({{"max.message.bytes", "2000"}});
  StartReader();
  OutboxRelayOptions o = Options();
  o.batch = 4;
  o.publish_timeout = 3000ms;
  OutboxRelay* relay = StartRelay(o);
  ASSERT_NE(relay, nullptr);
  OwnAll(relay);
  const auto [ka, kb] = TwoShardKeys();
  ASSERT_TRUE(Commit(conn_.get(), {{small, ka, std::string(10000, 'p'), {}}}).ok());
  for (int v = 1; v <= 4; ++v) ASSERT_TRUE(Commit(conn_.get(), {{topic_, ka, "ka-" + std::to_string(v), {}}}).ok());
  ASSERT_TRUE(Commit(conn_.get(), {{topic_, kb, "kb-1", {}}}).ok());
  const bool other_delivered = reader_->WaitForValues({"kb-1"}, 15s);
  std::printf("broker-rejected: kb-1 delivered: %d; ka-1 published %zu times; publish_errors %llu\n", other_delivered,
              reader_->CountValue("ka-1"), (unsigned long long)relay->stats().publish_errors);
  EXPECT_TRUE(other_delivered) << "a shard blocked by one poison row starves every other shard of the relay";
  EXPECT_LE(reader_->CountValue("ka-1"), 2u) << "the rows behind the poison row are republished every round";
}

// Kafka keys are bytes; the key is a text parameter (libpq reads it up to the
// first NUL) while the shard is computed from all its bytes.
TEST_F(AdversaryOutboxTest, AKeyWithANulByteIsPublishedWithItsOwnBytes) {
  StartReader();
  OutboxRelay* relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  OwnAll(relay);
  const std::string k1("tenant\0one", 10), k2("\0x", 2);
  const Status s1 = Commit(conn_.get(), {{topic_, k1, "nul-key-1", {}}});
  const Status s2 = Commit(conn_.get(), {{topic_, k2, "nul-key-2", {}}});
  if (!s1.ok() || !s2.ok()) {
    SUCCEED() << "refused: " << s1.ToString() << " / " << s2.ToString();
    return;
  }
  ASSERT_TRUE(reader_->WaitForValues({"nul-key-1", "nul-key-2"}, 20s));
  for (const Msg& m : reader_->Messages()) {
    if (m.value == "nul-key-1") {
      EXPECT_EQ(m.key, k1) << "key silently truncated at the NUL (now shares the key of 'tenant' but not its shard)";
    }
    if (m.value == "nul-key-2") {
      EXPECT_TRUE(m.has_key && m.key == k2) << "a non-empty key became an empty/absent key (has_key=" << m.has_key
                                            << ", key size " << m.key.size() << ")";
    }
  }
  PgResult r = Exec(conn_.get(), "SELECT key, shard FROM tiercache_outbox WHERE topic = $1 ORDER BY id", {topic_});
  for (int i = 0; Ok(r) && i < PQntuples(r.get()); ++i) {
    std::printf("nul-key: stored key '%s' (%d bytes), shard %s; ShardOf(stored) = %d\n", PQgetvalue(r.get(), i, 0),
                PQgetlength(r.get(), i, 0), PQgetvalue(r.get(), i, 1),
                ShardOf(PQgetvalue(r.get(), i, 0), writer_->shards()));
  }
}

// Kafka header values are bytes, but the outbox keeps headers as JSON text:
// found, a NUL byte failed with kInternal and invalid UTF-8 was undocumented.
// Now both are refused as kInvalidArgument, as outbox.h says.
TEST_F(AdversaryOutboxTest, BinaryHeaderValuesAreRefusedClearly) {
  StartReader();
  OutboxRelay* relay = StartRelay(Options());
  ASSERT_NE(relay, nullptr);
  const kafka::Headers nul = {{"trace", std::string("a\0b", 3)}};
  const kafka::Headers bin = {{"id", std::string("\xff\xfe\x01", 3)}};
  const Status s1 = Commit(conn_.get(), {{topic_, "h1", "hdr-nul", nul}});
  const Status s2 = Commit(conn_.get(), {{topic_, "h2", "hdr-bin", bin}});
  EXPECT_TRUE(s1.IsInvalidArgument()) << "a header value with a NUL byte: " << s1.ToString();
  EXPECT_TRUE(s2.IsInvalidArgument()) << "a binary header value: " << s2.ToString();
}

TEST_F(AdversaryOutboxTest, AppendInAnAbortedTransactionIsRefused) {
  ASSERT_TRUE(Ok(Exec(conn_.get(), "BEGIN")));
  EXPECT_FALSE(Ok(Exec(conn_.get(), "SELECT 1/0")));
  const Status s = writer_->Append(conn_.get(), {{topic_, "k", "x", {}}});
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  Exec(conn_.get(), "ROLLBACK");
  EXPECT_TRUE(writer_->Append(conn_.get(), {{topic_, "", "x", {}}}).IsInvalidArgument());
}

TEST_F(AdversaryOutboxTest, ConcurrentMigrateWithOtherShardCountsKeepsTheStoredOne) {
  const int64_t before = QueryInt(conn_.get(), "SELECT shards FROM tiercache_outbox_meta");
  std::vector<std::thread> ts;
  std::vector<Status> out(6);
  for (int i = 0; i < 6; ++i) ts.emplace_back([&, i] { out[i] = MigrateOutbox(conninfo_, i % 2 ? 8 : 128); });
  for (auto& t : ts) t.join();
  for (const Status& s : out) EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(QueryInt(conn_.get(), "SELECT shards FROM tiercache_outbox_meta"), before);
}

// ---- 6. deadlocks ------------------------------------------------------------------

// Found: outbox.h claimed two appends never deadlock; true only within one
// Append call. Now documented: two Append calls per transaction in opposite
// shard order can deadlock; PostgreSQL aborts one with SQLSTATE 40P01 (in
// the status, to retry) and the other goes on.
TEST_F(AdversaryOutboxTest, TwoAppendCallsPerTransactionInOppositeShardOrderDeadlock) {
  auto [ka, kb] = TwoShardKeys();
  if (ShardOf(ka, writer_->shards()) > ShardOf(kb, writer_->shards())) std::swap(ka, kb);  // ka: lower shard
  Conn c2 = Connect();
  ASSERT_TRUE(Ok(Exec(conn_.get(), "BEGIN")));
  ASSERT_TRUE(Ok(Exec(c2.get(), "BEGIN")));
  ASSERT_TRUE(writer_->Append(conn_.get(), {{topic_, kb, "t1-high", {}}}).ok());
  ASSERT_TRUE(writer_->Append(c2.get(), {{topic_, ka, "t2-low", {}}}).ok());
  Status s1, s2;
  std::thread t1([&] { s1 = writer_->Append(conn_.get(), {{topic_, ka, "t1-low", {}}}); });
  std::this_thread::sleep_for(100ms);
  std::thread t2([&] { s2 = writer_->Append(c2.get(), {{topic_, kb, "t2-high", {}}}); });
  t1.join();
  t2.join();
  Exec(conn_.get(), "ROLLBACK");
  Exec(c2.get(), "ROLLBACK");
  const bool one_deadlocked = (s1.ok() && s2.message().find("40P01") != std::string_view::npos) ||
                              (s2.ok() && s1.message().find("40P01") != std::string_view::npos);
  EXPECT_TRUE(one_deadlocked) << s1.ToString() << " / " << s2.ToString();
}

// ---- 4. liveness -------------------------------------------------------------------

// A TCP proxy to PostgreSQL that can stall (stop forwarding, sockets kept
// open: a stuck network or a hung server).
class StallProxy {
 public:
  StallProxy() {
    listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(listen_, 64);
    socklen_t len = sizeof a;
    ::getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    accept_ = std::thread([this] { AcceptLoop(); });
  }
  ~StallProxy() {
    closing_.store(true);
    ::shutdown(listen_, SHUT_RDWR);
    ::close(listen_);
    accept_.join();
    std::lock_guard<std::mutex> l(mu_);
    for (auto& t : pumps_) t.join();
  }
  int port() const { return port_; }
  void Stall(bool on) { stalled_.store(on); }
  void CloseAll() { closing_.store(true); }

 private:
  void AcceptLoop() {
    for (;;) {
      const int c = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.sin_port = htons(static_cast<uint16_t>(testing::PgPort()));
      ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
      std::lock_guard<std::mutex> l(mu_);
      pumps_.emplace_back([this, c, s] { Pump(c, s); });
    }
  }
  void Pump(int a, int b) {
    char buf[65536];
    while (!closing_.load()) {
      if (stalled_.load()) {
        std::this_thread::sleep_for(20ms);
        continue;
      }
      pollfd fds[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
      if (::poll(fds, 2, 50) <= 0) continue;
      bool eof = false;
      for (int i = 0; i < 2; ++i) {
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
          const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
          if (n <= 0) {
            eof = true;
            break;
          }
          if (::write(i == 0 ? b : a, buf, static_cast<size_t>(n)) != n) eof = true;
        }
      }
      if (eof) break;
    }
    ::close(a);
    ::close(b);
  }
  int listen_ = -1, port_ = 0;
  std::atomic<bool> stalled_{false}, closing_{false};
  std::thread accept_;
  std::mutex mu_;
  std::vector<std::thread> pumps_;
};

// outbox.h: Stop "stops the thread after the batch in flight (bounded by
// publish_timeout)". PostgreSQL unreachable mid-session: no query timeout, no
// keepalive, so the relay's thread blocks in libpq and Stop with it.
TEST_F(AdversaryOutboxTest, StopIsBoundedWhilePostgresqlIsUnreachable) {
  StallProxy proxy;
  OutboxRelayOptions o = Options();
  o.conninfo = "host=127.0.0.1 port=" + std::to_string(proxy.port()) + " dbname=tiercache user=postgres";
  o.publish_timeout = 1000ms;
  o.poll_interval = 100ms;
  OutboxRelay* relay = StartRelay(o);
  ASSERT_NE(relay, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return relay->stats().shards_owned > 0; }, 10s));
  proxy.Stall(true);
  std::this_thread::sleep_for(500ms);  // the next poll's query is sent and hangs
  std::atomic<bool> stopped{false};
  const auto t0 = Clock::now();
  std::thread stopper([&] {
    relay->Stop();
    stopped.store(true);
  });
  const bool prompt = WaitUntil([&] { return stopped.load(); }, 8s);
  const double waited = Secs(Clock::now() - t0);
  proxy.CloseAll();  // let the relay's thread see EOF so the test can end
  stopper.join();
  std::printf("pg-stall: Stop returned within 8 s: %d (after %.1f s; total %.1f s)\n", prompt, waited,
              Secs(Clock::now() - t0));
  EXPECT_TRUE(prompt) << "Stop hangs while PostgreSQL is unreachable (blocked in a libpq call with no timeout)";
}

// outbox.h: "Start/Stop/stats from any thread", Stop "stops the thread" and is
// idempotent. A second, concurrent Stop finds the thread already moved out by
// the first, does not wait for it, and resets the connection the relay's
// thread is still using (relay.cc Stop: conn.reset() after an empty join).
TEST_F(AdversaryOutboxTest, ASecondConcurrentStopReturnsOnlyOnceTheThreadHasStopped) {
  StallProxy proxy;
  OutboxRelayOptions o = Options();
  o.conninfo = "host=127.0.0.1 port=" + std::to_string(proxy.port()) + " dbname=tiercache user=postgres";
  o.poll_interval = 100ms;
  OutboxRelay* relay = StartRelay(o);
  ASSERT_NE(relay, nullptr);
  ASSERT_TRUE(WaitUntil([&] { return relay->stats().shards_owned > 0; }, 10s));
  proxy.Stall(true);  // the relay's thread blocks inside libpq (a busy relay: a long query)
  std::this_thread::sleep_for(500ms);
  std::atomic<bool> first_done{false};
  std::thread first([&] {
    relay->Stop();
    first_done.store(true);
  });
  std::this_thread::sleep_for(200ms);
  const auto t0 = Clock::now();
  relay->Stop();  // the second caller
  const double second_s = Secs(Clock::now() - t0);
  const bool thread_still_running = !first_done.load();
  std::printf("concurrent stop: the second Stop returned after %.3f s while the relay thread was %s\n", second_s,
              thread_still_running ? "STILL RUNNING (its PGconn already PQfinish'ed under it)" : "stopped");
  proxy.CloseAll();
  first.join();
  EXPECT_FALSE(thread_still_running)
      << "Stop returned while the relay's thread still runs, and freed the connection that thread is using";
}

TEST_F(AdversaryOutboxTest, StopAndDestructionAreBoundedWhileKafkaIsDown) {
  const int broker = testing::KafkaBrokerPid();
  if (broker <= 0) GTEST_SKIP() << "no broker pid";
  OutboxRelayOptions o = Options();
  o.publish_timeout = 1000ms;
  auto r = OutboxRelay::Create(o);
  ASSERT_TRUE(r.ok());
  std::unique_ptr<OutboxRelay> relay = std::move(*r);
  ASSERT_TRUE(relay->Start().ok());
  ASSERT_TRUE(WaitUntil([&] { return relay->stats().shards_owned > 0; }, 10s));
  ASSERT_TRUE(Commit(conn_.get(), {{topic_, "warm", "warm", {}}}).ok());
  ASSERT_TRUE(WaitUntil([&] { return Unsent(topic_) == 0; }, 20s));
  g_stopped_broker.store(broker);
  ASSERT_EQ(::kill(broker, SIGSTOP), 0);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(Commit(conn_.get(), {{topic_, "k" + std::to_string(i), "down", {}}}).ok());
  std::this_thread::sleep_for(300ms);
  const auto t0 = Clock::now();
  relay->Stop();
  const double stop_s = Secs(Clock::now() - t0);
  relay.reset();
  const double total_s = Secs(Clock::now() - t0);
  ResumeBroker();
  std::printf("kafka-down: Stop %.2f s, Stop + destruction %.2f s (publish_timeout 1 s)\n", stop_s, total_s);
  EXPECT_LT(stop_s, 3.5);
  EXPECT_LT(total_s, 4.0) << "~OutboxRelay (documented as Stop()) waits for the publisher's close_timeout";
  // After the outage a new relay drains.
  OutboxRelay* again = StartRelay(Options());
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(WaitUntil([&] { return Unsent(topic_) == 0; }, 60s)) << Unsent(topic_) << " unsent after the outage";
}

TEST_F(AdversaryOutboxTest, AnIdleRelayUsesNoCpu) {
  OutboxRelayOptions o = Options();
  OutboxRelay* a = StartRelay(o);
  ASSERT_NE(a, nullptr);
  OutboxRelay* b = StartRelay(o);  // owns nothing
  ASSERT_NE(b, nullptr);
  std::this_thread::sleep_for(1500ms);
  rusage r0{}, r1{};
  getrusage(RUSAGE_SELF, &r0);
  std::this_thread::sleep_for(4s);
  getrusage(RUSAGE_SELF, &r1);
  auto us = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000000.0 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
  };
  const double cpu = (us(r1) - us(r0)) / 1e6;
  std::printf("idle: %.3f s CPU in 4 s (two relays)\n", cpu);
  EXPECT_LT(cpu, 0.4);
}

// ---- 2/3. hand-over and database errors mid-round ----------------------------------

// Per key: after dropping repeats of a value seen before, versions 1..last in order.
std::vector<std::string> CheckOrder(const std::vector<Msg>& msgs, const std::map<std::string, int>& last) {
  std::vector<std::string> problems;
  std::set<std::string> seen;
  std::map<std::string, int> next;
  for (const Msg& m : msgs) {
    if (last.count(m.key) == 0) continue;
    if (!seen.insert(m.value).second) continue;
    const int v = std::stoi(m.value.substr(m.value.rfind(':') + 1));
    int& want = next.try_emplace(m.key, 1).first->second;
    if (v != want && problems.size() < 10) {
      problems.push_back("key " + m.key + ": v" + std::to_string(v) + " where v" + std::to_string(want) + " was due");
    }
    want = std::max(want, v + 1);
  }
  for (const auto& [k, v] : last) {
    if (next[k] != v + 1) problems.push_back("key " + k + " ends at v" + std::to_string(next[k] - 1) + " of " + std::to_string(v));
  }
  return problems;
}

// Writers bump a row per key and append its version in the same transaction.
struct Writers {
  std::map<std::string, int> last;
  std::vector<std::string> errors;
  void Run(AdversaryOutboxTest* t, const OutboxWriter& w, const std::string& topic, int threads, int txns,
           const std::vector<std::string>& keys, std::atomic<int>* committed, int pause_ms = 0) {
    std::mutex mu;
    std::vector<std::thread> ts;
    for (int n = 0; n < threads; ++n) {
      ts.emplace_back([&, n] {
        Conn c = Connect();
        for (int i = 0; i < txns; ++i) {
          if (pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
          const std::string& k = keys[static_cast<size_t>(i * 7 + n) % keys.size()];
          Exec(c.get(), "BEGIN");
          PgResult r = Exec(c.get(),
                            "INSERT INTO adv_outbox_posts (id, version) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE "
                            "SET version = adv_outbox_posts.version + 1 RETURNING version",
                            {topic + "/" + k});
          if (!Ok(r)) {
            std::lock_guard<std::mutex> l(mu);
            errors.push_back(PQerrorMessage(c.get()));
            Exec(c.get(), "ROLLBACK");
            continue;
          }
          const std::string v = PQgetvalue(r.get(), 0, 0);
          Status s = w.Append(c.get(), {{topic, k, k + ":" + v, {}}});
          if (!s.ok() || !Ok(Exec(c.get(), "COMMIT"))) {
            std::lock_guard<std::mutex> l(mu);
            errors.push_back(s.ToString() + PQerrorMessage(c.get()));
            Exec(c.get(), "ROLLBACK");
            continue;
          }
          std::lock_guard<std::mutex> l(mu);
          last[k] = std::max(last[k], std::stoi(v));
          if (committed) ++*committed;
        }
      });
    }
    for (auto& th : ts) th.join();
    (void)t;
  }
};

// The relay's backend terminated between the broker's acknowledgement and the
// mark (after_publish), repeatedly, while writers commit: no loss, per-key
// commit order after dropping repeats, the relay reconnects and reclaims.
TEST_F(AdversaryOutboxTest, TerminatingTheRelaySessionBetweenPublishAndMarkLosesNothing) {
  ASSERT_TRUE(Ok(Exec(conn_.get(), "CREATE TABLE IF NOT EXISTS adv_outbox_posts (id text PRIMARY KEY, version bigint NOT NULL)")));
  StartReader();
  const std::string app = "adv-relay-" + topic_;
  auto killer = std::make_shared<Conn>(Connect());
  std::atomic<int> kills{0}, batches{0};
  OutboxRelayOptions o = Options();
  o.conninfo = conninfo_ + " application_name=" + app;
  o.batch = 7;
  o.backoff_min = 10ms;
  o.after_publish = [&, killer](size_t) {
    if (++batches % 3 == 0 && kills.load() < 15) {
      Exec(killer->get(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", {app});
      ++kills;
    }
  };
  OutboxRelay* a = StartRelay(o);
  ASSERT_NE(a, nullptr);
  OwnAll(a);
  // A second relay with the same hook: it may take shards during the hand-over.
  OutboxRelay* b = StartRelay(o);
  ASSERT_NE(b, nullptr);
  std::vector<std::string> keys;
  for (int i = 0; i < 6; ++i) keys.push_back("tk" + std::to_string(i));
  Writers w;
  std::atomic<int> committed{0};
  w.Run(this, *writer_, topic_, 4, 150, keys, &committed);
  ASSERT_TRUE(w.errors.empty()) << w.errors.size() << " writer errors, first: " << w.errors[0];
  std::vector<std::string> want;
  for (const auto& [k, v] : w.last) {
    for (int i = 1; i <= v; ++i) want.push_back(k + ":" + std::to_string(i));
  }
  const bool all = reader_->WaitForValues(want, 60s);
  std::printf("terminate: %d kills, relay a owns %d, b owns %d, db_errors a %llu b %llu\n", kills.load(),
              a->stats().shards_owned, b->stats().shards_owned, (unsigned long long)a->stats().db_errors,
              (unsigned long long)b->stats().db_errors);
  EXPECT_TRUE(all) << "events lost";
  EXPECT_GT(kills.load(), 3);
  EXPECT_TRUE(WaitUntil([&] { return a->stats().shards_owned + b->stats().shards_owned == writer_->shards(); }, 10s));
  const auto problems = CheckOrder(reader_->Messages(), w.last);
  EXPECT_TRUE(problems.empty()) << problems[0];
  EXPECT_TRUE(WaitUntil([&] { return Unsent(topic_) == 0; }, 10s));
}

// Kafka stalls repeatedly (SIGSTOP) for longer than publish_timeout while
// writers commit and two relays share the shards: batches time out partly
// in flight. After dropping repeats, per-key order must be commit order.
TEST_F(AdversaryOutboxTest, BrokerStallsLongerThanPublishTimeoutKeepPerKeyOrder) {
  const int broker = testing::KafkaBrokerPid();
  if (broker <= 0) GTEST_SKIP() << "no broker pid";
  ASSERT_TRUE(Ok(Exec(conn_.get(), "CREATE TABLE IF NOT EXISTS adv_outbox_posts (id text PRIMARY KEY, version bigint NOT NULL)")));
  StartReader();
  OutboxRelayOptions o = Options();
  o.batch = 20;
  o.publish_timeout = 700ms;
  o.backoff_max = 300ms;
  o.max_shards = writer_->shards() / 2;
  OutboxRelay* a = StartRelay(o);
  ASSERT_NE(a, nullptr);
  o.max_shards = 0;
  OutboxRelay* b = StartRelay(o);
  ASSERT_NE(b, nullptr);
  std::vector<std::string> keys;
  for (int i = 0; i < 10; ++i) keys.push_back("sk" + std::to_string(i));
  std::atomic<bool> done{false};
  std::thread staller([&] {
    while (!done.load()) {
      std::this_thread::sleep_for(400ms);
      g_stopped_broker.store(broker);
      ::kill(broker, SIGSTOP);
      std::this_thread::sleep_for(1200ms);
      ResumeBroker();
    }
  });
  Writers w;
  w.Run(this, *writer_, topic_, 4, 1500, keys, nullptr, 5);
  done.store(true);
  staller.join();
  ResumeBroker();
  ASSERT_TRUE(w.errors.empty()) << w.errors[0];
  std::vector<std::string> want;
  for (const auto& [k, v] : w.last) {
    for (int i = 1; i <= v; ++i) want.push_back(k + ":" + std::to_string(i));
  }
  EXPECT_TRUE(reader_->WaitForValues(want, 90s)) << "lost events";
  EXPECT_TRUE(WaitUntil([&] { return Unsent(topic_) == 0; }, 30s));
  const auto problems = CheckOrder(reader_->Messages(), w.last);
  std::printf("stalls: %zu events, %zu messages, publish_errors a %llu b %llu\n", want.size(),
              reader_->Messages().size(), (unsigned long long)a->stats().publish_errors,
              (unsigned long long)b->stats().publish_errors);
  EXPECT_TRUE(problems.empty()) << problems.size() << " problems, first: " << problems[0];
}

// The mark (UPDATE) fails with an SQL error for a while: published again, not lost.
TEST_F(AdversaryOutboxTest, AFailingMarkLosesNothingAndKeepsOrder) {
  ASSERT_TRUE(Ok(Exec(conn_.get(), "CREATE TABLE IF NOT EXISTS adv_outbox_posts (id text PRIMARY KEY, version bigint NOT NULL)")));
  StartReader();
  const std::string fn = "adv_fail_mark_" + std::to_string(::getpid());
  PgResult r = Exec(conn_.get(), "CREATE FUNCTION " + fn +
                                     "() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.topic = '" + topic_ +
                                     "' THEN RAISE EXCEPTION 'adversary: mark fails'; END IF; RETURN NEW; END $$");
  ASSERT_TRUE(Ok(r)) << PQerrorMessage(conn_.get());
  cleanup_sql_.push_back("DROP TRIGGER IF EXISTS " + fn + " ON tiercache_outbox");
  cleanup_sql_.push_back("DROP FUNCTION IF EXISTS " + fn + "()");
  ASSERT_TRUE(Ok(Exec(conn_.get(), "CREATE TRIGGER " + fn + " BEFORE UPDATE ON tiercache_outbox FOR EACH ROW EXECUTE FUNCTION " + fn + "()")));
  OutboxRelayOptions o = Options();
  o.batch = 5;
  OutboxRelay* a = StartRelay(o);
  ASSERT_NE(a, nullptr);
  OwnAll(a);
  Writers w;
  w.Run(this, *writer_, topic_, 2, 30, {"m1", "m2", "m3"}, nullptr);
  ASSERT_TRUE(w.errors.empty()) << w.errors[0];
  std::this_thread::sleep_for(3s);
  const int64_t unsent_during = Unsent(topic_);
  Exec(conn_.get(), "DROP TRIGGER " + fn + " ON tiercache_outbox");
  std::vector<std::string> want;
  for (const auto& [k, v] : w.last) {
    for (int i = 1; i <= v; ++i) want.push_back(k + ":" + std::to_string(i));
  }
  EXPECT_TRUE(reader_->WaitForValues(want, 60s));
  EXPECT_TRUE(WaitUntil([&] { return Unsent(topic_) == 0; }, 20s));
  std::printf("failing mark: unsent while failing %lld, messages %zu for %zu events, db_errors %llu\n",
              (long long)unsent_during, reader_->Messages().size(), want.size(),
              (unsigned long long)a->stats().db_errors);
  const auto problems = CheckOrder(reader_->Messages(), w.last);
  EXPECT_TRUE(problems.empty()) << problems[0];
}

}  // namespace
}  // namespace tiercache::outbox
