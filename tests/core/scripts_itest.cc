// The fencing and lease scripts, run by the real Redis Cluster.
#include "core/scripts.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "common/raw_cluster.h"
#include "common/test_env.h"
#include "tiercache/envelope.h"

namespace tiercache {
namespace {

using testing::DescribeReply;
using testing::RawCluster;
using testing::RawReply;

std::string Envelope(EntryKind kind, uint64_t version, std::string_view payload = "") {
  EnvelopeView e;
  e.kind = kind;
  e.version = version;
  e.expires_at = std::chrono::system_clock::now() + std::chrono::seconds(60);
  e.written_at = std::chrono::system_clock::now();
  e.payload = payload;
  return *EncodeEnvelope(e);
}

class ScriptsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    std::mt19937_64 rng(std::random_device{}());
    tag_ = "{tc-scripts-" + std::to_string(rng()) + "}";
    key_ = "posts:" + tag_ + ":7";
    lease_ = key_ + ":lease";
  }

  RawReply Eval(std::string_view script, std::vector<std::string> keys, std::vector<std::string> args) {
    std::vector<std::string> cmd{"EVAL", std::string(script), std::to_string(keys.size())};
    cmd.insert(cmd.end(), keys.begin(), keys.end());
    cmd.insert(cmd.end(), args.begin(), args.end());
    return cluster_.Command(cmd);
  }

  // 1 if stored, 0 if refused; the refused reply's stored version in *stored.
  int Fill(const std::string& envelope, uint64_t* stored = nullptr) {
    RawReply r = Eval(scripts::kFencedFill, {key_}, {envelope, "60000"});
    return Flag(r.get(), stored);
  }
  int Tombstone(uint64_t version, uint64_t* stored = nullptr) {
    RawReply r = Eval(scripts::kTombstone, {key_}, {Envelope(EntryKind::kTombstone, version), "30000"});
    return Flag(r.get(), stored);
  }
  static int Flag(const redisReply* r, uint64_t* stored) {
    EXPECT_TRUE(r != nullptr && r->type == REDIS_REPLY_ARRAY) << DescribeReply(r);
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements < 1) return -1;
    if (r->elements == 2 && stored != nullptr) {
      *stored = 0;
      for (size_t i = 0; i < r->element[1]->len; ++i) {
        *stored = (*stored << 8) | static_cast<unsigned char>(r->element[1]->str[i]);
      }
    }
    return static_cast<int>(r->element[0]->integer);
  }
  std::optional<EnvelopeView> Stored() {
    raw_ = cluster_.Command({"GET", key_});
    if (!raw_ || raw_->type != REDIS_REPLY_STRING) return std::nullopt;
    Result<EnvelopeView> e = DecodeEnvelope(std::string_view(raw_->str, raw_->len));
    if (!e.ok()) return std::nullopt;
    return *e;
  }

  RawCluster cluster_{::tiercache::testing::RedisClusterPorts()};
  std::string tag_, key_, lease_;
  RawReply raw_;
};

TEST_F(ScriptsTest, FillStoresWithThePhysicalTtl) {
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 5, "v5")), 1);
  ASSERT_TRUE(Stored().has_value());
  EXPECT_EQ(Stored()->payload, "v5");
  RawReply ttl = cluster_.Command({"PTTL", key_});
  ASSERT_TRUE(ttl && ttl->type == REDIS_REPLY_INTEGER);
  EXPECT_GT(ttl->integer, 50000);
  EXPECT_LE(ttl->integer, 60000);
}

TEST_F(ScriptsTest, OlderFillIsRefusedAndSameVersionRefreshes) {
  ASSERT_EQ(Fill(Envelope(EntryKind::kValue, 5, "v5")), 1);
  uint64_t stored = 0;
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 4, "v4"), &stored), 0);
  EXPECT_EQ(stored, 5u);
  EXPECT_EQ(Stored()->payload, "v5");
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 5, "v5 again")), 1);
  EXPECT_EQ(Stored()->payload, "v5 again");
}

// The classic race: a loader read v1, the writer commits v2 and invalidates,
// the loader's fill of v1 arrives last and must be refused.
TEST_F(ScriptsTest, TombstoneRefusesTheSlowLoadersOldFill) {
  ASSERT_EQ(Fill(Envelope(EntryKind::kValue, 1, "v1")), 1);
  EXPECT_EQ(Tombstone(2), 1);
  EXPECT_EQ(Stored()->kind, EntryKind::kTombstone);
  uint64_t stored = 0;
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 1, "v1"), &stored), 0);
  EXPECT_EQ(stored, 2u);
  EXPECT_EQ(Fill(Envelope(EntryKind::kNegative, 1)), 0);
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 2, "v2")), 1);
  EXPECT_EQ(Stored()->payload, "v2");
}

TEST_F(ScriptsTest, TombstoneKeepsNewerOrSameVersionValues) {
  ASSERT_EQ(Fill(Envelope(EntryKind::kValue, 5, "v5")), 1);
  EXPECT_EQ(Tombstone(5), 0);  // the cached value already reflects version 5
  EXPECT_EQ(Tombstone(3), 0);  // a late, older event
  EXPECT_EQ(Stored()->payload, "v5");
  EXPECT_EQ(Tombstone(6), 1);
  EXPECT_EQ(Tombstone(6), 1);  // redelivered: harmless
  EXPECT_EQ(Stored()->version, 6u);
}

TEST_F(ScriptsTest, VersionsBeyondDoublePrecisionCompareExactly) {
  const uint64_t big = (1ULL << 60);
  ASSERT_EQ(Fill(Envelope(EntryKind::kValue, big + 1, "newer")), 1);
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, big, "older")), 0);
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, big + 1 + (1ULL << 32), "much newer")), 1);
}

TEST_F(ScriptsTest, ForeignOrCorruptStoredBytesAreOverwritten) {
  RawReply set = cluster_.Command({"SET", key_, "{\"legacy\":\"json\"}"});
  ASSERT_TRUE(set && set->type == REDIS_REPLY_STATUS);
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 1, "fresh")), 1);
  EXPECT_EQ(Stored()->payload, "fresh");
}

TEST_F(ScriptsTest, ArgumentThatIsNotAnEnvelopeIsAnError) {
  RawReply r = Eval(scripts::kFencedFill, {key_}, {"garbage", "1000"});
  ASSERT_TRUE(r != nullptr);
  EXPECT_EQ(r->type, REDIS_REPLY_ERROR) << DescribeReply(r.get());
  r = Eval(scripts::kTombstone, {key_}, {Envelope(EntryKind::kValue, 1), "1000"});
  EXPECT_EQ(r->type, REDIS_REPLY_ERROR) << DescribeReply(r.get());
}

TEST_F(ScriptsTest, LeaseIsReleasedAndExtendedOnlyByItsToken) {
  RawReply r = cluster_.Command({"SET", lease_, "token-a", "NX", "PX", "5000"});
  ASSERT_TRUE(r && r->type == REDIS_REPLY_STATUS);
  r = cluster_.Command({"SET", lease_, "token-b", "NX", "PX", "5000"});
  EXPECT_EQ(r->type, REDIS_REPLY_NIL) << "a second caller must not win a held lease";

  EXPECT_EQ(Eval(scripts::kLeaseExtend, {lease_}, {"token-b", "20000"})->integer, 0);
  EXPECT_EQ(Eval(scripts::kLeaseExtend, {lease_}, {"token-a", "20000"})->integer, 1);
  EXPECT_GT(cluster_.Command({"PTTL", lease_})->integer, 10000);
  EXPECT_EQ(Eval(scripts::kLeaseRelease, {lease_}, {"token-b"})->integer, 0);
  EXPECT_EQ(cluster_.Command({"GET", lease_})->type, REDIS_REPLY_STRING);
  EXPECT_EQ(Eval(scripts::kLeaseRelease, {lease_}, {"token-a"})->integer, 1);
  EXPECT_EQ(cluster_.Command({"GET", lease_})->type, REDIS_REPLY_NIL);
}

TEST_F(ScriptsTest, FillReleasesOnlyItsOwnLease) {
  ASSERT_EQ(cluster_.Command({"SET", lease_, "mine", "PX", "5000"})->type, REDIS_REPLY_STATUS);
  RawReply r = Eval(scripts::kFencedFill, {key_, lease_}, {Envelope(EntryKind::kValue, 1, "x"), "60000", "not-mine"});
  ASSERT_EQ(Flag(r.get(), nullptr), 1);
  EXPECT_EQ(cluster_.Command({"GET", lease_})->type, REDIS_REPLY_STRING) << "another caller's lease was released";
  r = Eval(scripts::kFencedFill, {key_, lease_}, {Envelope(EntryKind::kValue, 1, "x"), "60000", "mine"});
  ASSERT_EQ(Flag(r.get(), nullptr), 1);
  EXPECT_EQ(cluster_.Command({"GET", lease_})->type, REDIS_REPLY_NIL);
}

}  // namespace
}  // namespace tiercache
