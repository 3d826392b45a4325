// RedisClient's topology against the local 6-node cluster, where nodes come
// and go: when every node the client knows is gone (or answers without a slot
// map), the seeds bring the cluster back; when a node leaves the cluster, the
// client closes its connection to it. A test that changes the cluster
// restores it (RAII) before it ends, whatever assertion failed.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <set>
#include <sstream>

#include "redis/cluster_guard.h"
#include "redis/redis_test_util.h"
#include "tiercache/redis/redis_client.h"
#include "tiercache/redis/slot.h"
#include "common/log_capture.h"

namespace tiercache::redis {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using ::tiercache::testing::RedisClusterPorts;
using testing::CommandError;
using testing::NodeCommandText;
using testing::WaitUntil;

std::string RunTag() { return std::to_string(::getpid()) + "-" + std::to_string(std::rand()); }

std::unique_ptr<RedisClient> Connect(RedisClientOptions o) {
  auto c = RedisClient::Create(std::move(o));
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

// A bound loopback port, held for the test so no other process takes it.
// kRefusing: it never listens, so every connect is refused at once (a node
// that is gone). kSilent: it listens but never accepts or reads, so connects
// succeed (the kernel completes the handshake) and commands are never
// answered (a hung or overloaded node).
class TestPort {
 public:
  enum Kind { kRefusing, kSilent };
  explicit TestPort(Kind kind = kRefusing) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) == 0 &&
        (kind == kRefusing || ::listen(fd_, 16) == 0) &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      port_ = ntohs(a.sin_port);
    }
  }
  ~TestPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  TestPort(const TestPort&) = delete;
  TestPort& operator=(const TestPort&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = -1;
};

// A refresh round gives a node that never answers topology_probe_timeout,
// then asks the next candidate (here the seed); without the cap it would
// hold the round for connect_timeout + command_timeout (2 s), until the
// connection's stall detection gave up on it.
TEST(TopologyTest, ARefreshRoundMovesPastANodeThatNeverAnswers) {
  REQUIRE_HEALTHY_CLUSTER();
  RedisClientOptions o;
  o.seeds = {Endpoint{"127.0.0.1", RedisClusterPorts()[0]}};
  o.topology_refresh_interval = 200ms;  // the refresh that finds the way back
  o.topology_probe_timeout = 300ms;
  auto client = Connect(o);
  ASSERT_TRUE(client);
  const std::string key = "tc:silent:" + RunTag();
  ASSERT_TRUE(client->Set(key, "v").ok());
  TestPort silent(TestPort::kSilent);
  ASSERT_GT(silent.port(), 0);
  ASSERT_TRUE(client->SetTopologyForTesting({Endpoint{"127.0.0.1", silent.port()}}).ok());

  const auto start = Clock::now();
  bool recovered = false;
  int failed_calls = 0;
  while (!recovered && Clock::now() - start < 5s) {
    CallOptions call;
    call.timeout = 100ms;
    auto got = client->Get(key, call);
    recovered = got.ok() && got->value_or("<nil>") == "v";
    if (!recovered) ++failed_calls;
  }
  const auto took = Clock::now() - start;
  std::printf("back from a silent node in %.0f ms (%d calls failed meanwhile)\n",
              std::chrono::duration<double, std::milli>(took).count(), failed_calls);
  ASSERT_TRUE(recovered);
  EXPECT_GE(failed_calls, 1) << "calls routed to the silent node must have failed at their deadline";
  EXPECT_LT(took, 1500ms) << "the silent node must cost topology_probe_timeout, not 2 s";
  EXPECT_TRUE(client->Del({key}).ok());
}

TEST(TopologyTest, SeedsBringTheClusterBackWhenEveryKnownNodeIsGone) {
  REQUIRE_HEALTHY_CLUSTER();
  // One seed: once the known nodes are gone, it is the only way back.
  RedisClientOptions o;
  o.seeds = {Endpoint{"127.0.0.1", RedisClusterPorts()[0]}};
  auto client = Connect(o);
  ASSERT_TRUE(client);
  std::string key = "tc:seed:" + RunTag();
  ASSERT_TRUE(client->Set(key, "v").ok());
  std::set<int> masters;
  for (int p : testing::MasterPorts(RedisClusterPorts())) masters.insert(p);
  ASSERT_EQ(masters.size(), 3u);

  // The cluster "moves": every node the client knows (the seed included, as a
  // member) is replaced by an address where nothing listens, and their
  // connections are closed. The seed itself still reaches the cluster.
  TestPort gone[3];
  std::vector<Endpoint> dead;
  for (const auto& g : gone) {
    ASSERT_GT(g.port(), 0);
    dead.push_back(Endpoint{"127.0.0.1", g.port()});
  }
  ASSERT_TRUE(client->SetTopologyForTesting(dead).ok());
  uint16_t slot = KeySlot(key);
  auto stale = client->SlotOwnerForTesting(slot);
  ASSERT_TRUE(stale.ok());
  ASSERT_EQ(masters.count(stale->port), 0u) << "the map should point at a dead node now";
  ClientStats before = client->Stats();

  // The call fails on the dead node, which triggers a refresh; every known
  // node refuses, the seed answers, and the call completes on the real owner.
  CallOptions call;
  call.timeout = 5s;
  ::tiercache::testing::LogCapture log;
  auto start = Clock::now();
  auto got = client->Get(key, call);
  auto took = Clock::now() - start;
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->value_or("<nil>"), "v");
  std::printf("recovered through the seed in %.1f ms\n", std::chrono::duration<double, std::milli>(took).count());
  EXPECT_LT(took, 1s) << "a refresh round tries the seeds once every known node has failed";
  ClientStats after = client->Stats();
  EXPECT_GE(after.connection_failures, before.connection_failures + 1);
  EXPECT_GE(after.topology_refreshes, before.topology_refreshes + 2) << "known nodes first, then the seed";
  EXPECT_GE(after.topology_changes, before.topology_changes + 1);
  EXPECT_GE(log.Count("INFO Redis cluster topology changed: masters now 127.0.0.1:"), 1) << log.All();
  EXPECT_EQ(after.seed_fallbacks, before.seed_fallbacks + 1);
  EXPECT_EQ(log.Count("WARNING Redis cluster: no node of the slot map answered; map fetched from seed 127.0.0.1:"), 1)
      << log.All();

  // The map is the cluster's again: every slot sampled is served by a real master.
  std::set<int> owners;
  for (int s = 0; s < kSlotCount; s += 97) {
    auto owner = client->SlotOwnerForTesting(static_cast<uint16_t>(s));
    ASSERT_TRUE(owner.ok()) << "slot " << s << ": " << owner.status().ToString();
    owners.insert(owner->port);
  }
  EXPECT_EQ(owners, masters);
  // The dead nodes left the topology: nothing reconnects to them.
  uint64_t failures = client->Stats().connection_failures;
  std::this_thread::sleep_for(o.reconnect_backoff * 3);
  EXPECT_EQ(client->Stats().connection_failures, failures);
  EXPECT_TRUE(client->Del({key}).ok());
}

TEST(TopologyTest, SeedsAreTriedWhenTheKnownNodesAnswerWithoutASlotMap) {
  REQUIRE_HEALTHY_CLUSTER();
  // A cluster-mode node that belongs to no cluster (like a node that was reset,
  // or an address reused by another deployment): it accepts connections, but
  // serves no slot (CLUSTERDOWN) and its CLUSTER SLOTS is empty. The client
  // stays connected to it, so it never looks failing: it must not keep the
  // refresh from reaching the seeds.
  testing::ServerProcess lonely(testing::FreeClusterPort(),
                                {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"});
  ASSERT_TRUE(lonely.ok()) << "cannot start a redis-server";
  RedisClientOptions o;
  o.seeds = {Endpoint{"127.0.0.1", RedisClusterPorts()[0]}};
  auto client = Connect(o);
  ASSERT_TRUE(client);
  std::string key = "tc:lonely:" + RunTag();
  ASSERT_TRUE(client->Set(key, "v").ok());
  TestPort gone;
  ASSERT_TRUE(client->SetTopologyForTesting({Endpoint{"127.0.0.1", lonely.port()},
                                             Endpoint{"127.0.0.1", gone.port()}}).ok());
  ClientStats before = client->Stats();

  CallOptions call;
  call.timeout = 5s;
  auto start = Clock::now();
  std::vector<std::string> keys;
  for (int i = 0; i < 10; ++i) keys.push_back(key + ":" + std::to_string(i));
  keys.push_back(key);
  auto got = client->MGet(keys, call);  // some parts meet the lonely node, some the dead one
  auto took = Clock::now() - start;
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->back().value_or("<nil>"), "v");
  std::printf("recovered through the seed in %.1f ms\n", std::chrono::duration<double, std::milli>(took).count());
  EXPECT_LT(took, 1s);
  EXPECT_GE(client->Stats().topology_refreshes, before.topology_refreshes + 2) << "the lonely node, then the seed";
  auto owner = client->SlotOwnerForTesting(KeySlot(key));
  ASSERT_TRUE(owner.ok());
  EXPECT_NE(owner->port, lonely.port());
  EXPECT_NE(owner->port, gone.port());
  EXPECT_TRUE(client->Del({key}).ok());
}

// The client connections open on the node at `port` (their "addr=" fields),
// not counting the connection that asks nor replication links.
std::vector<std::string> ClientConnections(int port) {
  std::vector<std::string> addrs;
  std::istringstream in(NodeCommandText(port, {"CLIENT", "LIST"}));
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" cmd=client|list ") != std::string::npos || line.find(" flags=S ") != std::string::npos ||
        line.find(" flags=M ") != std::string::npos) {
      continue;
    }
    size_t at = line.find("addr=");
    if (at == std::string::npos) continue;
    size_t end = line.find(' ', at);
    addrs.push_back(line.substr(at + 5, end == std::string::npos ? std::string::npos : end - at - 5));
  }
  return addrs;
}

// A 7th node of the local cluster for the duration of a test: a cluster-mode
// redis-server on a free port. The destructor undoes whatever the test got to
// (the slot given to the node goes back to its owner, every node forgets the
// node, the process is killed) and checks that the 6-node cluster is healthy,
// so an assertion failing half-way cannot break the tests that follow.
// Each step returns "" or what went wrong.
class ExtraNode {
 public:
  ExtraNode()
      : server_(std::make_unique<testing::ServerProcess>(
            testing::FreeClusterPort(),
            // Without replica migration the node stays an empty master when it
            // gives its only slot back, instead of becoming a replica (and so
            // staying in CLUSTER SLOTS).
            std::vector<std::string>{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                     "--cluster-node-timeout", "2000", "--cluster-allow-replica-migration", "no"})) {}

  ~ExtraNode() {
    if (slot_ >= 0) {
      std::vector<int> masters = masters_;
      masters.push_back(port());
      EXPECT_EQ(testing::RestoreSlot(slot_, slot_owner_, masters), "") << "giving slot " << slot_ << " back";
      EXPECT_TRUE(WaitUntil(20s, [&] { return testing::SlotSettled(slot_, slot_owner_, RedisClusterPorts()); }, 100ms));
    }
    if (!id_.empty() && !forgotten_) {
      for (int p : RedisClusterPorts()) NodeCommandText(p, {"CLUSTER", "FORGET", id_});
    }
    server_.reset();  // kill the process
    EXPECT_TRUE(testing::WaitClusterHealthy(RedisClusterPorts(), 30)) << "the 6-node cluster was not restored";
  }
  ExtraNode(const ExtraNode&) = delete;
  ExtraNode& operator=(const ExtraNode&) = delete;

  bool ok() const { return server_->ok(); }
  int port() const { return server_->port(); }

  // CLUSTER MEET, then waits until the 7 nodes all know each other.
  std::string Join() {
    id_ = testing::NodeId(port());
    std::vector<int> all = RedisClusterPorts();
    all.push_back(port());
    if (std::string e = CommandError(all[0], {"CLUSTER", "MEET", "127.0.0.1", std::to_string(port())}); !e.empty()) {
      return e;
    }
    bool met = WaitUntil(20s, [&] {
      for (int p : all) {
        if (testing::InfoField(NodeCommandText(p, {"CLUSTER", "INFO"}), "cluster_known_nodes") != "7") return false;
        if (NodeCommandText(p, {"CLUSTER", "NODES"}).find("handshake") != std::string::npos) return false;
      }
      return testing::InfoField(NodeCommandText(port(), {"CLUSTER", "INFO"}), "cluster_state") == "ok";
    }, 50ms);
    return met ? "" : "the 7 nodes did not all meet within 20 s";
  }

  // Moves the (empty) `slot` from its owner to this node; waits until every
  // node, replicas included, agrees.
  std::string TakeSlot(int slot, int owner, const std::vector<int>& masters) {
    slot_ = slot;
    slot_owner_ = owner;
    masters_ = masters;
    std::vector<int> with_me = masters;
    with_me.push_back(port());
    if (std::string e = testing::MigrateSlot(slot, owner, port(), with_me); !e.empty()) return e;
    with_me = RedisClusterPorts();
    with_me.push_back(port());
    return WaitUntil(20s, [&] { return testing::SlotSettled(slot, port(), with_me); }, 50ms)
               ? ""
               : "the cluster did not agree on slot " + std::to_string(slot) + " moving";
  }

  // Gives the slot back to its owner (the node is then an empty master).
  std::string GiveBackSlot() {
    std::vector<int> with_me = masters_;
    with_me.push_back(port());
    if (std::string e = testing::MigrateSlot(slot_, port(), slot_owner_, with_me); !e.empty()) return e;
    with_me = RedisClusterPorts();
    with_me.push_back(port());
    if (!WaitUntil(20s, [&] { return testing::SlotSettled(slot_, slot_owner_, with_me); }, 50ms)) {
      return "the cluster did not agree on slot " + std::to_string(slot_) + " coming back";
    }
    slot_ = -1;
    return "";
  }

  // What redis-cli --cluster del-node does: every node forgets this one,
  // which then resets (it knows nobody any more).
  std::string Leave() {
    for (int p : RedisClusterPorts()) {
      if (std::string e = CommandError(p, {"CLUSTER", "FORGET", id_}); !e.empty()) return e;
    }
    forgotten_ = true;
    if (std::string e = CommandError(port(), {"CLUSTER", "RESET", "SOFT"}); !e.empty()) return e;
    return WaitUntil(10s, [&] {
      for (int p : RedisClusterPorts()) {
        if (testing::InfoField(NodeCommandText(p, {"CLUSTER", "INFO"}), "cluster_known_nodes") != "6") return false;
      }
      return true;
    }, 50ms) ? "" : "the 6 nodes still know the 7th";
  }

 private:
  std::unique_ptr<testing::ServerProcess> server_;
  std::string id_;
  bool forgotten_ = false;
  int slot_ = -1;  // given to this node and not yet back
  int slot_owner_ = -1;
  std::vector<int> masters_;
};

TEST(TopologyTest, ConnectionToANodeThatLeftTheClusterIsClosed) {
  testing::ClusterGuard cluster_guard;  // this test adds a node to the cluster
  REQUIRE_HEALTHY_CLUSTER();
  std::vector<int> masters = testing::MasterPorts(RedisClusterPorts());
  ASSERT_EQ(masters.size(), 3u);
  auto begin = Clock::now();
  ExtraNode node;
  ASSERT_TRUE(node.ok()) << "cannot start a 7th redis-server";
  ASSERT_EQ(node.Join(), "");
  // CLUSTER SLOTS lists only masters that serve slots (and their replicas):
  // the new node joins the client's topology when it gets one. Take a slot
  // holding no key, so that no data moves.
  const testing::EmptySlotKey found = testing::FindEmptySlotKey("tc:leave:{" + RunTag(), masters[0]);
  const std::string key = found.key;
  const int slot = found.slot, owner = found.owner;
  ASSERT_GT(owner, 0);

  auto client = Connect(testing::ClusterOptions());
  ASSERT_TRUE(client);
  EXPECT_TRUE(ClientConnections(node.port()).empty());
  ASSERT_EQ(node.TakeSlot(slot, owner, masters), "");
  std::printf("7th node on port %d serves slot %d (%.1f s into the test)\n", node.port(), slot,
              std::chrono::duration<double>(Clock::now() - begin).count());

  // The client learns the node (MOVED, then the refresh it triggers lists the
  // node) and opens a connection to it.
  ASSERT_TRUE(client->Set(key, "v").ok());
  ASSERT_EQ(client->SlotOwnerForTesting(static_cast<uint16_t>(slot))->port, node.port());
  std::vector<std::string> conns;
  ASSERT_TRUE(WaitUntil(2s, [&] { return !(conns = ClientConnections(node.port())).empty(); }));
  EXPECT_EQ(conns.size(), 1u) << "one connection per node";
  ASSERT_TRUE(client->Del({key}).ok());  // the slot must be empty to leave

  // The node leaves the cluster: slot back to its owner, forgotten by all.
  ASSERT_EQ(node.GiveBackSlot(), "");
  ASSERT_EQ(node.Leave(), "");
  // The client's map still sends the slot to the node, which no longer
  // serves it (CLUSTERDOWN): the call is retried and a refresh is triggered,
  // which drops the node from the topology and closes the connection.
  uint64_t refreshes = client->Stats().topology_refreshes;
  auto start = Clock::now();
  auto got = client->Get(key);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(client->SlotOwnerForTesting(static_cast<uint16_t>(slot))->port, owner);
  EXPECT_GE(client->Stats().topology_refreshes, refreshes + 1);
  bool closed = WaitUntil(3s, [&] {
    std::vector<std::string> now = ClientConnections(node.port());
    return std::none_of(conns.begin(), conns.end(),
                        [&](const std::string& c) { return std::find(now.begin(), now.end(), c) != now.end(); });
  });
  ASSERT_TRUE(closed) << "the client's connection to the removed node is still open: "
                      << NodeCommandText(node.port(), {"CLIENT", "LIST"});
  std::printf("connection to the removed node closed %.1f ms after the first call that met it\n",
              std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  // ... and stays closed: the client keeps working without the node.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(client->Get(key + ":" + std::to_string(i)).ok());
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(ClientConnections(node.port()).empty()) << NodeCommandText(node.port(), {"CLIENT", "LIST"});
}

// A node leaves the slot map while a command on its connection awaits a
// reply: the map's installation must not fail that command (it may be an
// ASKed one on a node importing its first slot), so the connection stays
// open until the reply. Then it is closed once idle for a second
// (Engine::kDepartedIdleClose), not at the next periodic refresh (10 s by
// default), and the command got its reply.
TEST(TopologyTest, ConnectionBusyWhenItsNodeLeftIsClosedSoonAfterItsLastReply) {
  REQUIRE_HEALTHY_CLUSTER();
  // The departing node: a plain redis-server, reached only through the test
  // hook that maps one slot to it.
  testing::ServerProcess departing(testing::FreeClusterPort(), {});
  ASSERT_TRUE(departing.ok()) << "cannot start a redis-server";
  const std::vector<int> masters = testing::MasterPorts(RedisClusterPorts());
  ASSERT_EQ(masters.size(), 3u);
  auto client = Connect(testing::ClusterOptions());  // periodic refresh: the default 10 s
  ASSERT_TRUE(client);
  const std::string key = "tc:busy-leaving:" + RunTag();
  const auto slot = KeySlot(key);
  ASSERT_TRUE(client->SetSlotOwnerForTesting(slot, Endpoint{"127.0.0.1", departing.port()}).ok());

  // A command the node holds for 600 ms (BLPOP on an empty list).
  CommandOptions blocking;
  blocking.call.timeout = 5s;
  auto reply = client->CommandFuture({"BLPOP", key, "0.6"}, blocking);
  ASSERT_TRUE(WaitUntil(2s, [&] { return ClientConnections(departing.port()).size() == 1; }, 1ms))
      << NodeCommandText(departing.port(), {"CLIENT", "LIST"});
  // Now the node leaves the client's map, the BLPOP still in flight.
  std::vector<Endpoint> cluster;
  for (int p : masters) cluster.push_back(Endpoint{"127.0.0.1", p});
  ASSERT_TRUE(client->SetTopologyForTesting(cluster).ok());
  EXPECT_EQ(ClientConnections(departing.port()).size(), 1u) << "closed with a command in flight";

  Result<Reply> r = reply.get();
  const auto replied = Clock::now();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->IsNil()) << "BLPOP on an empty list times out with nil";
  const bool closed = WaitUntil(3s, [&] { return ClientConnections(departing.port()).empty(); }, 5ms);
  const double after_ms = std::chrono::duration<double, std::milli>(Clock::now() - replied).count();
  ASSERT_TRUE(closed) << "the connection to the departed node is still open " << after_ms
                      << " ms after its last reply: " << NodeCommandText(departing.port(), {"CLIENT", "LIST"});
  std::printf("connection to the departed node closed %.0f ms after its last reply\n", after_ms);
  EXPECT_GE(after_ms, 500) << "closed before it was idle for a second";
}

}  // namespace
}  // namespace tiercache::redis
