// A master that serves no slot lists itself nowhere in its own CLUSTER SLOTS
// reply: the map it gives leaves out the very node that answered, whose
// connection the client then drops while handling that reply. The client
// must not touch the dropped connection afterwards (it read from a freed
// reader and crashed: a slotless seed crashed every Create, and a drained
// master crashed the next refresh that asked it). On a private two-node
// cluster: A serves no slot, B serves all 16384.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "common/test_env.h"
#include "redis/redis_test_util.h"
#include "tiercache/redis/redis_client.h"
#include "tiercache/redis/slot.h"

namespace tiercache::redis {
namespace {

using namespace std::chrono_literals;
using testing::NodeCommandText;

std::unique_ptr<testing::ServerProcess> ClusterNode(int port) {
  return std::make_unique<testing::ServerProcess>(
      port, std::vector<std::string>{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                     "--cluster-node-timeout", "2000", "--cluster-allow-replica-migration", "no"});
}

bool WaitFor(std::chrono::milliseconds timeout, const std::function<bool()>& done) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return done();
}

class SlotlessMasterItest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);  // redis-server installed
    a_port_ = testing::FreeClusterPort();
    a_ = ClusterNode(a_port_);
    b_port_ = testing::FreeClusterPort();
    b_ = ClusterNode(b_port_);
    ASSERT_TRUE(a_->ok() && b_->ok()) << "cannot start two redis-servers";
    ASSERT_EQ(NodeCommandText(b_port_, {"CLUSTER", "ADDSLOTSRANGE", "0", "16383"}), "OK");
    ASSERT_EQ(NodeCommandText(a_port_, {"CLUSTER", "MEET", "127.0.0.1", std::to_string(b_port_)}), "OK");
    ASSERT_TRUE(WaitFor(20s, [&] {
      return NodeCommandText(a_port_, {"CLUSTER", "INFO"}).find("cluster_state:ok") != std::string::npos &&
             NodeCommandText(b_port_, {"CLUSTER", "INFO"}).find("cluster_state:ok") != std::string::npos;
    })) << NodeCommandText(a_port_, {"CLUSTER", "NODES"});
  }

  RedisClientOptions Seeded(int port) const {
    RedisClientOptions o;
    o.seeds = {Endpoint{"127.0.0.1", port}};
    return o;
  }

  int a_port_ = -1, b_port_ = -1;
  std::unique_ptr<testing::ServerProcess> a_, b_;
};

TEST_F(SlotlessMasterItest, ASlotlessMasterAsTheOnlySeedIsFollowedToTheRealOwner) {
  for (int i = 0; i < 3; ++i) {
    auto client = RedisClient::Create(Seeded(a_port_));
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    ASSERT_TRUE((*client)->Set("slotless:k", "v").ok());
    auto got = (*client)->Get("slotless:k");
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->value_or(""), "v");
  }
}

TEST_F(SlotlessMasterItest, AMasterDrainedOfItsSlotIsAskedByRefreshesWithoutHarm) {
  RedisClientOptions o = Seeded(b_port_);
  o.topology_refresh_interval = 200ms;  // refresh rounds rotate over the known nodes: A is asked soon
  o.min_refresh_interval = 50ms;
  auto client = RedisClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  // Give A one slot (so the client knows A as a master), then drain it.
  const std::string key = "slotless:drained";
  const std::string slot = std::to_string(KeySlot(key));
  auto id = [](int port) {
    std::string s = NodeCommandText(port, {"CLUSTER", "MYID"});
    return s.size() > 1 && s.front() == '"' ? s.substr(1, s.size() - 2) : s;
  };
  for (int p : {a_port_, b_port_}) NodeCommandText(p, {"CLUSTER", "SETSLOT", slot, "NODE", id(a_port_)});
  ASSERT_TRUE(WaitFor(10s, [&] { return (*client)->Set(key, "v").ok() && (*client)->NodeOfSlot(KeySlot(key)) >= 0; }));
  ASSERT_TRUE((*client)->Del({key}).ok());
  NodeCommandText(b_port_, {"CLUSTER", "BUMPEPOCH"});
  for (int p : {a_port_, b_port_}) NodeCommandText(p, {"CLUSTER", "SETSLOT", slot, "NODE", id(b_port_)});
  std::this_thread::sleep_for(3s);  // about 15 refresh rounds, some asking A
  for (int i = 0; i < 20; ++i) {
    auto got = (*client)->Get(key + ":" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
  }
}

}  // namespace
}  // namespace tiercache::redis
