// RedisClient against the local 6-node cluster: routing, redirections (MOVED
// repairs a corrupted map; ASK during a real slot migration; TRYAGAIN
// retried until the slot settles), scripts, pipelines, async calls, write
// coalescing, errors naming the node, and no leaked fds/threads.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "redis/cluster_guard.h"
#include "redis/redis_test_util.h"
#include "tiercache/redis/redis_client.h"
#include "tiercache/redis/slot.h"

namespace tiercache::redis {
namespace {

using namespace std::chrono_literals;
using ::tiercache::testing::RedisClusterPorts;
using testing::ClusterOptions;
using testing::NodeCommandText;

std::string RunTag() { return std::to_string(::getpid()) + "-" + std::to_string(std::rand()); }

std::unique_ptr<RedisClient> Connect(RedisClientOptions o = ClusterOptions()) {
  auto c = RedisClient::Create(std::move(o));
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

#define REQUIRE_CLUSTER() TIERCACHE_REQUIRE_SERVER("redis cluster node", RedisClusterPorts()[0])

TEST(ClusterTest, SetGetDelRoundTrip) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::string key = "tc:rt:" + RunTag();
  auto set = client->Set(key, std::string("v\0al", 4));
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_TRUE(*set);
  auto got = client->Get(key);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, std::string("v\0al", 4));
  auto del = client->Del({key, key + ":missing"});
  ASSERT_TRUE(del.ok());
  EXPECT_EQ(*del, 1);
  auto gone = client->Get(key);
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
}

TEST(ClusterTest, SetNxAndPx) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::string key = "tc:nx:" + RunTag();
  SetOptions nx;
  nx.only_if_absent = true;
  nx.ttl = 200ms;
  auto first = client->Set(key, "a", nx);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(*first);
  auto second = client->Set(key, "b", nx);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(*second);
  auto pttl = client->Command({"PTTL", key});
  ASSERT_TRUE(pttl.ok());
  EXPECT_GT(pttl->integer, 0);
  EXPECT_LE(pttl->integer, 200);
  std::this_thread::sleep_for(300ms);
  auto expired = client->Get(key);
  ASSERT_TRUE(expired.ok());
  EXPECT_FALSE(expired->has_value());
}

TEST(ClusterTest, CrossSlotMGetOfThousandKeysOverAllMastersKeepsOrder) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::string tag = RunTag();
  std::vector<std::string> keys;
  std::vector<std::vector<std::string>> sets;
  std::set<std::string> owners;
  for (int i = 0; i < 1000; ++i) {
    keys.push_back("tc:mget:" + tag + ":" + std::to_string(i));
    if (i % 7 != 3) sets.push_back({"SET", keys.back(), "value-" + std::to_string(i)});
    auto owner = client->SlotOwnerForTesting(KeySlot(keys.back()));
    ASSERT_TRUE(owner.ok());
    owners.insert(owner->ToString());
  }
  EXPECT_EQ(owners.size(), 3u) << "the keys should span every master";
  for (const auto& r : client->Pipeline(sets)) ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto values = client->MGet(keys);
  ASSERT_TRUE(values.ok()) << values.status().ToString();
  ASSERT_EQ(values->size(), keys.size());
  for (int i = 0; i < 1000; ++i) {
    if (i % 7 == 3) {
      EXPECT_FALSE((*values)[i].has_value()) << i;
    } else {
      ASSERT_TRUE((*values)[i].has_value()) << i;
      EXPECT_EQ(*(*values)[i], "value-" + std::to_string(i));
    }
  }
  auto removed = client->Unlink(keys);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, static_cast<int64_t>(sets.size()));
}

TEST(ClusterTest, PipelineRestoresReplyOrderAcrossSlots) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::string tag = RunTag();
  std::vector<std::vector<std::string>> cmds;
  for (int i = 0; i < 50; ++i) cmds.push_back({"INCRBY", "tc:pipe:" + tag + ":" + std::to_string(i), std::to_string(i)});
  cmds.push_back({"INCR", "tc:pipe:" + tag + ":0"});
  auto results = client->Pipeline(cmds);
  ASSERT_EQ(results.size(), cmds.size());
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status().ToString();
    EXPECT_EQ(results[i]->integer, i);
  }
  EXPECT_EQ(results[50]->integer, 1);
  std::vector<std::string> keys;
  for (int i = 0; i < 50; ++i) keys.push_back("tc:pipe:" + tag + ":" + std::to_string(i));
  EXPECT_TRUE(client->Del(keys).ok());
}

TEST(ClusterTest, CorruptedSlotMapIsRepairedByOneMovedWithoutCallerError) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::string key = TaggedKey("posts", "community:" + RunTag(), "7");
  uint16_t slot = KeySlot(key);
  ASSERT_TRUE(client->Set(key, "v").ok());
  auto owner = client->SlotOwnerForTesting(slot);
  ASSERT_TRUE(owner.ok());
  // Point the slot at another master.
  Endpoint wrong;
  for (int p : testing::MasterPorts(RedisClusterPorts())) {
    if (p != owner->port) wrong = Endpoint{"127.0.0.1", p};
  }
  ASSERT_NE(wrong.port, owner->port);
  ASSERT_TRUE(client->SetSlotOwnerForTesting(slot, wrong).ok());
  ASSERT_EQ(client->SlotOwnerForTesting(slot)->port, wrong.port);
  uint64_t moved_before = client->Stats().moved;

  auto got = client->Get(key);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->value_or(""), "v");
  EXPECT_EQ(client->Stats().moved, moved_before + 1);
  EXPECT_EQ(client->SlotOwnerForTesting(slot)->port, owner->port);
  // Repaired: the next call needs no redirection.
  ASSERT_TRUE(client->Get(key).ok());
  EXPECT_EQ(client->Stats().moved, moved_before + 1);
  EXPECT_TRUE(client->Del({key}).ok());
}

TEST(ClusterTest, PeriodicRefreshRepairsTheMapWithoutTraffic) {
  REQUIRE_CLUSTER();
  RedisClientOptions o = ClusterOptions();
  o.topology_refresh_interval = 200ms;
  o.min_refresh_interval = 50ms;
  auto client = Connect(o);
  ASSERT_TRUE(client);
  auto owner = client->SlotOwnerForTesting(42);
  ASSERT_TRUE(owner.ok());
  Endpoint wrong{"127.0.0.1", owner->port == RedisClusterPorts()[0] ? RedisClusterPorts()[1] : RedisClusterPorts()[0]};
  ASSERT_TRUE(client->SetSlotOwnerForTesting(42, wrong).ok());
  uint64_t refreshes = client->Stats().topology_refreshes;
  std::this_thread::sleep_for(600ms);
  EXPECT_GE(client->Stats().topology_refreshes, refreshes + 2);
  EXPECT_EQ(client->SlotOwnerForTesting(42)->port, owner->port);
  EXPECT_EQ(client->Stats().moved, 0u);
}

TEST(ClusterTest, MovedStormTriggersCoalescedRateLimitedRefreshes) {
  REQUIRE_CLUSTER();
  RedisClientOptions o = ClusterOptions();
  o.min_refresh_interval = 500ms;
  auto client = Connect(o);
  ASSERT_TRUE(client);
  uint64_t refreshes = client->Stats().topology_refreshes;
  // Corrupt many slots at once: hundreds of MOVED replies in a short time.
  std::vector<std::string> keys;
  for (int i = 0; i < 300; ++i) keys.push_back("tc:storm:" + std::to_string(i));
  for (const auto& k : keys) {
    uint16_t slot = KeySlot(k);
    auto owner = client->SlotOwnerForTesting(slot);
    ASSERT_TRUE(owner.ok());
    Endpoint wrong{"127.0.0.1", owner->port == RedisClusterPorts()[0] ? RedisClusterPorts()[1] : RedisClusterPorts()[0]};
    ASSERT_TRUE(client->SetSlotOwnerForTesting(slot, wrong).ok());
  }
  auto values = client->MGet(keys);
  ASSERT_TRUE(values.ok()) << values.status().ToString();
  EXPECT_GT(client->Stats().moved, 0u);
  std::this_thread::sleep_for(100ms);
  // One refresh at most per min_refresh_interval, however many MOVED came.
  EXPECT_LE(client->Stats().topology_refreshes, refreshes + 1);
}

TEST(ClusterTest, AskDuringMigrationLeavesTheMapAndMovedAfterwardUpdatesIt) {
  testing::ClusterGuard cluster_guard;  // this test moves a slot
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::vector<int> masters = testing::MasterPorts(RedisClusterPorts());
  ASSERT_EQ(masters.size(), 3u);
  // A slot holding no other keys, so the test moves only its own.
  const testing::EmptySlotKey found = testing::FindEmptySlotKey("tc:ask:{" + RunTag(), masters[0]);
  const std::string key = found.key;
  const int slot = found.slot, source = found.owner;
  std::string key2 = key + ":second";
  std::string s = std::to_string(slot);
  int target = source == masters[0] ? masters[1] : masters[0];
  // From here the slot may be open or moved: whatever assertion fails, the
  // guard gives it back to `source` (keys included) before the next test.
  testing::SlotGuard guard(slot, source, masters, RedisClusterPorts());
  ASSERT_TRUE(client->Set(key, "moved-value").ok());
  ASSERT_TRUE(client->Set(key2, "stays").ok());
  ASSERT_EQ(client->SlotOwnerForTesting(slot)->port, source);
  std::string source_id = testing::NodeId(source), target_id = testing::NodeId(target);

  // Half-migrate: key moves, key2 stays on the source.
  ASSERT_EQ(NodeCommandText(target, {"CLUSTER", "SETSLOT", s, "IMPORTING", source_id}), "OK");
  ASSERT_EQ(NodeCommandText(source, {"CLUSTER", "SETSLOT", s, "MIGRATING", target_id}), "OK");
  ASSERT_EQ(NodeCommandText(source, {"MIGRATE", "127.0.0.1", std::to_string(target), key, "0", "5000"}), "OK");

  uint64_t ask_before = client->Stats().ask, moved_before = client->Stats().moved;
  auto got = client->Get(key);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->value_or(""), "moved-value");
  EXPECT_EQ(client->Stats().ask, ask_before + 1);
  EXPECT_EQ(client->SlotOwnerForTesting(slot)->port, source) << "ASK must not change the map";
  auto stays = client->Get(key2);
  ASSERT_TRUE(stays.ok());
  EXPECT_EQ(stays->value_or(""), "stays");

  // Finish the migration (every key left in the slot, then SETSLOT NODE):
  // now MOVED, and the map follows.
  ASSERT_EQ(testing::MigrateKeys(slot, source, target), "");
  for (int m : masters) ASSERT_EQ(NodeCommandText(m, {"CLUSTER", "SETSLOT", s, "NODE", target_id}), "OK");
  auto after = client->Get(key);
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(after->value_or(""), "moved-value");
  EXPECT_EQ(client->Stats().moved, moved_before + 1);
  EXPECT_EQ(client->SlotOwnerForTesting(slot)->port, target);

  // Restore the slot to its original owner.
  ASSERT_EQ(testing::MigrateSlot(slot, target, source, masters), "");
  EXPECT_TRUE(testing::WaitClusterHealthy(RedisClusterPorts(), 20));
  auto back = client->Get(key2);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->value_or(""), "stays");
  EXPECT_EQ(client->SlotOwnerForTesting(slot)->port, source);
  EXPECT_TRUE(client->Del({key, key2}).ok());
}

// A multi-key command on a slot whose keys are split mid-migration gets
// TRYAGAIN from the source; the client retries with backoff (within the
// call's deadline) and succeeds once the migration ends.
TEST(ClusterTest, TryAgainDuringMigrationIsRetriedUntilTheSlotSettles) {
  testing::ClusterGuard cluster_guard;  // this test moves a slot
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::vector<int> masters = testing::MasterPorts(RedisClusterPorts());
  ASSERT_EQ(masters.size(), 3u);
  const testing::EmptySlotKey found = testing::FindEmptySlotKey("tc:tryagain:{" + RunTag(), masters[0]);
  const std::string prefix = found.key;
  const int slot = found.slot, source = found.owner;
  const std::string moved_key = prefix + ":a", staying_key = prefix + ":b", s = std::to_string(slot);
  const int target = source == masters[0] ? masters[1] : masters[0];
  testing::SlotGuard guard(slot, source, masters, RedisClusterPorts());
  ASSERT_TRUE(client->Set(moved_key, "A").ok());
  ASSERT_TRUE(client->Set(staying_key, "B").ok());
  const std::string source_id = testing::NodeId(source), target_id = testing::NodeId(target);
  ASSERT_EQ(NodeCommandText(target, {"CLUSTER", "SETSLOT", s, "IMPORTING", source_id}), "OK");
  ASSERT_EQ(NodeCommandText(source, {"CLUSTER", "SETSLOT", s, "MIGRATING", target_id}), "OK");
  ASSERT_EQ(NodeCommandText(source, {"MIGRATE", "127.0.0.1", std::to_string(target), moved_key, "0", "5000"}),
            "OK");

  // The migration ends 400 ms into the call.
  std::thread finisher([&] {
    std::this_thread::sleep_for(400ms);
    testing::MigrateKeys(slot, source, target);
    for (int m : masters) NodeCommandText(m, {"CLUSTER", "SETSLOT", s, "NODE", target_id});
  });
  const uint64_t retries_before = client->Stats().retries;
  CallOptions call;
  call.timeout = 5000ms;
  const auto start = std::chrono::steady_clock::now();
  auto got = client->MGet({moved_key, staying_key}, call);
  const auto took = std::chrono::steady_clock::now() - start;
  finisher.join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].value_or("<nil>"), "A");
  EXPECT_EQ((*got)[1].value_or("<nil>"), "B");
  EXPECT_GT(client->Stats().retries, retries_before) << "the split slot must have answered TRYAGAIN";
  EXPECT_GE(took, 350ms) << "it cannot succeed before the migration ends";

  // A call whose deadline ends before the slot settles fails by then.
  ASSERT_EQ(testing::MigrateSlot(slot, target, source, masters), "");
  ASSERT_TRUE(testing::WaitClusterHealthy(RedisClusterPorts(), 20));
  ASSERT_EQ(NodeCommandText(target, {"CLUSTER", "SETSLOT", s, "IMPORTING", source_id}), "OK");
  ASSERT_EQ(NodeCommandText(source, {"CLUSTER", "SETSLOT", s, "MIGRATING", target_id}), "OK");
  ASSERT_EQ(NodeCommandText(source, {"MIGRATE", "127.0.0.1", std::to_string(target), moved_key, "0", "5000"}),
            "OK");
  call.timeout = 300ms;
  const auto start2 = std::chrono::steady_clock::now();
  auto late = client->MGet({moved_key, staying_key}, call);
  const auto took2 = std::chrono::steady_clock::now() - start2;
  ASSERT_FALSE(late.ok());
  EXPECT_TRUE(late.status().IsUnavailable() || late.status().IsDeadlineExceeded()) << late.status().ToString();
  EXPECT_LT(took2, 300ms + 200ms) << "no call blocks past its deadline";
  // The guard gives the slot and both keys back to `source`.
}

TEST(ClusterTest, EvalLoadsAnUnknownScriptAndRunsOnTheKeysNode) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::string tag = RunTag();
  // A body no node has seen, so EVALSHA meets NOSCRIPT first.
  Script script("-- " + tag + "\nredis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[2])");
  std::string k1 = TaggedKey("lease", tag, "a"), k2 = TaggedKey("lease", tag, "b");
  ASSERT_TRUE(client->Set(k2, "other").ok());
  auto r = client->Eval(script, {k1, k2}, {"x"});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->str, "other");
  EXPECT_EQ(client->Get(k1)->value_or(""), "x");
  auto again = client->Eval(script, {k1, k2}, {"y"});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(client->Del({k1, k2}).ok());
}

TEST(ClusterTest, ServerErrorsAreValuesNamingTheNode) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::string key = "tc:err:" + RunTag();
  ASSERT_TRUE(client->Set(key, "not a number").ok());
  auto r = client->Command({"INCR", key});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsInternal());
  auto owner = client->SlotOwnerForTesting(KeySlot(key));
  EXPECT_NE(r.status().message().find(owner->ToString()), std::string_view::npos) << r.status().ToString();
  auto unknown = client->Command({"NOSUCHCOMMAND", key});
  EXPECT_FALSE(unknown.ok());
  EXPECT_TRUE(client->Del({key}).ok());
}

TEST(ClusterTest, KeylessCommandsGoToAMaster) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  CommandOptions keyless;
  keyless.key_index = -1;
  auto pong = client->Command({"PING"}, keyless);
  ASSERT_TRUE(pong.ok()) << pong.status().ToString();
  EXPECT_EQ(pong->str, "PONG");
}

TEST(ClusterTest, AsyncCallbacksAndFuturesComplete) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::string tag = RunTag();
  ASSERT_TRUE(client->Set("tc:async:" + tag, "v").ok());
  std::atomic<int> done{0}, hits{0};
  for (int i = 0; i < 200; ++i) {
    client->GetAsync("tc:async:" + tag, {}, [&](Result<std::optional<std::string>> r) {
      if (r.ok() && r->has_value() && **r == "v") hits.fetch_add(1);
      done.fetch_add(1);
    });
  }
  auto f = client->CommandFuture({"GET", "tc:async:" + tag});
  auto r = f.get();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->str, "v");
  for (int i = 0; i < 200 && done.load() < 200; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(done.load(), 200);
  EXPECT_EQ(hits.load(), 200);
  EXPECT_TRUE(client->Del({"tc:async:" + tag}).ok());
}

// Write coalescing: commands for a connection whose earlier command has not
// been answered wait, and leave in one write when its reply arrives. BLPOP
// holds the connection for 300 ms; the 100 GETs are issued meanwhile in 10
// bursts 5 ms apart (without coalescing, each burst is a write of its own).
TEST(ClusterTest, CommandsWaitingForTheirConnectionsReplyLeaveInOneWrite) {
  REQUIRE_CLUSTER();
  std::atomic<int> done{0}, hits{0};  // outlive the client, whose destructor may run callbacks
  RedisClientOptions o = ClusterOptions();
  o.topology_refresh_interval = std::chrono::hours(1);  // no refresh write in between
  auto client = Connect(o);
  ASSERT_TRUE(client);
  std::string tag = "{tc:co:" + RunTag() + "}";
  ASSERT_TRUE(client->Set(tag + ":v", "v").ok());
  uint64_t writes_before = client->Stats().writes;
  auto start = std::chrono::steady_clock::now();
  auto blpop = client->CommandFuture({"BLPOP", tag + ":list", "0.3"});
  for (int i = 0; i < 200 && client->Stats().writes == writes_before; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(client->Stats().writes, writes_before + 1) << "BLPOP was not written";
  constexpr int kGets = 100;
  for (int i = 0; i < kGets; ++i) {
    if (i % 10 == 0) std::this_thread::sleep_for(5ms);
    client->GetAsync(tag + ":v", {}, [&](Result<std::optional<std::string>> r) {
      if (r.ok() && r->value_or("") == "v") hits.fetch_add(1);
      done.fetch_add(1);
    });
  }
  auto r = blpop.get();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->IsNil());  // timed out: the list never existed
  EXPECT_GE(std::chrono::steady_clock::now() - start, 290ms);
  for (int i = 0; i < 300 && done.load() < kGets; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(hits.load(), kGets);
  EXPECT_EQ(client->Stats().writes, writes_before + 2) << "the GETs were not written together";
  EXPECT_TRUE(client->Del({tag + ":v"}).ok());
}

// A command larger than the socket takes at once is written in parts; the
// rest must go out even though the command is already "sent" in part (no
// coalescing hold while a partial write drains, or it would wait forever for
// a reply the server cannot give).
TEST(ClusterTest, ACommandWrittenInPartsIsNeverHeldHalfSent) {
  REQUIRE_CLUSTER();
  RedisClientOptions o = ClusterOptions();
  o.direct_io = false;  // through the I/O thread, where coalescing happens
  o.command_timeout = 5s;
  auto client = Connect(o);
  ASSERT_TRUE(client);
  std::string key = "tc:big:" + RunTag();
  std::string value(16 << 20, 'b');  // far beyond a socket's buffer: written in parts
  for (int i = 0; i < 2; ++i) {
    auto set = client->Command({"SET", key, value});  // held half-sent: fails at the deadline
    ASSERT_TRUE(set.ok()) << set.status().ToString();
    auto len = client->Command({"STRLEN", key});
    ASSERT_TRUE(len.ok()) << len.status().ToString();
    EXPECT_EQ(len->integer, static_cast<int64_t>(value.size()));
  }
  EXPECT_TRUE(client->Del({key}).ok());
}

TEST(ClusterTest, ManyThreadsShareTheClient) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  std::string tag = RunTag();
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        std::string key = "tc:mt:" + tag + ":" + std::to_string(t) + ":" + std::to_string(i % 10);
        std::string value = std::to_string(t * 1000 + i);
        if (!client->Set(key, value).ok()) errors.fetch_add(1);
        auto got = client->Get(key);
        if (!got.ok() || got->value_or("") != value) errors.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
}

TEST(ClusterTest, ShortDeadlineIsHonoured) {
  REQUIRE_CLUSTER();
  auto client = Connect();
  ASSERT_TRUE(client);
  // A blocking command that cannot complete in time.
  CommandOptions opts;
  opts.call.timeout = 100ms;
  auto start = std::chrono::steady_clock::now();
  auto r = client->Command({"BLPOP", "tc:blpop:" + RunTag(), "2"}, opts);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsDeadlineExceeded()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("127.0.0.1:"), std::string_view::npos);
  EXPECT_LT(took, 150ms);
}

TEST(ClusterTest, DestroyLeaksNoFdsOrThreads) {
  REQUIRE_CLUSTER();
  // Warm up libraries that keep fds/threads for the process lifetime.
  { auto warm = Connect(); }
  int fds_before = testing::CountOpenFds();
  int threads_before = testing::CountThreads();
  for (int round = 0; round < 3; ++round) {
    auto client = Connect();
    ASSERT_TRUE(client);
    std::vector<std::string> keys;
    for (int i = 0; i < 100; ++i) keys.push_back("tc:leak:" + std::to_string(i));
    ASSERT_TRUE(client->MGet(keys).ok());  // touches every master
    EXPECT_GT(testing::CountOpenFds(), fds_before);
    EXPECT_EQ(testing::CountThreads(), threads_before + 1);
  }
  EXPECT_EQ(testing::CountOpenFds(), fds_before);
  EXPECT_EQ(testing::CountThreads(), threads_before);
}

TEST(ClusterTest, ReplicaReadsWhenEnabled) {
  REQUIRE_CLUSTER();
  RedisClientOptions o = ClusterOptions();
  o.read_from_replicas = true;
  auto client = Connect(o);
  ASSERT_TRUE(client);
  std::string key = "tc:replica:" + RunTag();
  ASSERT_TRUE(client->Set(key, "r").ok());
  std::this_thread::sleep_for(200ms);  // let the replica catch up
  int ok = 0;
  for (int i = 0; i < 20; ++i) {
    auto got = client->Get(key);
    if (got.ok() && got->value_or("") == "r") ++ok;
  }
  EXPECT_GE(ok, 18);  // replicas may lag briefly
  EXPECT_TRUE(client->Del({key}).ok());
}

}  // namespace
}  // namespace tiercache::redis
