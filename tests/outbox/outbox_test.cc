// The outbox's logic without a server: shards, the DDL, option checks.
#include "tiercache/outbox.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace tiercache::outbox {
namespace {

TEST(OutboxTest, ShardsAreStableAndSpread) {
  EXPECT_EQ(ShardOf("42", 64), ShardOf("42", 64));
  EXPECT_EQ(ShardOf("anything", 1), 0);
  std::set<int> used;
  for (int i = 0; i < 1000; ++i) {
    const int s = ShardOf("community-" + std::to_string(i), 64);
    ASSERT_GE(s, 0);
    ASSERT_LT(s, 64);
    used.insert(s);
  }
  EXPECT_EQ(used.size(), 64u) << "1000 keys should reach every one of 64 shards";
  // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c: a fixed function, so writers in
  // other languages can compute the same shard.
  EXPECT_EQ(ShardOf("a", 1000), static_cast<int>(0xaf63dc4c8601ec8cULL % 1000));
}

TEST(OutboxTest, TheDdlCarriesTheShardsAndIsIdempotent) {
  const std::string ddl = OutboxDdl(16);
  EXPECT_NE(ddl.find("VALUES (16)"), std::string::npos);
  EXPECT_NE(ddl.find("CREATE TABLE IF NOT EXISTS tiercache_outbox"), std::string::npos);
  EXPECT_EQ(ddl.find("CREATE TABLE tiercache"), std::string::npos) << "every statement must be re-runnable";
  EXPECT_TRUE(MigrateOutbox("host=127.0.0.1", 0).IsInvalidArgument());
  EXPECT_TRUE(MigrateOutbox("host=127.0.0.1", 5000).IsInvalidArgument());
}

TEST(OutboxTest, RelayOptionsAreChecked) {
  OutboxRelayOptions o;
  o.publisher.brokers = "127.0.0.1:1";
  EXPECT_TRUE(OutboxRelay::Create(o).status().IsInvalidArgument()) << "no conninfo";
  o.conninfo = "host=127.0.0.1 port=1";
  o.batch = 0;
  EXPECT_TRUE(OutboxRelay::Create(o).status().IsInvalidArgument()) << "batch 0";
  o.batch = 10;
  o.backoff_min = std::chrono::milliseconds(10);
  o.backoff_max = std::chrono::milliseconds(5);
  EXPECT_TRUE(OutboxRelay::Create(o).status().IsInvalidArgument()) << "backoff_min > backoff_max";
  o.backoff_max = std::chrono::milliseconds(50);
  // A database nobody listens on: a clear kUnavailable, quickly.
  o.conninfo = "host=127.0.0.1 port=1 connect_timeout=2";
  Result<std::unique_ptr<OutboxRelay>> r = OutboxRelay::Create(o);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
}

TEST(OutboxTest, AppendRefusesANullConnection) {
  EXPECT_FALSE(OutboxWriter::Create(nullptr).ok());
}

}  // namespace
}  // namespace tiercache::outbox
