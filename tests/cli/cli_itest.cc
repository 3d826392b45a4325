// The `tiercache` program against the local Redis Cluster: every command,
// its output and its exit code, and the error paths (a server down, a bad
// address, malformed arguments, bytes that are not an envelope).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli/cli_runner.h"
#include "common/test_env.h"
#include "redis/redis_test_util.h"
#include "tiercache/cache.h"
#include "tiercache/l2_store.h"
#include "tiercache/redis/redis_client.h"
#include "tiercache/redis/slot.h"

namespace tiercache {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using testing::Cli;
using testing::CliRun;
using testing::Contains;
using testing::Show;

// A port nothing listens on.
std::string DeadSeed() {
  for (int port = 7990; port < 8100; ++port) {
    if (!testing::PortAcceptsConnections(port)) return "127.0.0.1:" + std::to_string(port);
  }
  return "127.0.0.1:1";
}

class CliItest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", testing::RedisClusterPorts()[0]);
    auto c = redis::RedisClient::Create(redis::testing::ClusterOptions());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::shared_ptr<redis::RedisClient>(std::move(*c));
    CacheOptions o;
    o.l2 = MakeRedisL2Store(client_);
    o.use_l1 = false;
    auto cache = Cache::Create(o);
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    cache_ = std::move(*cache);
    prefix_ = "cli:{t" + std::to_string(::getpid()) + "}:";
  }
  void TearDown() override {
    if (client_) {
      std::vector<std::string> keys;
      for (const char* k : {"a", "b", "c", "member", "foreign"}) {
        keys.push_back(prefix_ + k);
        keys.push_back(LeaseKeyFor(prefix_ + k));
        keys.push_back(FenceKeyFor(prefix_ + k));
      }
      const std::string group = prefix_ + "feed";
      for (const std::string& k : {GroupKeyFor(group), GroupFloorKeyFor(group), RecentEventsKeyFor(group)}) {
        keys.push_back(k);
      }
      for (const std::string& k : keys) client_->Del({k}).status().IgnoreError();  // keys of several slots
    }
  }

  std::shared_ptr<redis::RedisClient> client_;
  std::unique_ptr<Cache> cache_;
  std::string prefix_;
};

TEST_F(CliItest, KeyslotGivesEachKeysSlotAndMaster) {
  const std::string k1 = "posts:{community:42}:7", k2 = "users:9";
  CliRun r = Cli({"keyslot", k1, k2});
  ASSERT_EQ(r.code, 0) << Show(r);
  EXPECT_TRUE(Contains(r.out, k1 + "\tslot " + std::to_string(redis::KeySlot(k1)) + "\tmaster 127.0.0.1:")) << Show(r);
  EXPECT_TRUE(Contains(r.out, k2 + "\tslot " + std::to_string(redis::KeySlot(k2)) + "\tmaster 127.0.0.1:")) << Show(r);
  // The server down: the slots still, the owners not, exit 4.
  r = Cli({"keyslot", k1}, DeadSeed());
  EXPECT_EQ(r.code, 4) << Show(r);
  EXPECT_TRUE(Contains(r.out, k1 + "\tslot " + std::to_string(redis::KeySlot(k1)) + "\n")) << Show(r);
  EXPECT_TRUE(Contains(r.err, "owners unknown")) << Show(r);
}

TEST_F(CliItest, ClusterListsEverySlotRangeWithItsMasterAndReplicas) {
  CliRun r = Cli({"cluster"});
  ASSERT_EQ(r.code, 0) << Show(r);
  EXPECT_TRUE(Contains(r.out, "16384 of 16384 slots served")) << Show(r);
  int ranges = 0;
  for (size_t at = 0; (at = r.out.find("\tmaster ", at)) != std::string::npos; ++at) ++ranges;
  EXPECT_EQ(ranges, 3) << Show(r);
  EXPECT_TRUE(Contains(r.out, "\treplicas 127.0.0.1:")) << Show(r);
}

TEST_F(CliItest, InspectShowsTheEnvelopeTheLeaseAndTheFence) {
  ASSERT_TRUE(cache_->Set(prefix_ + "a", "hello from the source", 7).ok());
  CliRun r = Cli({"inspect", prefix_ + "a"});
  ASSERT_EQ(r.code, 0) << Show(r);
  EXPECT_TRUE(Contains(r.out, "kind         value\n")) << Show(r);
  EXPECT_TRUE(Contains(r.out, "version      7\n")) << Show(r);
  EXPECT_TRUE(Contains(r.out, "payload      hello from the source\n")) << Show(r);
  EXPECT_TRUE(Contains(r.out, "physical ttl ")) << Show(r);
  EXPECT_TRUE(Contains(r.out, "lease        free\n")) << Show(r);
  EXPECT_TRUE(Contains(r.out, "fence        epoch ")) << Show(r);
  EXPECT_TRUE(Contains(r.out, ", floor 7, ")) << "a write-through at 7 raised the floor to 7\n" << Show(r);
  // A lease held: shown with its holder.
  ASSERT_TRUE(client_->Set(LeaseKeyFor(prefix_ + "a"), "pod-7-token").ok());
  r = Cli({"inspect", prefix_ + "a"});
  EXPECT_TRUE(Contains(r.out, "lease        held by pod-7-token")) << Show(r);
  // Nothing stored: exit 3; bytes that are not an envelope: exit 5.
  r = Cli({"inspect", prefix_ + "b"});
  EXPECT_EQ(r.code, 3) << Show(r);
  EXPECT_TRUE(Contains(r.out, "entry        none\n")) << Show(r);
  ASSERT_TRUE(client_->Set(prefix_ + "foreign", "not ours").ok());
  r = Cli({"inspect", prefix_ + "foreign"});
  EXPECT_EQ(r.code, 5) << Show(r);
  EXPECT_TRUE(Contains(r.out, "not a tiercache envelope")) << Show(r);
}

TEST_F(CliItest, GetPrintsOnlyACurrentValue) {
  ASSERT_TRUE(cache_->Set(prefix_ + "a", "v-one", 1).ok());
  CliRun r = Cli({"get", prefix_ + "a"});
  ASSERT_EQ(r.code, 0) << Show(r);
  EXPECT_EQ(r.out, "v-one\n");
  r = Cli({"get", prefix_ + "b"});
  EXPECT_EQ(r.code, 3) << Show(r);
  EXPECT_TRUE(Contains(r.err, "nothing stored")) << Show(r);
  ASSERT_TRUE(cache_->Invalidate(prefix_ + "a", 2).ok());
  r = Cli({"get", prefix_ + "a"});
  EXPECT_EQ(r.code, 3) << Show(r);
  EXPECT_TRUE(Contains(r.err, "tombstone")) << Show(r);
  ASSERT_TRUE(client_->Set(prefix_ + "foreign", "not ours").ok());
  r = Cli({"get", prefix_ + "foreign"});
  EXPECT_EQ(r.code, 5) << Show(r);
}

TEST_F(CliItest, AGroupMemberIsCurrentOnlyAtItsGroupsGeneration) {
  const std::string group = prefix_ + "feed";
  GetOptions in_group;
  in_group.group = group;
  ASSERT_TRUE(cache_->Set(prefix_ + "member", "in the feed", 3, in_group).ok());
  CliRun r = Cli({"get", prefix_ + "member", "--group", group});
  ASSERT_EQ(r.code, 0) << Show(r);
  EXPECT_EQ(r.out, "in the feed\n");
  r = Cli({"inspect", prefix_ + "member", "--group", group});
  EXPECT_TRUE(Contains(r.out, "(the entry is current)")) << Show(r);
  // The group moves (by the command itself): the member is no longer current.
  r = Cli({"invalidate", "--group", group});
  ASSERT_EQ(r.code, 0) << Show(r);
  EXPECT_TRUE(Contains(r.out, "invalidated group " + group)) << Show(r);
  r = Cli({"get", prefix_ + "member", "--group", group});
  EXPECT_EQ(r.code, 3) << Show(r);
  EXPECT_TRUE(Contains(r.err, "not current in group")) << Show(r);
  r = Cli({"inspect", prefix_ + "member", "--group", group});
  EXPECT_TRUE(Contains(r.out, "NOT current")) << Show(r);
  // Read outside the group, a member is not shown as current.
  ASSERT_TRUE(cache_->Set(prefix_ + "member", "again", 4, in_group).ok());
  r = Cli({"get", prefix_ + "member"});
  EXPECT_EQ(r.code, 3) << Show(r);
  EXPECT_TRUE(Contains(r.err, "--group")) << Show(r);
  r = Cli({"inspect", prefix_ + "a", "--group", "bad{group"});
  EXPECT_EQ(r.code, 2) << Show(r);
}

TEST_F(CliItest, InvalidateWritesAVersionedTombstoneAndIgnoresOlderVersions) {
  ASSERT_TRUE(cache_->Set(prefix_ + "c", "v4", 4).ok());
  CliRun r = Cli({"invalidate", prefix_ + "c", "--version", "5"});
  ASSERT_EQ(r.code, 0) << Show(r);
  EXPECT_TRUE(Contains(r.out, "invalidated key " + prefix_ + "c at version 5 in L2 (no event published")) << Show(r);
  r = Cli({"inspect", prefix_ + "c"});
  EXPECT_TRUE(Contains(r.out, "kind         tombstone")) << Show(r);
  EXPECT_TRUE(Contains(r.out, "version      5\n")) << Show(r);
  // A fill of version 4 is refused now (the tombstone fences it).
  EXPECT_TRUE(cache_->Set(prefix_ + "c", "v4 again", 4).IsAborted());
  r = Cli({"invalidate", prefix_ + "c", "--version", "3"});
  EXPECT_EQ(r.code, 0) << Show(r);
  EXPECT_TRUE(Contains(r.out, "ignored")) << Show(r);
}

TEST_F(CliItest, MalformedInputAndUnreachableServersGetOneLineErrorsAndTheirExitCodes) {
  struct Case {
    std::vector<std::string> args;
    std::string redis;
    int code;
    std::string says;
  };
  const std::string dead = DeadSeed();
  const Case cases[] = {
      {{"cluster"}, dead, 4, "UNAVAILABLE"},
      {{"get", prefix_ + "a"}, dead, 4, "UNAVAILABLE"},
      {{"inspect", prefix_ + "a"}, dead, 4, "UNAVAILABLE"},
      {{"invalidate", prefix_ + "a"}, dead, 4, "UNAVAILABLE"},
      {{"cluster"}, "no-port-here", 2, "host:port"},
      {{"cluster"}, "127.0.0.1:7000x", 2, "host:port"},
      {{"invalidate", "--version", "abc", prefix_ + "a"}, "", 2, "--version"},
      {{"invalidate"}, "", 2, "KEY or a --group"},
      {{"invalidate", prefix_ + "a", "--group", "g"}, "", 2, "KEY or a --group"},
      {{"get"}, "", 2, "KEY"},
      {{"keyslot", ""}, "", 2, "empty key"},
      {{}, "", 2, "subcommand"},
  };
  for (const Case& c : cases) {
    CliRun r = Cli(c.args, c.redis);
    std::string what;
    for (const std::string& a : c.args) what += a + " ";
    EXPECT_EQ(r.code, c.code) << what << "\n" << Show(r);
    EXPECT_TRUE(Contains(r.err, c.says)) << what << "\n" << Show(r);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << what << "\n" << Show(r);
  }
  CliRun help = Cli({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_TRUE(Contains(help.out, "Exit codes")) << Show(help);
  for (const char* sub : {"keyslot", "cluster", "inspect", "get", "invalidate"}) {
    CliRun h = Cli({sub, "--help"});
    EXPECT_EQ(h.code, 0) << sub;
    EXPECT_TRUE(Contains(h.out, "Usage")) << sub << "\n" << Show(h);
  }
}

}  // namespace
}  // namespace tiercache
