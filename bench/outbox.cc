// make bench-outbox: the transactional outbox on the local PostgreSQL and
// Kafka broker.
//
//   outbox_commit_to_publish_*  500 writes/s, open loop, for 20 s: each write
//                          is one transaction appending one event (4 writer
//                          connections take the writes as they fall due). The
//                          lag of an event runs from the moment its COMMIT
//                          returned to the writer to the moment a consumer of
//                          the topic (a plain librdkafka consumer in this
//                          process, long-polling) received it: what a cache
//                          consumer would see, so it includes the relay's
//                          wake-up, read, publish, the broker's ack and the
//                          fetch. (The relay's own view, ObserveOutboxPublishLag
//                          through a Metrics passed in OutboxRelayOptions::metrics,
//                          runs from the row's insert to the broker's ack; it is
//                          printed too, not as a RESULT.)
//   relay_events_per_s     100,000 events appended in transactions of 1,000
//                          while no relay of this program runs, then one relay
//                          (created, its producer connected, before the clock
//                          starts) is started: events / (Start -> the topic's
//                          last row marked sent).
// Ends with RESULT lines. No assertion on any figure.
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tiercache/events.h"
#include "tiercache/metrics.h"
#include "tiercache/outbox.h"

namespace tiercache::outbox {
namespace {

using namespace std::chrono_literals;
using SysClock = std::chrono::system_clock;
using SteadyClock = std::chrono::steady_clock;

std::string Brokers() {
  const char* p = std::getenv("TIERCACHE_KAFKA_PORT");
  return std::string("127.0.0.1:") + (p ? p : "9092");
}

std::string Conninfo() {
  const char* p = std::getenv("TIERCACHE_PG_PORT");
  return std::string("host=127.0.0.1 port=") + (p ? p : "55432") + " dbname=tiercache user=postgres connect_timeout=5";
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "bench outbox: %s\n", what.c_str());
  std::exit(1);
}

std::string Unique(const std::string& prefix) {
  static std::mt19937_64 rng(std::random_device{}());
  return prefix + "." + std::to_string(rng() % 1000000000);
}

void CreateTopic(const std::string& topic, int partitions) {
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", Brokers().c_str(), errstr, sizeof(errstr));
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (rk == nullptr) Die(std::string("admin client: ") + errstr);
  rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, errstr, sizeof(errstr));
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &nt, 1, nullptr, q);
  if (rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000)) rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
  rd_kafka_destroy(rk);
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

double Ms(std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); }

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SysClock::now().time_since_epoch()).count();
}

// ---- libpq ------------------------------------------------------------------------

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, ConnDeleter>;

Conn Connect() {
  Conn c(PQconnectdb(Conninfo().c_str()));
  if (PQstatus(c.get()) != CONNECTION_OK) Die(std::string("postgresql: ") + PQerrorMessage(c.get()));
  return c;
}

void Command(PGconn* c, const char* sql) {
  PGresult* r = PQexec(c, sql);
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  PQclear(r);
  if (!ok) Die(std::string(sql) + ": " + PQerrorMessage(c));
}

int64_t Unsent(PGconn* c, const std::string& topic) {
  const char* params[1] = {topic.c_str()};
  PGresult* r = PQexecParams(c, "SELECT count(*) FROM tiercache_outbox WHERE topic = $1 AND sent_at IS NULL", 1,
                             nullptr, params, nullptr, nullptr, 0);
  const int64_t n = PQresultStatus(r) == PGRES_TUPLES_OK ? std::stoll(PQgetvalue(r, 0, 0)) : -1;
  PQclear(r);
  return n;
}

std::string Payload(const std::string& id, const std::string& community, uint64_t version) {
  InvalidationEvent e;
  e.event_id = id;
  e.type = "post.updated";
  e.entity_id = id;
  e.partition_key = community;
  e.version = version;
  e.occurred_at = SysClock::now();
  return *EncodeEvent(e);
}

// One transaction appending `events`.
void Write(PGconn* c, const OutboxWriter& writer, const std::vector<OutboxEvent>& events) {
  Command(c, "BEGIN");
  const Status s = writer.Append(c, events);
  if (!s.ok()) Die("Append: " + s.ToString());
  Command(c, "COMMIT");
}

// The relay's publish lags (row inserted -> broker ack), through the metrics hook.
class LagMetrics final : public Metrics {
 public:
  void Add(Counter, Tier, uint64_t) override {}
  void ObserveLoad(std::chrono::nanoseconds) override {}
  void SetBreakerOpen(bool) override {}
  void ObserveOutboxPublishLag(std::chrono::nanoseconds lag) override {
    std::lock_guard<std::mutex> l(mu_);
    lags_ms_.push_back(Ms(lag));
  }
  std::vector<double> Take() {
    std::lock_guard<std::mutex> l(mu_);
    return std::exchange(lags_ms_, {});
  }

 private:
  std::mutex mu_;
  std::vector<double> lags_ms_;
};

// Reads a topic from the beginning on its own thread; records, for event ids
// "<n>", the time the first copy of event n arrived (ns since the epoch).
class Receiver {
 public:
  Receiver(const std::string& topic, int partitions, size_t events) : received_ns_(events) {
    for (auto& r : received_ns_) r.store(0);
    char errstr[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{{"bootstrap.servers", Brokers()},
                                                                      {"group.id", Unique("tiercache.bench.outbox")},
                                                                      {"enable.auto.commit", "false"},
                                                                      {"fetch.wait.max.ms", "5"}}) {
      rd_kafka_conf_set(conf, k.c_str(), v.c_str(), errstr, sizeof(errstr));
    }
    rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk_ == nullptr) Die(std::string("consumer: ") + errstr);
    rd_kafka_poll_set_consumer(rk_);
    rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; ++p) {
      rd_kafka_topic_partition_list_add(parts, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_assign(rk_, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        rd_kafka_message_t* m = rd_kafka_consumer_poll(rk_, 100);
        if (m == nullptr) continue;
        const int64_t at = NowNs();
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
          Result<InvalidationEvent> e =
              ParseEvent(std::string_view(static_cast<const char*>(m->payload), m->len));
          if (e.ok()) {
            const size_t n = std::strtoull(e->event_id.c_str(), nullptr, 10);
            int64_t expected = 0;
            if (n < received_ns_.size() && received_ns_[n].compare_exchange_strong(expected, at)) ++distinct_;
          }
        }
        rd_kafka_message_destroy(m);
      }
    });
  }
  ~Receiver() {
    stop_.store(true);
    thread_.join();
    rd_kafka_consumer_close(rk_);
    rd_kafka_destroy(rk_);
  }
  int64_t received_ns(size_t n) const { return received_ns_[n].load(); }
  size_t distinct() const { return distinct_.load(); }

 private:
  rd_kafka_t* rk_ = nullptr;
  std::vector<std::atomic<int64_t>> received_ns_;
  std::atomic<size_t> distinct_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

std::unique_ptr<OutboxRelay> NewRelay(Metrics* metrics) {
  OutboxRelayOptions o;
  o.conninfo = Conninfo();
  o.publisher.brokers = Brokers();
  o.publisher.client_id = "tiercache-bench-outbox-relay";
  o.metrics = metrics;
  Result<std::unique_ptr<OutboxRelay>> relay = OutboxRelay::Create(std::move(o));
  if (!relay.ok()) Die("OutboxRelay::Create: " + relay.status().ToString());
  return std::move(*relay);
}

// ---- commit -> publish lag at 500 writes/s ------------------------------------------

struct LagFigures {
  double p50 = -1, p99 = -1, max = -1, relay_p50 = -1, relay_p99 = -1, achieved_rate = 0;
  size_t lost = 0;
};

LagFigures MeasureLag() {
  constexpr int kRate = 500, kWarmup = 1000, kMeasured = kRate * 20, kWriters = 4, kCommunities = 100;
  constexpr int kTotal = kWarmup + kMeasured;
  const std::string topic = Unique("tiercache.bench.outbox.lag");
  CreateTopic(topic, 6);
  Receiver receiver(topic, 6, kTotal);
  LagMetrics metrics;
  std::unique_ptr<OutboxRelay> relay = NewRelay(&metrics);
  if (Status s = relay->Start(); !s.ok()) Die("Start: " + s.ToString());

  std::vector<std::atomic<int64_t>> committed_ns(kTotal);
  for (auto& c : committed_ns) c.store(0);
  // Writes fall due every 2 ms from `start`; a free writer takes the next one.
  auto run = [&](int from, int to) {
    std::atomic<int> next{from};
    const auto start = SteadyClock::now();
    std::vector<std::thread> writers;
    for (int w = 0; w < kWriters; ++w) {
      writers.emplace_back([&] {
        Conn c = Connect();
        Result<OutboxWriter> writer = OutboxWriter::Create(c.get());
        if (!writer.ok()) Die("OutboxWriter::Create: " + writer.status().ToString());
        for (int i; (i = next.fetch_add(1)) < to;) {
          std::this_thread::sleep_until(start + std::chrono::microseconds(1000000 / kRate) * (i - from));
          const std::string community = topic + "-" + std::to_string(i % kCommunities);
          Write(c.get(), *writer,
                {OutboxEvent{topic, community, Payload(std::to_string(i), community, static_cast<uint64_t>(i + 1)), {}}});
          committed_ns[static_cast<size_t>(i)].store(NowNs());
        }
      });
    }
    for (std::thread& t : writers) t.join();
    return std::chrono::duration<double>(SteadyClock::now() - start).count();
  };
  auto wait_received = [&](size_t n, std::chrono::seconds limit) {
    const auto until = SteadyClock::now() + limit;
    while (receiver.distinct() < n && SteadyClock::now() < until) std::this_thread::sleep_for(10ms);
  };
  // Warm-up (the producer's first publish, the consumer's first fetch): not measured.
  run(0, kWarmup);
  wait_received(kWarmup, 30s);
  metrics.Take();
  const double secs = run(kWarmup, kTotal);
  wait_received(kTotal, 60s);
  relay->Stop();

  LagFigures f;
  std::vector<double> lags;
  for (int i = kWarmup; i < kTotal; ++i) {
    const int64_t r = receiver.received_ns(static_cast<size_t>(i));
    if (r == 0) {
      ++f.lost;
      continue;
    }
    lags.push_back(static_cast<double>(r - committed_ns[static_cast<size_t>(i)].load()) / 1e6);
  }
  f.p50 = Percentile(lags, 0.50);
  f.p99 = Percentile(lags, 0.99);
  f.max = Percentile(lags, 1.0);
  const std::vector<double> relay_lags = metrics.Take();
  f.relay_p50 = Percentile(relay_lags, 0.50);
  f.relay_p99 = Percentile(relay_lags, 0.99);
  f.achieved_rate = kMeasured / secs;
  return f;
}

// ---- relay throughput on a backlog --------------------------------------------------

double MeasureRelayThroughput() {
  constexpr int kEvents = 100000, kPerTransaction = 1000, kCommunities = 200;
  const std::string topic = Unique("tiercache.bench.outbox.drain");
  CreateTopic(topic, 6);
  Conn c = Connect();
  Result<OutboxWriter> writer = OutboxWriter::Create(c.get());
  if (!writer.ok()) Die("OutboxWriter::Create: " + writer.status().ToString());
  const auto insert_start = SteadyClock::now();
  for (int t = 0; t < kEvents / kPerTransaction; ++t) {
    std::vector<OutboxEvent> events;
    for (int i = t * kPerTransaction; i < (t + 1) * kPerTransaction; ++i) {
      const std::string community = topic + "-" + std::to_string(i % kCommunities);
      events.push_back(OutboxEvent{topic, community, Payload(std::to_string(i), community, static_cast<uint64_t>(i + 1)), {}});
    }
    Write(c.get(), *writer, events);
  }
  const double insert_secs = std::chrono::duration<double>(SteadyClock::now() - insert_start).count();
  std::printf("backlog: %d events appended in %d transactions in %.2f s (%.0f events/s)\n", kEvents,
              kEvents / kPerTransaction, insert_secs, kEvents / insert_secs);

  std::unique_ptr<OutboxRelay> relay = NewRelay(nullptr);
  std::this_thread::sleep_for(2s);  // its producer connects (and gets its producer id) before the clock starts
  const auto start = SteadyClock::now();
  if (Status s = relay->Start(); !s.ok()) Die("Start: " + s.ToString());
  SteadyClock::time_point first{};
  const auto until = start + 300s;
  // The relay's count first (cheap), then the database's word for this topic.
  while (SteadyClock::now() < until) {
    const uint64_t published = relay->stats().published;
    if (published > 0 && first == SteadyClock::time_point{}) first = SteadyClock::now();
    if (published >= static_cast<uint64_t>(kEvents) && Unsent(c.get(), topic) == 0) break;
    std::this_thread::sleep_for(2ms);
  }
  const auto done = SteadyClock::now();
  const int64_t left = Unsent(c.get(), topic);
  const OutboxRelayStats st = relay->stats();
  relay->Stop();
  if (left != 0) std::fprintf(stderr, "backlog: %lld events still unsent after 300 s\n", static_cast<long long>(left));
  const double secs = std::chrono::duration<double>(done - start).count();
  // librdkafka takes about 1 s for the first message to a topic its producer
  // has not seen yet: part of the figure, and printed apart.
  std::printf("backlog: drained in %.2f s (first batch acknowledged after %.0f ms, then %.0f events/s; %llu batches, "
              "%llu publish errors)\n",
              secs, first == SteadyClock::time_point{} ? -1.0 : Ms(first - start),
              first == SteadyClock::time_point{} ? 0.0 : kEvents / std::chrono::duration<double>(done - first).count(),
              static_cast<unsigned long long>(st.batches), static_cast<unsigned long long>(st.publish_errors));
  return left == 0 && secs > 0 ? kEvents / secs : 0;
}

int Main() {
  if (Status s = MigrateOutbox(Conninfo()); !s.ok()) Die("MigrateOutbox: " + s.ToString());
  const LagFigures lag = MeasureLag();
  std::printf("lag: %.0f writes/s achieved; relay's own view (row inserted -> broker ack): p50 %.2f ms, p99 %.2f ms\n",
              lag.achieved_rate, lag.relay_p50, lag.relay_p99);
  if (lag.lost > 0) std::fprintf(stderr, "lag: %zu events never received within 60 s\n", lag.lost);
  const double throughput = MeasureRelayThroughput();
  std::printf("RESULT outbox_commit_to_publish_p50_ms %.2f ms\n", lag.p50);
  std::printf("RESULT outbox_commit_to_publish_p99_ms %.2f ms\n", lag.p99);
  std::printf("RESULT outbox_commit_to_publish_max_ms %.2f ms\n", lag.max);
  std::printf("RESULT relay_events_per_s %.0f events/s\n", throughput);
  return 0;
}

}  // namespace
}  // namespace tiercache::outbox

int main() { return tiercache::outbox::Main(); }
