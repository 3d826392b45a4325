// Option validation: every nonsense value is refused once, at Create().
#include "tiercache/redis/options.h"

#include <gtest/gtest.h>

#include "tiercache/redis/redis_client.h"

namespace tiercache::redis {
namespace {

RedisClientOptions Valid() {
  RedisClientOptions o;
  o.seeds = {Endpoint{"127.0.0.1", 7000}};
  return o;
}

TEST(OptionsTest, DefaultsWithASeedAreValidAndFinite) {
  RedisClientOptions o = Valid();
  EXPECT_TRUE(o.Validate().ok());
  EXPECT_GT(o.connect_timeout.count(), 0);
  EXPECT_GT(o.command_timeout.count(), 0);
  EXPECT_EQ(o.topology_refresh_interval, std::chrono::seconds(10));
  EXPECT_FALSE(o.read_from_replicas);
}

TEST(OptionsTest, RejectsNonsense) {
  auto expect_bad = [](RedisClientOptions o, const char* what) {
    Status s = o.Validate();
    EXPECT_TRUE(s.IsInvalidArgument()) << what << ": " << s.ToString();
  };
  RedisClientOptions o = Valid();
  o.seeds.clear();
  expect_bad(o, "no seeds");
  o = Valid();
  o.seeds[0].port = 0;
  expect_bad(o, "port 0");
  o = Valid();
  o.seeds[0].host = "";
  expect_bad(o, "empty host");
  o = Valid();
  o.username = "u";
  expect_bad(o, "user without password");
  o = Valid();
  o.connect_timeout = std::chrono::milliseconds(0);
  expect_bad(o, "zero connect timeout");
  o = Valid();
  o.command_timeout = std::chrono::milliseconds(-1);
  expect_bad(o, "negative command timeout");
  o = Valid();
  o.topology_probe_timeout = std::chrono::milliseconds(0);
  expect_bad(o, "zero topology probe timeout");
  o = Valid();
  o.connections_per_node = 0;
  expect_bad(o, "no connections");
  o = Valid();
  o.max_redirects = 0;
  expect_bad(o, "no redirects");
  o = Valid();
  o.retry_backoff_max = std::chrono::milliseconds(1);
  expect_bad(o, "max backoff below min");
  o = Valid();
  o.min_refresh_interval = std::chrono::seconds(20);
  expect_bad(o, "min refresh above periodic");
  o = Valid();
  o.max_outstanding_requests = 0;
  expect_bad(o, "no outstanding requests");
  o = Valid();
  o.mode = Mode::kStandalone;
  o.read_from_replicas = true;
  expect_bad(o, "replica reads on standalone");
}

TEST(OptionsTest, CreateRefusesInvalidOptionsWithoutTouchingTheNetwork) {
  RedisClientOptions o;
  auto client = RedisClient::Create(o);
  ASSERT_FALSE(client.ok());
  EXPECT_TRUE(client.status().IsInvalidArgument());
}

TEST(OptionsTest, CreateFailsUnavailableWhenNoSeedAnswers) {
  RedisClientOptions o;
  o.seeds = {Endpoint{"127.0.0.1", 1}};  // nothing listens on port 1
  o.connect_timeout = std::chrono::milliseconds(200);
  o.command_timeout = std::chrono::milliseconds(200);
  auto client = RedisClient::Create(o);
  ASSERT_FALSE(client.ok());
  EXPECT_TRUE(client.status().IsUnavailable()) << client.status().ToString();
}

}  // namespace
}  // namespace tiercache::redis
