// AUTH on every connection, and standalone Redis through the same API:
// servers started by the test itself on free ports (a password-protected
// standalone server with an ACL user, and a password-protected 3-master
// cluster), removed afterwards.
#include <gtest/gtest.h>

#include <thread>

#include "redis/redis_test_util.h"
#include "tiercache/redis/redis_client.h"
#include "tiercache/redis/slot.h"

namespace tiercache::redis {
namespace {

using namespace std::chrono_literals;
using testing::FreePort;
using testing::NodeCommandText;
using testing::ServerProcess;

bool HaveRedisServer() { return std::system("command -v redis-server >/dev/null 2>&1") == 0; }

RedisClientOptions Standalone(int port) {
  RedisClientOptions o;
  o.mode = Mode::kStandalone;
  o.seeds = {Endpoint{"127.0.0.1", port}};
  o.connect_timeout = 500ms;
  o.command_timeout = 500ms;
  return o;
}

TEST(AuthTest, StandaloneWithPasswordAndAclUser) {
  if (!HaveRedisServer()) GTEST_SKIP() << "redis-server is not installed";
  ServerProcess server(FreePort(), {"--requirepass", "s3cret", "--user", "alice", "on", ">alicepw", "~*", "&*", "+@all"});
  ASSERT_TRUE(server.ok());

  RedisClientOptions o = Standalone(server.port());
  o.password = "s3cret";
  auto client = RedisClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  ASSERT_TRUE((*client)->Set("k", "v").ok());
  EXPECT_EQ((*client)->Get("k")->value_or(""), "v");
  auto mget = (*client)->MGet({"k", "nope", "k"});
  ASSERT_TRUE(mget.ok());
  EXPECT_EQ((*mget)[0].value_or(""), "v");
  EXPECT_FALSE((*mget)[1].has_value());

  RedisClientOptions acl = Standalone(server.port());
  acl.username = "alice";
  acl.password = "alicepw";
  auto alice = RedisClient::Create(acl);
  ASSERT_TRUE(alice.ok());
  auto who = (*alice)->Command({"ACL", "WHOAMI"}, CommandOptions{.key_index = -1, .idempotent = true, .read_only = false, .call = {}});
  ASSERT_TRUE(who.ok()) << who.status().ToString();
  EXPECT_EQ(who->str, "alice");
  EXPECT_EQ((*alice)->Get("k")->value_or(""), "v");
}

TEST(AuthTest, WrongOrMissingPasswordFailsFastNamingTheNode) {
  if (!HaveRedisServer()) GTEST_SKIP() << "redis-server is not installed";
  ServerProcess server(FreePort(), {"--requirepass", "s3cret"});
  ASSERT_TRUE(server.ok());
  RedisClientOptions o = Standalone(server.port());
  o.password = "wrong";
  auto client = RedisClient::Create(o);
  ASSERT_TRUE(client.ok());
  auto r = (*client)->Get("k");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition) << r.status().ToString();
  EXPECT_NE(r.status().message().find("127.0.0.1:" + std::to_string(server.port())), std::string_view::npos);

  auto anonymous = RedisClient::Create(Standalone(server.port()));
  ASSERT_TRUE(anonymous.ok());
  auto denied = (*anonymous)->Get("k");
  ASSERT_FALSE(denied.ok());
  EXPECT_NE(denied.status().message().find("NOAUTH"), std::string_view::npos) << denied.status().ToString();
}

TEST(AuthTest, StandaloneServerDownIsUnavailableOrDeadline) {
  RedisClientOptions o = Standalone(FreePort());
  auto client = RedisClient::Create(o);
  ASSERT_TRUE(client.ok());
  auto start = std::chrono::steady_clock::now();
  auto r = (*client)->Get("k");
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsUnavailable() || r.status().IsDeadlineExceeded()) << r.status().ToString();
  EXPECT_LE(took, 600ms);
}

TEST(AuthTest, PasswordProtectedCluster) {
  if (!HaveRedisServer()) GTEST_SKIP() << "redis-server is not installed";
  std::vector<std::unique_ptr<ServerProcess>> nodes;
  std::vector<int> ports;
  std::string create = "redis-cli -a s3cret --no-auth-warning --cluster create";
  for (int i = 0; i < 3; ++i) {
    int port = testing::FreeClusterPort();
    nodes.push_back(std::make_unique<ServerProcess>(
        port, std::vector<std::string>{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                       "--cluster-node-timeout", "2000", "--requirepass", "s3cret",
                                       "--masterauth", "s3cret"}));
    ASSERT_TRUE(nodes.back()->ok());
    ports.push_back(port);
    create += " 127.0.0.1:" + std::to_string(port);
  }
  create += " --cluster-yes >/dev/null 2>&1";
  ASSERT_EQ(std::system(create.c_str()), 0);
  ASSERT_TRUE(testing::WaitClusterHealthy(ports, 30, /*expect_replicas=*/false, "s3cret"));

  RedisClientOptions o;
  for (int p : ports) o.seeds.push_back(Endpoint{"127.0.0.1", p});
  o.password = "s3cret";
  auto client = RedisClient::Create(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  std::vector<std::string> keys;
  std::vector<std::vector<std::string>> sets;
  for (int i = 0; i < 300; ++i) {
    keys.push_back("auth:" + std::to_string(i));
    sets.push_back({"SET", keys.back(), std::to_string(i)});
  }
  for (const auto& r : (*client)->Pipeline(sets)) ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto values = (*client)->MGet(keys);
  ASSERT_TRUE(values.ok()) << values.status().ToString();
  for (int i = 0; i < 300; ++i) EXPECT_EQ((*values)[i].value_or(""), std::to_string(i));

  RedisClientOptions no_password = o;
  no_password.password.clear();
  auto denied = RedisClient::Create(no_password);
  EXPECT_FALSE(denied.ok()) << "CLUSTER SLOTS needs AUTH";
}

}  // namespace
}  // namespace tiercache::redis
