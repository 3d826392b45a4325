// The invalidation pipeline under faults, on the local broker and Redis
// Cluster, with consumers in processes of their own:
//   * a consumer killed with SIGKILL mid-batch and restarted: every published
//     event is applied (checked against the list of what was published), no
//     key regressed;
//   * the consumer group rebalancing 2 -> 3 -> 2 under steady events: 0 lost,
//     0 regressed;
//   * the broker stopped (SIGSTOP) during steady publishing, then resumed:
//     the publisher and the consumer go on, 0 lost; an L1 follower fences its
//     L1 while it cannot be sure and trusts it again after;
//   * the broker killed (SIGKILL) and restarted by the project's script during
//     steady publishing: 0 lost.
//
// Worker processes are copies of this program: a static initializer sees
// TIERCACHE_CONSUMER_WORKER, runs a consumer until SIGTERM (graceful: leaves
// the group) or SIGKILL, and exits before GoogleTest runs.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/forwarding_l2_store.h"
#include "common/kafka_test_util.h"
#include "common/test_env.h"
#include "redis/redis_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/envelope.h"
#include "tiercache/events.h"
#include "tiercache/kafka/invalidation_consumer.h"
#include "tiercache/kafka/l1_follower.h"
#include "tiercache/kafka/publisher.h"
#include "tiercache/l2_store.h"
#include "tiercache/redis/redis_client.h"

extern char** environ;

namespace tiercache::kafka {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

std::string KeyOf(const std::string& community, const std::string& post) {
  return "fault:{" + community + "}:" + post;
}

Result<InvalidationTargets> MapPost(const InvalidationEvent& e) {
  return InvalidationTargets{{KeyOf(e.partition_key, e.entity_id)}, {}};
}

// The worker's L2: each batch's apply takes a while, so a kill lands between
// taking a batch and finishing its apply.
class SlowApplies final : public testing::ForwardingL2Store {
 public:
  using ForwardingL2Store::ForwardingL2Store;
  std::vector<Result<FenceOutcome>> InvalidateMany(const std::vector<InvalidateRequest>& requests,
                                                   milliseconds fence_ttl, milliseconds timeout) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return inner_->InvalidateMany(requests, fence_ttl, timeout);
  }
};

// ---- the worker process ---------------------------------------------------------

std::atomic<bool> g_term{false};
void OnTerm(int) { g_term.store(true); }

int ConsumerWorker() {
  signal(SIGTERM, OnTerm);
  Result<std::unique_ptr<redis::RedisClient>> client = redis::RedisClient::Create(redis::testing::ClusterOptions());
  if (!client.ok()) return 2;
  CacheOptions co;
  co.l2 = std::make_shared<SlowApplies>(MakeRedisL2Store(std::shared_ptr<redis::RedisClient>(std::move(*client))));
  co.l2_timeout = std::chrono::milliseconds(1000);
  auto cache = Cache::Create(co);
  PublisherOptions po;
  po.brokers = testing::KafkaBootstrap();
  auto publisher = Publisher::Create(po);
  if (!cache.ok() || !publisher.ok()) return 3;
  InvalidationConsumerOptions io;
  io.brokers = testing::KafkaBootstrap();
  io.group_id = Env("FAULT_GROUP");
  io.topics = {Env("FAULT_TOPIC")};
  io.dead_letter_topic = Env("FAULT_TOPIC") + ".dlq";
  io.max_batch = 100;
  io.session_timeout = 6000ms;
  // Frequent commits: an offset stored before its apply (the bug this file
  // guards against) would be committed before a kill lands.
  io.auto_commit_interval = 20ms;
  auto consumer = InvalidationConsumer::Create(io, cache->get(), &MapPost, publisher->get());
  if (!consumer.ok() || !(*consumer)->Start().ok()) return 4;
  int ticks = 0;
  while (!g_term.load()) {
    std::this_thread::sleep_for(10ms);
    if (!Env("FAULT_VERBOSE").empty() && ++ticks % 100 == 0) {
      const InvalidationConsumerStats st = (*consumer)->stats();
      std::fprintf(stderr, "worker %d: events %llu batches %llu retries %llu rebalances %llu\n", getpid(),
                   (unsigned long long)st.events, (unsigned long long)st.batches,
                   (unsigned long long)st.apply_retries, (unsigned long long)st.rebalances);
    }
  }
  (*consumer)->Stop();
  return 0;
}

struct WorkerHook {
  WorkerHook() {
    if (Env("TIERCACHE_CONSUMER_WORKER").empty()) return;
    const int code = ConsumerWorker();
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(code);
  }
} worker_hook;

// ---- the parent -----------------------------------------------------------------

pid_t SpawnWorker(const std::string& topic, const std::string& group) {
  std::vector<std::string> env = {"TIERCACHE_CONSUMER_WORKER=1", "FAULT_TOPIC=" + topic, "FAULT_GROUP=" + group};
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe";
  char* argv[] = {exe.data(), nullptr};
  pid_t pid = -1;
  if (posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, envp.data()) != 0) return -1;
  return pid;
}

void Reap(pid_t pid, int sig) {
  if (pid <= 0) return;
  ::kill(pid, sig);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

class FaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("kafka", testing::KafkaPort());
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    Result<std::unique_ptr<redis::RedisClient>> c = redis::RedisClient::Create(redis::testing::ClusterOptions());
    ASSERT_TRUE(c.ok());
    client_ = std::shared_ptr<redis::RedisClient>(std::move(*c));
    topic_ = testing::UniqueKafkaName("tiercache.test.faults");
    group_ = topic_ + ".group";
    ASSERT_EQ(testing::CreateTopic(topic_, 6), "");
    ASSERT_EQ(testing::CreateTopic(topic_ + ".dlq", 1), "");
    PublisherOptions po;
    po.brokers = testing::KafkaBootstrap();
    po.delivery_timeout = 60s;
    auto p = Publisher::Create(po);
    ASSERT_TRUE(p.ok());
    publisher_ = std::move(*p);
    tag_ = testing::UniqueKafkaName("f");
  }
  void TearDown() override {
    StopPublishing();
    for (pid_t pid : workers_) Reap(pid, SIGKILL);
  }

  // Publishes on a thread of its own until StopPublishing (or TearDown): every
  // 20 ms the next version of `seq_keys` keys, and one new key at version 1.
  void StartPublishing(int seq_keys) {
    stop_publishing_.store(false);
    producer_ = std::thread([this, seq_keys] {
      for (uint64_t v = 1; !stop_publishing_.load(); ++v) {
        for (int k = 0; k < seq_keys; ++k) PublishEvent(tag_ + "-" + std::to_string(k), "seq" + std::to_string(k), v);
        PublishEvent(tag_ + "-u", "u" + std::to_string(v), 1);
        std::this_thread::sleep_for(20ms);
      }
    });
  }
  void StopPublishing() {
    stop_publishing_.store(true);
    if (producer_.joinable()) producer_.join();
  }

  pid_t Spawn() {
    pid_t pid = SpawnWorker(topic_, group_);
    EXPECT_GT(pid, 0);
    workers_.push_back(pid);
    return pid;
  }
  void Kill(pid_t pid, int sig) {
    Reap(pid, sig);
    workers_.erase(std::remove(workers_.begin(), workers_.end(), pid), workers_.end());
  }

  // Publishes one event; records it as published once the broker acked it.
  void PublishEvent(const std::string& community, const std::string& post, uint64_t version) {
    InvalidationEvent e;
    e.event_id = community + "/" + post + "@" + std::to_string(version);
    e.type = "post.updated";
    e.entity_id = post;
    e.partition_key = community;
    e.version = version;
    e.occurred_at = std::chrono::system_clock::now();
    const std::string key = KeyOf(community, post);
    Status s = publisher_->Publish(topic_, community, *EncodeEvent(e), [this, key, version](const Result<Delivery>& d) {
      std::lock_guard<std::mutex> l(mu_);
      if (d.ok()) {
        uint64_t& v = acked_[key];
        v = std::max(v, version);
      } else {
        ++failed_;
      }
    });
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  int64_t TombstoneVersion(const std::string& key) {
    Result<std::optional<std::string>> raw = client_->Get(key);
    if (!raw.ok() || !raw->has_value()) return -1;
    Result<EnvelopeView> e = DecodeEnvelope(**raw);
    if (!e.ok() || e->kind != EntryKind::kTombstone) return -1;
    return static_cast<int64_t>(e->version);
  }

  // The highest version applied to `key`: its fence's version floor
  // ("<epoch>|<8-byte big-endian floor>", l2_store.h), which outlives the
  // tombstone (tombstone_ttl), or -1.
  int64_t AppliedVersion(const std::string& key) {
    Result<std::optional<std::string>> raw = client_->Get(FenceKeyFor(key));
    if (!raw.ok() || !raw->has_value() || (*raw)->size() < 9 || (**raw)[(*raw)->size() - 9] != '|') {
      return TombstoneVersion(key);
    }
    uint64_t floor = 0;
    for (size_t i = (*raw)->size() - 8; i < (*raw)->size(); ++i) floor = (floor << 8) | static_cast<uint8_t>((**raw)[i]);
    return std::max(static_cast<int64_t>(floor), TombstoneVersion(key));
  }

  // Waits until every acked key was applied at its highest acked version;
  // returns the keys that are not (lost or regressed).
  std::vector<std::string> WaitAllApplied(std::chrono::seconds limit) {
    std::map<std::string, uint64_t> expect;
    {
      std::lock_guard<std::mutex> l(mu_);
      expect = acked_;
    }
    std::vector<std::string> missing;
    const auto deadline = SteadyClock::now() + limit;
    do {
      missing.clear();
      for (const auto& [key, v] : expect) {
        if (AppliedVersion(key) != static_cast<int64_t>(v)) missing.push_back(key);
      }
      if (missing.empty()) break;
      std::this_thread::sleep_for(200ms);
    } while (SteadyClock::now() < deadline);
    for (size_t i = 0; i < missing.size() && i < 5; ++i) {
      std::printf("  %s: acked up to v%llu, applied up to %lld\n", missing[i].c_str(),
                  static_cast<unsigned long long>(expect[missing[i]]), static_cast<long long>(AppliedVersion(missing[i])));
    }
    return missing;
  }

  std::shared_ptr<redis::RedisClient> client_;
  std::unique_ptr<Publisher> publisher_;
  std::string topic_, group_, tag_;
  std::vector<pid_t> workers_;
  std::thread producer_;
  std::atomic<bool> stop_publishing_{false};
  std::mutex mu_;
  std::map<std::string, uint64_t> acked_;  // GUARDED_BY(mu_)
  int failed_ = 0;                         // GUARDED_BY(mu_)
};

TEST_F(FaultsTest, AConsumerKilledMidBatchAndRestartedAppliesEveryEvent) {
  // 1,500 keys with one event each, plus 30 keys with 10 versions each.
  for (int i = 0; i < 1500; ++i) PublishEvent(tag_ + "-" + std::to_string(i % 40), "u" + std::to_string(i), 1);
  for (uint64_t v = 1; v <= 10; ++v) {
    for (int k = 0; k < 30; ++k) PublishEvent(tag_ + "-" + std::to_string(k), "seq" + std::to_string(k), v);
  }
  ASSERT_TRUE(publisher_->Flush(30s).ok());
  pid_t first = Spawn();
  // Let it apply part of the stream, then kill it without warning.
  const std::string probe = KeyOf(tag_ + "-0", "u0");
  const auto until = SteadyClock::now() + 30s;
  while (TombstoneVersion(probe) < 0 && SteadyClock::now() < until) std::this_thread::sleep_for(5ms);
  // Mid-stream: the backlog takes a few seconds of (slow) applies.
  std::this_thread::sleep_for(400ms);
  Kill(first, SIGKILL);
  Spawn();  // the same group takes over from the committed offsets
  const std::vector<std::string> missing = WaitAllApplied(60s);
  EXPECT_TRUE(missing.empty()) << missing.size() << " keys lost or regressed after the kill, e.g. "
                               << (missing.empty() ? "" : missing[0]);
}

TEST_F(FaultsTest, RebalancingTwoThreeTwoUnderSteadyEventsLosesAndRegressesNothing) {
  Spawn();
  pid_t second = Spawn();
  StartPublishing(/*seq_keys=*/20);
  std::this_thread::sleep_for(3s);
  Spawn();  // 2 -> 3
  std::this_thread::sleep_for(4s);
  Kill(second, SIGTERM);  // 3 -> 2, leaving the group cleanly
  std::this_thread::sleep_for(4s);
  StopPublishing();
  ASSERT_TRUE(publisher_->Flush(30s).ok());
  const std::vector<std::string> missing = WaitAllApplied(60s);
  EXPECT_TRUE(missing.empty()) << missing.size() << " keys lost or regressed across the rebalances, e.g. "
                               << (missing.empty() ? "" : missing[0]);
  std::lock_guard<std::mutex> l(mu_);
  EXPECT_EQ(failed_, 0);
}

TEST_F(FaultsTest, ABrokerStoppedDuringSteadyPublishingLosesNothingAndFencesL1MeanwhileOnly) {
  const int broker = testing::KafkaBrokerPid();
  ASSERT_GT(broker, 0) << "no local Kafka broker process found";
  Spawn();
  // A pod with an L1 follower, in this process.
  CacheOptions co;
  co.l2 = MakeRedisL2Store(client_);
  auto cache = Cache::Create(co);
  ASSERT_TRUE(cache.ok());
  L1FollowerOptions fo;
  fo.brokers = testing::KafkaBootstrap();
  fo.topics = {topic_};
  fo.max_lag = 500ms;
  fo.check_interval = 100ms;
  auto follower = L1Follower::Create(fo, cache->get(), &MapPost);
  ASSERT_TRUE(follower.ok() && (*follower)->Start().ok());
  const auto trusted_by = SteadyClock::now() + 30s;
  while (!(*cache)->l1_trusted() && SteadyClock::now() < trusted_by) std::this_thread::sleep_for(20ms);
  ASSERT_TRUE((*cache)->l1_trusted());

  StartPublishing(/*seq_keys=*/10);
  std::this_thread::sleep_for(1s);
  ASSERT_EQ(::kill(broker, SIGSTOP), 0);
  const auto stopped_at = SteadyClock::now();
  bool fenced = false;
  while (SteadyClock::now() - stopped_at < 4s) {
    if (!(*cache)->l1_trusted() && !fenced) {
      fenced = true;
      std::printf("L1 fenced %lld ms after SIGSTOP of the broker\n",
                  static_cast<long long>(
                      std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - stopped_at).count()));
    }
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(::kill(broker, SIGCONT), 0);
  EXPECT_TRUE(fenced) << "L1 stayed trusted while the broker was stopped";
  std::this_thread::sleep_for(2s);
  StopPublishing();
  ASSERT_TRUE(publisher_->Flush(60s).ok());
  const std::vector<std::string> missing = WaitAllApplied(60s);
  EXPECT_TRUE(missing.empty()) << missing.size() << " keys lost or regressed around the broker stop, e.g. "
                               << (missing.empty() ? "" : missing[0]);
  const auto again_by = SteadyClock::now() + 30s;
  while (!(*cache)->l1_trusted() && SteadyClock::now() < again_by) std::this_thread::sleep_for(20ms);
  EXPECT_TRUE((*cache)->l1_trusted()) << "L1 never trusted again after the broker came back";
  L1FollowerStats fs = (*follower)->stats();
  for (const auto& [cause, n] : fs.fences_by_cause) std::printf("L1 fences: %s x%llu\n", cause.c_str(), (unsigned long long)n);
  std::lock_guard<std::mutex> l(mu_);
  EXPECT_EQ(failed_, 0) << "publishes failed while the broker was stopped (delivery_timeout 60 s)";
}

TEST_F(FaultsTest, ABrokerKilledAndRestartedDuringSteadyPublishingLosesNothing) {
  const int broker = testing::KafkaBrokerPid();
  ASSERT_GT(broker, 0) << "no local Kafka broker process found";
  Spawn();
  StartPublishing(/*seq_keys=*/10);
  std::this_thread::sleep_for(1s);
  ASSERT_EQ(::kill(broker, SIGKILL), 0);
  std::this_thread::sleep_for(1s);
  const auto restart = SteadyClock::now();
  ASSERT_TRUE(testing::ServicesUp()) << "scripts/services.sh up could not restart the broker";
  std::printf("broker restarted in %lld ms\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - restart).count()));
  std::this_thread::sleep_for(2s);
  StopPublishing();
  ASSERT_TRUE(publisher_->Flush(60s).ok()) << "messages still unacknowledged a minute after the restart";
  const std::vector<std::string> missing = WaitAllApplied(90s);
  EXPECT_TRUE(missing.empty()) << missing.size() << " keys lost or regressed around the broker kill, e.g. "
                               << (missing.empty() ? "" : missing[0]);
  std::lock_guard<std::mutex> l(mu_);
  EXPECT_EQ(failed_, 0) << "publishes failed around the broker kill (delivery_timeout 60 s)";
}

}  // namespace
}  // namespace tiercache::kafka
