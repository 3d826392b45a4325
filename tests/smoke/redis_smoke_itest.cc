// Proves the local Redis Cluster is real: hiredis reaches every node, each
// reports cluster_state:ok with all 16384 slots assigned and ok, and the
// cluster has 3 masters and 3 replicas.
#include <hiredis/hiredis.h>

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "common/test_env.h"

namespace tiercache::testing {
namespace {

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

Context Connect(int port) {
  timeval tv{2, 0};
  return Context(redisConnectWithTimeout("127.0.0.1", port, tv));
}

std::string Command(redisContext* c, const char* cmd) {
  Reply r(static_cast<redisReply*>(redisCommand(c, cmd)));
  if (!r) return "ERROR: " + std::string(c->errstr);
  if (r->type == REDIS_REPLY_ERROR) return "ERROR: " + std::string(r->str, r->len);
  if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS) return "ERROR: unexpected type";
  return std::string(r->str, r->len);
}

TEST(RedisSmoke, EveryNodeSeesAHealthyClusterCoveringAllSlots) {
  int masters = 0;
  int replicas = 0;
  for (int port : RedisClusterPorts()) {
    TIERCACHE_REQUIRE_SERVER("redis cluster node", port);
    Context c = Connect(port);
    ASSERT_TRUE(c != nullptr);
    ASSERT_EQ(c->err, 0) << "port " << port << ": " << c->errstr;

    std::string info = Command(c.get(), "CLUSTER INFO");
    EXPECT_NE(info.find("cluster_state:ok"), std::string::npos) << port << "\n" << info;
    EXPECT_NE(info.find("cluster_slots_assigned:16384"), std::string::npos) << port << "\n" << info;
    EXPECT_NE(info.find("cluster_slots_ok:16384"), std::string::npos) << port << "\n" << info;
    EXPECT_NE(info.find("cluster_known_nodes:6"), std::string::npos) << port << "\n" << info;

    std::string role = Command(c.get(), "INFO replication");
    if (role.find("role:master") != std::string::npos) ++masters;
    if (role.find("role:slave") != std::string::npos) ++replicas;
  }
  EXPECT_EQ(masters, 3);
  EXPECT_EQ(replicas, 3);
}

TEST(RedisSmoke, KeysRouteToTheirSlotOwner) {
  const int port = RedisClusterPorts()[0];
  TIERCACHE_REQUIRE_SERVER("redis cluster node", port);
  Context c = Connect(port);
  ASSERT_TRUE(c != nullptr && c->err == 0);
  // The spec's example: a key's slot is that of its hash tag.
  Reply r(static_cast<redisReply*>(redisCommand(c.get(), "CLUSTER KEYSLOT %s", "{user1000}.following")));
  ASSERT_TRUE(r != nullptr);
  ASSERT_EQ(r->type, REDIS_REPLY_INTEGER);
  EXPECT_EQ(r->integer, 3443);
}

}  // namespace
}  // namespace tiercache::testing
