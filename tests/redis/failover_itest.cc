// RedisClient while the cluster fails: a master killed (-9) under steady
// traffic, a master hung (SIGSTOP/SIGCONT), and live resharding of 200 slots.
// Every test restores a healthy 6-node cluster (3 masters with a replica each)
// before it ends, restarting a killed node from its own config file.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "redis/cluster_guard.h"
#include "redis/redis_test_util.h"
#include "tiercache/redis/redis_client.h"
#include "tiercache/redis/slot.h"

namespace tiercache::redis {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ::tiercache::testing::RedisClusterPorts;
using testing::NodeCommandText;

// Every test here changes the cluster: the fixture restores it (ClusterGuard).
class FailoverTest : public testing::ClusterRepairTest {};

constexpr auto kDeadline = 500ms;
constexpr auto kSlack = 60ms;  // scheduling slack on a loaded 2-core machine

std::unique_ptr<RedisClient> Connect(std::chrono::milliseconds timeout) {
  RedisClientOptions o = testing::ClusterOptions();
  o.command_timeout = timeout;
  o.connect_timeout = 300ms;
  auto c = RedisClient::Create(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

// Calls made by traffic threads: counts, failures, the slowest call and the
// last failure time.
struct Traffic {
  std::atomic<bool> stop{false};
  std::atomic<int64_t> calls{0}, failures{0}, max_latency_us{0};
  std::atomic<int64_t> last_failure_ns{0};
  std::mutex mu;
  std::map<std::string, int> failure_kinds;  // GUARDED_BY(mu)
  std::vector<std::thread> threads;

  void Record(const Status& s, Clock::duration took) {
    calls.fetch_add(1);
    int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(took).count();
    int64_t prev = max_latency_us.load();
    while (us > prev && !max_latency_us.compare_exchange_weak(prev, us)) {
    }
    if (!s.ok()) {
      failures.fetch_add(1);
      last_failure_ns.store(Clock::now().time_since_epoch().count());
      std::lock_guard<std::mutex> lock(mu);
      ++failure_kinds[std::string(StatusCodeName(s.code()))];
    }
  }
  // Runs SET+GET over `keys` in `n` threads until Stop().
  void Start(RedisClient* client, std::vector<std::string> keys, int n) {
    for (int t = 0; t < n; ++t) {
      threads.emplace_back([this, client, keys, t, n] {
        for (size_t i = t; !stop.load(); i = (i + n) % keys.size()) {
          auto start = Clock::now();
          auto set = client->Set(keys[i], std::to_string(i));
          Record(set.status(), Clock::now() - start);
          start = Clock::now();
          auto get = client->Get(keys[i]);
          Record(get.status(), Clock::now() - start);
        }
      });
    }
  }
  void Stop() {
    stop.store(true);
    for (auto& th : threads) th.join();
    threads.clear();
  }
  std::string Kinds() {
    std::lock_guard<std::mutex> lock(mu);
    std::string out;
    for (auto& [k, n] : failure_kinds) out += k + "=" + std::to_string(n) + " ";
    return out;
  }
};

std::vector<std::string> KeysOnEveryMaster(const std::string& prefix, int n) {
  std::vector<std::string> keys;
  for (int i = 0; i < n; ++i) keys.push_back(prefix + std::to_string(i));
  return keys;
}

// After a failover: restart the killed node from its config; it rejoins as a
// replica. Then give it back its master role (CLUSTER FAILOVER) so the
// cluster looks as before.
void RestoreKilledMaster(const testing::NodeProcessInfo& info, int port) {
  ASSERT_TRUE(testing::RestartNode(info)) << "cannot restart node " << port;
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    up = ::tiercache::testing::PortAcceptsConnections(port);
    if (!up) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(up) << "node " << port << " did not come back";
  ASSERT_TRUE(testing::WaitClusterHealthy(RedisClusterPorts(), 40)) << "cluster did not heal after restarting " << port;
  EXPECT_EQ(NodeCommandText(port, {"CLUSTER", "FAILOVER"}), "OK");
  for (int i = 0; i < 100; ++i) {
    if (testing::InfoField(NodeCommandText(port, {"INFO", "replication"}), "role") == "master") break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(testing::WaitClusterHealthy(RedisClusterPorts(), 40));
}

TEST_F(FailoverTest, MasterKillRecoversWithinNodeTimeoutPlusThreeSeconds) {
  REQUIRE_HEALTHY_CLUSTER();
  auto client = Connect(kDeadline);
  ASSERT_TRUE(client);
  std::vector<int> masters = testing::MasterPorts(RedisClusterPorts());
  ASSERT_EQ(masters.size(), 3u);
  int victim = masters[1];
  testing::NodeProcessInfo info = testing::ProcessInfoOf(victim);
  ASSERT_GT(info.pid, 0);
  ASSERT_FALSE(info.config_file.empty()) << "the node must run from a config file to be restarted";

  int replica = -1;
  for (int p : RedisClusterPorts()) {
    std::string repl = NodeCommandText(p, {"INFO", "replication"});
    if (testing::InfoField(repl, "role") == "slave" && testing::InfoField(repl, "master_port") == std::to_string(victim)) {
      replica = p;
    }
  }
  ASSERT_GT(replica, 0) << "no replica of " << victim;

  Traffic traffic;
  traffic.Start(client.get(), KeysOnEveryMaster("tc:kill:", 300), 4);
  std::this_thread::sleep_for(1s);
  int64_t failures_before = traffic.failures.load();
  auto killed_at = Clock::now();
  ASSERT_EQ(::kill(info.pid, SIGKILL), 0);
  // When does the server side finish the failover (the replica says master)?
  double promoted_s = -1;
  while (Clock::now() - killed_at < 8s) {
    if (promoted_s < 0 && testing::InfoField(NodeCommandText(replica, {"INFO", "replication"}), "role") == "master") {
      promoted_s = std::chrono::duration<double>(Clock::now() - killed_at).count();
    }
    std::this_thread::sleep_for(50ms);
  }
  traffic.Stop();

  auto last_failure = Clock::time_point(Clock::duration(traffic.last_failure_ns.load()));
  double recovery_s = traffic.failures.load() > failures_before
                          ? std::chrono::duration<double>(last_failure - killed_at).count()
                          : 0.0;
  std::printf("master kill: %lld calls, %lld failed (%s), replica promoted %.2f s and calls recovered %.2f s after "
              "the kill, slowest call %lld us\n",
              static_cast<long long>(traffic.calls.load()), static_cast<long long>(traffic.failures.load()),
              traffic.Kinds().c_str(), promoted_s, recovery_s, static_cast<long long>(traffic.max_latency_us.load()));
  RecordProperty("failed_calls", std::to_string(traffic.failures.load()));
  RecordProperty("recovery_seconds", std::to_string(recovery_s));
  EXPECT_EQ(failures_before, 0);
  ASSERT_GT(promoted_s, 0) << "the replica was not promoted within 8 s";
  // The goal is cluster-node-timeout + 3 s from the kill. The server's own
  // election can exceed that on a loaded machine; the client's share is
  // bounded separately: calls work again within 1 s of the promotion.
  EXPECT_LE(recovery_s, std::max(2.0 + 3.0, promoted_s + 1.0));
  EXPECT_LE(recovery_s - promoted_s, 1.0);
  EXPECT_LE(traffic.max_latency_us.load(), std::chrono::duration_cast<std::chrono::microseconds>(kDeadline + kSlack).count());
  // Steady again: every key answers.
  for (const auto& key : KeysOnEveryMaster("tc:kill:", 300)) {
    auto r = client->Get(key);
    ASSERT_TRUE(r.ok()) << key << ": " << r.status().ToString();
  }
  RestoreKilledMaster(info, victim);
}

TEST_F(FailoverTest, HungMasterFailsItsSlotsByDeadlineOnly) {
  REQUIRE_HEALTHY_CLUSTER();
  auto client = Connect(300ms);
  ASSERT_TRUE(client);
  std::vector<int> masters = testing::MasterPorts(RedisClusterPorts());
  int victim = masters[2];
  testing::NodeProcessInfo info = testing::ProcessInfoOf(victim);
  ASSERT_GT(info.pid, 0);
  std::vector<std::string> hung_keys, other_keys;
  for (int i = 0; hung_keys.size() < 100 || other_keys.size() < 100; ++i) {
    std::string key = "tc:hang:" + std::to_string(i);
    auto owner = client->SlotOwnerForTesting(KeySlot(key));
    ASSERT_TRUE(owner.ok());
    (owner->port == victim ? hung_keys : other_keys).push_back(key);
  }
  hung_keys.resize(100);
  other_keys.resize(100);
  Traffic hung, others;
  hung.Start(client.get(), hung_keys, 2);
  others.Start(client.get(), other_keys, 2);
  std::this_thread::sleep_for(500ms);
  ASSERT_EQ(::kill(info.pid, SIGSTOP), 0);
  std::this_thread::sleep_for(1500ms);  // below cluster-node-timeout: no failover
  ASSERT_EQ(::kill(info.pid, SIGCONT), 0);
  auto resumed_at = Clock::now();
  int64_t hung_failures_at_resume = hung.failures.load();
  std::this_thread::sleep_for(2500ms);
  hung.Stop();
  others.Stop();
  auto last_failure = Clock::time_point(Clock::duration(hung.last_failure_ns.load()));
  double recovery_s = std::chrono::duration<double>(last_failure - resumed_at).count();
  std::printf("hung master: its keys %lld calls, %lld failed (%s), slowest %lld us, recovered %.2f s after SIGCONT; "
              "other keys %lld calls, %lld failed, slowest %lld us\n",
              static_cast<long long>(hung.calls.load()), static_cast<long long>(hung.failures.load()),
              hung.Kinds().c_str(), static_cast<long long>(hung.max_latency_us.load()), recovery_s,
              static_cast<long long>(others.calls.load()), static_cast<long long>(others.failures.load()),
              static_cast<long long>(others.max_latency_us.load()));
  EXPECT_GT(hung_failures_at_resume, 0) << "calls to the stopped master should have failed";
  EXPECT_EQ(others.failures.load(), 0) << others.Kinds();
  EXPECT_LE(hung.max_latency_us.load(), std::chrono::duration_cast<std::chrono::microseconds>(300ms + kSlack).count());
  EXPECT_LE(recovery_s, 1.0);
  for (const auto& key : hung_keys) {
    auto r = client->Get(key);
    ASSERT_TRUE(r.ok()) << key << ": " << r.status().ToString();
  }
  EXPECT_TRUE(testing::WaitClusterHealthy(RedisClusterPorts(), 30));
}

bool Reshard(int any_port, const std::string& from_id, const std::string& to_id, int slots) {
  std::string cmd = "timeout 60 redis-cli --cluster reshard 127.0.0.1:" + std::to_string(any_port) +
                    " --cluster-from " + from_id + " --cluster-to " + to_id + " --cluster-slots " +
                    std::to_string(slots) + " --cluster-yes --cluster-pipeline 2 >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

TEST_F(FailoverTest, LiveReshardingOfTwoHundredSlotsLosesNothing) {
  REQUIRE_HEALTHY_CLUSTER();
  testing::ClusterFixGuard fix_on_exit(RedisClusterPorts());
  auto client = Connect(2000ms);
  ASSERT_TRUE(client);
  std::vector<int> masters = testing::MasterPorts(RedisClusterPorts());
  std::string from_id = testing::NodeId(masters[0]), to_id = testing::NodeId(masters[1]);
  // redis-cli moves the source's lowest slots first: most keys live in the
  // 200 slots about to move (so calls meet migrating slots: ASK/MOVED), the
  // rest elsewhere. One writer per key range, so the model is exact.
  std::set<int> moving;
  for (int slot = 0; slot < kSlotCount && moving.size() < 200; ++slot) {
    auto owner = client->SlotOwnerForTesting(static_cast<uint16_t>(slot));
    ASSERT_TRUE(owner.ok());
    if (owner->port == masters[0]) moving.insert(slot);
  }
  constexpr int kWriters = 3, kKeysPerWriter = 600;
  std::vector<std::vector<std::string>> writer_keys(kWriters);
  for (int w = 0, i = 0; w < kWriters; ++w) {
    while (static_cast<int>(writer_keys[w].size()) < kKeysPerWriter) {
      std::string key = "tc:reshard:" + std::to_string(w) + ":" + std::to_string(i++);
      bool in_moving = moving.count(KeySlot(key)) > 0;
      if (in_moving || writer_keys[w].size() % 4 == 3) writer_keys[w].push_back(key);
    }
  }
  std::vector<std::map<std::string, std::string>> models(kWriters);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> errors{0}, calls{0};
  std::mutex err_mu;
  std::string first_error;
  auto fail = [&](const std::string& what) {
    errors.fetch_add(1);
    std::lock_guard<std::mutex> lock(err_mu);
    if (first_error.empty()) first_error = what;
  };
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      auto& model = models[w];
      for (int round = 0; !stop.load(); ++round) {
        for (int i = 0; i < kKeysPerWriter && !stop.load(); ++i) {
          const std::string& key = writer_keys[w][i];
          std::string value = std::to_string(round) + ":" + std::to_string(i);
          auto set = client->Set(key, value);
          calls.fetch_add(1);
          if (!set.ok()) {
            fail("SET " + key + ": " + set.status().ToString());
          } else {
            model[key] = value;
          }
          auto get = client->Get(key);
          calls.fetch_add(1);
          if (!get.ok()) {
            fail("GET " + key + ": " + get.status().ToString());
          } else if (get->value_or("<nil>") != model[key]) {
            fail("GET " + key + " = " + get->value_or("<nil>") + ", model " + model[key]);
          }
        }
      }
    });
  }
  std::this_thread::sleep_for(500ms);
  auto before = client->Stats();
  bool resharded = Reshard(masters[0], from_id, to_id, 200);
  std::this_thread::sleep_for(300ms);
  bool back = Reshard(masters[0], to_id, from_id, 200);
  std::this_thread::sleep_for(300ms);
  stop.store(true);
  for (auto& t : threads) t.join();
  auto after = client->Stats();
  std::printf("resharding 2 x 200 slots: %lld calls, %lld errors; %llu MOVED, %llu ASK, %llu retries followed\n",
              static_cast<long long>(calls.load()), static_cast<long long>(errors.load()),
              static_cast<unsigned long long>(after.moved - before.moved),
              static_cast<unsigned long long>(after.ask - before.ask),
              static_cast<unsigned long long>(after.retries - before.retries));
  EXPECT_TRUE(resharded);
  EXPECT_TRUE(back);
  EXPECT_EQ(errors.load(), 0) << first_error;
  EXPECT_GT(after.moved - before.moved, 0u);
  // The data matches the model, read back through a fresh client too.
  auto fresh = Connect(2000ms);
  ASSERT_TRUE(fresh);
  for (const auto& model : models) {
    std::vector<std::string> keys;
    for (const auto& [k, v] : model) keys.push_back(k);
    auto values = fresh->MGet(keys);
    ASSERT_TRUE(values.ok()) << values.status().ToString();
    for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ((*values)[i].value_or("<nil>"), model.at(keys[i])) << keys[i];
  }
  EXPECT_TRUE(testing::WaitClusterHealthy(RedisClusterPorts(), 30));
}

}  // namespace
}  // namespace tiercache::redis
