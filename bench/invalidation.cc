// make bench-invalidation: the Kafka invalidation pipeline on the local
// broker and Redis Cluster.
//
//   invalidation_lag_*     publish -> the event applied to L2 by the group
//                          consumer AND dropped from all 3 pods' L1 by their
//                          followers, at 500 events/s (3 in-process pods).
//   consumer_apply_events_per_s  one consumer applying a backlog (batched
//                          Lua per slot), first to last event handled.
//   consumer_apply_vs_seed the same backlog applied the seed's way (per event
//                          GET version, DEL post, DEL feed page 1, SET
//                          version: 4 round trips) by an equal consumer loop,
//                          measured in the same run.
// Ends with RESULT lines.
#include <librdkafka/rdkafka.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tiercache/cache.h"
#include "tiercache/events.h"
#include "tiercache/kafka/invalidation_consumer.h"
#include "tiercache/kafka/l1_follower.h"
#include "tiercache/kafka/publisher.h"
#include "tiercache/l2_store.h"
#include "tiercache/redis/redis_client.h"

namespace tiercache::kafka {
namespace {

using namespace std::chrono_literals;
using SysClock = std::chrono::system_clock;
using SteadyClock = std::chrono::steady_clock;

std::string Brokers() {
  const char* p = std::getenv("TIERCACHE_KAFKA_PORT");
  return std::string("127.0.0.1:") + (p ? p : "9092");
}

std::shared_ptr<redis::RedisClient> RedisCluster() {
  const char* base_env = std::getenv("TIERCACHE_REDIS_PORT_BASE");
  const int base = base_env ? std::atoi(base_env) : 7000;
  redis::RedisClientOptions o;
  for (int i = 0; i < 3; ++i) o.seeds.push_back(redis::Endpoint{"127.0.0.1", base + i});
  Result<std::unique_ptr<redis::RedisClient>> c = redis::RedisClient::Create(o);
  if (!c.ok()) {
    std::fprintf(stderr, "redis: %s\n", c.status().ToString().c_str());
    std::exit(1);
  }
  return std::shared_ptr<redis::RedisClient>(std::move(*c));
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
  rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), partitions, 1, errstr, sizeof(errstr));
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &nt, 1, nullptr, q);
  if (rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000)) rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
  rd_kafka_destroy(rk);
}

std::string PostKey(const InvalidationEvent& e) { return "post:{community:" + e.partition_key + "}:" + e.entity_id; }
Result<InvalidationTargets> MapPost(const InvalidationEvent& e) { return InvalidationTargets{{PostKey(e)}, {}}; }

std::string Event(const std::string& id, const std::string& community, const std::string& post, uint64_t v) {
  InvalidationEvent e;
  e.event_id = id;
  e.type = "post.updated";
  e.entity_id = post;
  e.partition_key = community;
  e.version = v;
  e.occurred_at = SysClock::now();
  return *EncodeEvent(e);
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

std::unique_ptr<Cache> NewCache(std::shared_ptr<redis::RedisClient> client) {
  CacheOptions co;
  co.l2 = MakeRedisL2Store(std::move(client));
  auto c = Cache::Create(co);
  if (!c.ok()) std::exit(1);
  return std::move(*c);
}

// ---- lag at 500 events/s through 3 pods ----------------------------------------

void MeasureLag(Publisher& publisher, double* p50, double* p99, double* max) {
  const std::string topic = Unique("tiercache.bench.lag");
  CreateTopic(topic, 6);
  CreateTopic(topic + ".dlq", 1);
  const std::string group = topic + ".group";
  struct Times {
    SysClock::time_point published{}, applied{};
    std::vector<SysClock::time_point> dropped;
  };
  std::mutex mu;
  std::map<std::string, Times> times;  // event id ->
  struct Pod {
    std::unique_ptr<Cache> cache;
    std::unique_ptr<InvalidationConsumer> consumer;
    std::unique_ptr<L1Follower> follower;
  };
  std::vector<Pod> pods(3);
  for (Pod& pod : pods) {
    pod.cache = NewCache(RedisCluster());
    InvalidationConsumerOptions io;
    io.brokers = Brokers();
    io.group_id = group;
    io.topics = {topic};
    io.dead_letter_topic = topic + ".dlq";
    io.session_timeout = 6000ms;
    io.on_handled = [&](const HandledEvent& h) {
      std::lock_guard<std::mutex> l(mu);
      times[h.event.event_id].applied = h.applied_at;
    };
    pod.consumer = std::move(*InvalidationConsumer::Create(io, pod.cache.get(), &MapPost, &publisher));
    L1FollowerOptions fo;
    fo.brokers = Brokers();
    fo.topics = {topic};
    fo.on_dropped = [&](const InvalidationEvent& e, SysClock::time_point at) {
      std::lock_guard<std::mutex> l(mu);
      times[e.event_id].dropped.push_back(at);
    };
    pod.follower = std::move(*L1Follower::Create(fo, pod.cache.get(), &MapPost));
    (void)pod.consumer->Start();
    (void)pod.follower->Start();
  }
  // Warm-up: the group settles and the followers catch up.
  const auto ready_by = SteadyClock::now() + 30s;
  for (int i = 0; SteadyClock::now() < ready_by; ++i) {
    (void)publisher.PublishAndWait(topic, "warm" + std::to_string(i % 12), Event("warm" + std::to_string(i), "warm" + std::to_string(i % 12), "w", 1), 5s);
    std::this_thread::sleep_for(50ms);
    bool trusted = true;
    for (Pod& p : pods) trusted = trusted && p.cache->l1_trusted();
    uint64_t applied = 0;
    for (Pod& p : pods) applied += p.consumer->stats().events;
    if (trusted && applied >= 24) break;
  }
  {
    std::lock_guard<std::mutex> l(mu);
    times.clear();
  }
  // 500 events/s for 10 s.
  const int kEvents = 5000;
  const auto start = SteadyClock::now();
  for (int i = 0; i < kEvents; ++i) {
    std::this_thread::sleep_until(start + std::chrono::microseconds(2000 * i));
    const std::string id = "lag" + std::to_string(i);
    const std::string community = topic + "-" + std::to_string(i % 50);
    {
      std::lock_guard<std::mutex> l(mu);
      times[id].published = SysClock::now();
    }
    (void)publisher.Publish(topic, community, Event(id, community, std::to_string(i), 1), {});
  }
  (void)publisher.Flush(30s);
  const auto done_by = SteadyClock::now() + 30s;
  while (SteadyClock::now() < done_by) {
    std::lock_guard<std::mutex> l(mu);
    size_t complete = 0;
    for (const auto& [id, t] : times) complete += t.applied != SysClock::time_point{} && t.dropped.size() >= 3;
    if (complete >= static_cast<size_t>(kEvents)) break;
  }
  std::vector<double> lags;
  size_t incomplete = 0;
  {
    std::lock_guard<std::mutex> l(mu);
    for (const auto& [id, t] : times) {
      if (t.published == SysClock::time_point{}) continue;
      if (t.applied == SysClock::time_point{} || t.dropped.size() < 3) {
        ++incomplete;
        continue;
      }
      SysClock::time_point last = t.applied;
      for (auto d : t.dropped) last = std::max(last, d);
      lags.push_back(std::chrono::duration<double, std::milli>(last - t.published).count());
    }
  }
  if (incomplete > 0) std::fprintf(stderr, "lag: %zu events never completed on every pod\n", incomplete);
  *p50 = Percentile(lags, 0.50);
  *p99 = Percentile(lags, 0.99);
  *max = Percentile(lags, 1.0);
  for (Pod& p : pods) {
    p.follower->Stop();
    p.consumer->Stop();
  }
}

// ---- apply throughput: ours vs the seed's ---------------------------------------

// Publishes a backlog of `n` events (distinct posts over 200 communities).
std::string Backlog(Publisher& publisher, int n) {
  const std::string topic = Unique("tiercache.bench.apply");
  CreateTopic(topic, 6);
  CreateTopic(topic + ".dlq", 1);
  const std::string run = Unique("run");  // keys of this run only: nothing from an earlier run is there
  for (int i = 0; i < n; ++i) {
    const std::string community = run + "-" + std::to_string(i % 200);
    while (publisher.Publish(topic, community, Event("a" + std::to_string(i), community, std::to_string(i), 1), {})
               .IsResourceExhausted()) {
      std::this_thread::sleep_for(1ms);
    }
  }
  (void)publisher.Flush(60s);
  return topic;
}

double OursPerSecond(Publisher& publisher, const std::string& topic, int n) {
  auto cache = NewCache(RedisCluster());
  std::atomic<int> handled{0};
  std::atomic<int64_t> first_ns{0}, last_ns{0};
  InvalidationConsumerOptions io;
  io.brokers = Brokers();
  io.group_id = topic + ".ours";
  io.topics = {topic};
  io.dead_letter_topic = topic + ".dlq";
  io.max_batch = 2000;
  io.on_handled = [&](const HandledEvent&) {
    const int64_t now = SteadyClock::now().time_since_epoch().count();
    if (handled.fetch_add(1) == 0) first_ns = now;
    last_ns = now;
  };
  auto consumer = std::move(*InvalidationConsumer::Create(io, cache.get(), &MapPost, &publisher));
  (void)consumer->Start();
  const auto until = SteadyClock::now() + 120s;
  while (handled.load() < n && SteadyClock::now() < until) std::this_thread::sleep_for(5ms);
  consumer->Stop();
  const double secs = static_cast<double>(last_ns.load() - first_ns.load()) / 1e9;
  std::fprintf(stderr, "ours: %d events in %.3f s\n", handled.load(), secs);
  return secs > 0 ? handled.load() / secs : 0;
}

// The seed's consumer loop: poll a message, parse it, then four round trips.
double SeedPerSecond(const std::string& topic, int n) {
  auto client = RedisCluster();
  char errstr[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{{"bootstrap.servers", Brokers()},
                                                                    {"group.id", topic + ".seed"},
                                                                    {"auto.offset.reset", "earliest"},
                                                                    {"fetch.wait.max.ms", "5"}}) {
    rd_kafka_conf_set(conf, k.c_str(), v.c_str(), errstr, sizeof(errstr));
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t* sub = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(sub, topic.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(rk, sub);
  rd_kafka_topic_partition_list_destroy(sub);
  int handled = 0;
  SteadyClock::time_point first{}, last{};
  const auto until = SteadyClock::now() + 300s;
  while (handled < n && SteadyClock::now() < until) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 100);
    if (m == nullptr) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      Result<InvalidationEvent> e = ParseEvent(std::string_view(static_cast<const char*>(m->payload), m->len));
      if (e.ok()) {
        const std::string post = PostKey(*e);
        const std::string version_key = post + ":version";
        Result<std::optional<std::string>> seen = client->Get(version_key);
        const uint64_t current = seen.ok() && seen->has_value() ? std::stoull(**seen) : 0;
        if (e->version > current) {
          (void)client->Del({post});
          (void)client->Del({"feed:{community:" + e->partition_key + "}:page:1"});
          (void)client->Set(version_key, std::to_string(e->version), redis::SetOptions());
        }
        if (handled++ == 0) first = SteadyClock::now();
        last = SteadyClock::now();
      }
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  const double secs = std::chrono::duration<double>(last - first).count();
  std::fprintf(stderr, "seed: %d events in %.3f s\n", handled, secs);
  return secs > 0 ? handled / secs : 0;
}

int Main() {
  PublisherOptions po;
  po.brokers = Brokers();
  po.linger = 0ms;
  auto publisher = Publisher::Create(po);
  if (!publisher.ok()) {
    std::fprintf(stderr, "publisher: %s\n", publisher.status().ToString().c_str());
    return 1;
  }
  double p50 = 0, p99 = 0, max = 0;
  MeasureLag(**publisher, &p50, &p99, &max);
  const int kBacklog = 30000;
  const std::string topic = Backlog(**publisher, kBacklog);
  const double ours = OursPerSecond(**publisher, topic, kBacklog);
  const double seed = SeedPerSecond(topic, kBacklog);
  std::printf("RESULT invalidation_lag_p50_ms %.2f ms\n", p50);
  std::printf("RESULT invalidation_lag_p99_ms %.2f ms\n", p99);
  std::printf("RESULT invalidation_lag_max_ms %.2f ms\n", max);
  std::printf("RESULT consumer_apply_events_per_s %.0f events/s\n", ours);
  std::printf("RESULT seed_apply_events_per_s %.0f events/s\n", seed);
  std::printf("RESULT consumer_apply_vs_seed %.2f x\n", seed > 0 ? ours / seed : 0);
  return 0;
}

}  // namespace
}  // namespace tiercache::kafka

int main() { return tiercache::kafka::Main(); }
