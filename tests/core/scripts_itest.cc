// The fencing and lease scripts, run by the real Redis Cluster.
#include "core/scripts.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/raw_cluster.h"
#include "common/test_env.h"
#include "tiercache/envelope.h"

namespace tiercache {
namespace {

using testing::DescribeReply;
using testing::RawCluster;
using testing::RawReply;

constexpr uint64_t kTwoTo53 = 1ULL << 53;
constexpr uint64_t kMaxVersion = ~0ULL;

std::string Envelope(EntryKind kind, uint64_t version, std::string_view payload = "") {
  EnvelopeView e;
  e.kind = kind;
  e.version = version;
  e.expires_at = std::chrono::system_clock::now() + std::chrono::seconds(60);
  e.written_at = std::chrono::system_clock::now();
  e.payload = payload;
  return *EncodeEnvelope(e);
}

int64_t LocalWallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A fill's or an invalidation's reply: {1}, or {0, reason, <8-byte version>}.
struct Outcome {
  int flag = -1;  // 1 stored/applied, 0 refused, -1 a malformed reply
  int reason = 0;
  uint64_t version = 0;
  bool operator==(const Outcome&) const = default;
};
Outcome Stored() { return Outcome{1, 0, 0}; }
Outcome Refused(int reason, uint64_t version = 0) { return Outcome{0, reason, version}; }
std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  if (o.flag == 1) return os << "{stored}";
  if (o.flag == 0) return os << "{refused, reason " << o.reason << ", version " << o.version << "}";
  return os << "{malformed reply}";
}

// A fence snapshot as kSnapshot (or kLeaseAcquire) returns it.
struct Snap {
  std::string epoch;  // empty: no fence key
  int64_t ms = 0;     // the server's clock
};

// A fence value is "<epoch>|<8-byte big-endian version floor>" (l2_store.h).
std::string EpochOf(const std::optional<std::string>& fence) {
  if (!fence) return "(no fence key)";
  if (fence->size() >= 9 && (*fence)[fence->size() - 9] == '|') return fence->substr(0, fence->size() - 9);
  return *fence;
}
std::string EpochOf(const std::string& fence) { return EpochOf(std::optional<std::string>(fence)); }
uint64_t FloorOf(const std::optional<std::string>& fence) {
  uint64_t v = 0;
  if (!fence || fence->size() < 9 || (*fence)[fence->size() - 9] != '|') return 0;
  for (size_t i = fence->size() - 8; i < fence->size(); ++i) v = (v << 8) | static_cast<uint8_t>((*fence)[i]);
  return v;
}

class ScriptsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TIERCACHE_REQUIRE_SERVER("redis cluster", ::tiercache::testing::RedisClusterPorts()[0]);
    std::mt19937_64 rng(std::random_device{}());
    tag_ = "{tc-scripts-" + std::to_string(rng()) + "}";
    key_ = "posts:" + tag_ + ":7";
    lease_ = key_ + ":lease";
    fence_ = key_ + ":fence";
  }

  RawReply Eval(std::string_view script, std::vector<std::string> keys, std::vector<std::string> args) {
    std::vector<std::string> cmd{"EVAL", std::string(script), std::to_string(keys.size())};
    cmd.insert(cmd.end(), keys.begin(), keys.end());
    cmd.insert(cmd.end(), args.begin(), args.end());
    return cluster_.Command(cmd);
  }

  // kSnapshot of the fence key.
  Snap Snapshot() {
    RawReply r = Eval(scripts::kSnapshot, {fence_}, {});
    EXPECT_TRUE(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) << DescribeReply(r.get());
    Snap s;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) return s;
    EXPECT_EQ(r->element[0]->type, REDIS_REPLY_INTEGER) << DescribeReply(r.get());
    s.ms = r->element[0]->integer;
    if (r->element[1]->type == REDIS_REPLY_STRING) s.epoch.assign(r->element[1]->str, r->element[1]->len);
    else EXPECT_EQ(r->element[1]->type, REDIS_REPLY_NIL) << DescribeReply(r.get());
    return s;
  }

  // A fill ('f') checked against `snap`; with a lease token, KEYS[3]/ARGV[7].
  Outcome Fill(const std::string& envelope, const Snap& snap, std::string max_age_ms = "5000",
               std::string ttl_ms = "60000", std::optional<std::string> lease_token = std::nullopt) {
    std::vector<std::string> keys{key_, fence_};
    std::vector<std::string> args{envelope, ttl_ms, "f", snap.epoch, std::to_string(snap.ms), max_age_ms};
    if (lease_token) {
      keys.push_back(lease_);
      args.push_back(*lease_token);
    }
    RawReply r = Eval(scripts::kFill, keys, args);
    return Parse(r.get());
  }
  // A fill with a snapshot taken just now.
  Outcome FreshFill(const std::string& envelope) { return Fill(envelope, Snapshot()); }

  // A write-through ('w'): installs `new_epoch` (fence TTL `fence_ttl_ms`) when it stores.
  Outcome WriteThrough(const std::string& envelope, const std::string& new_epoch, std::string fence_ttl_ms = "30000",
                       std::optional<std::string> lease_token = std::nullopt) {
    std::vector<std::string> keys{key_, fence_};
    // ARGV[5] is a snapshot time from 1970: a write-through must not look at it.
    std::vector<std::string> args{envelope, "60000", "w", new_epoch, "0", fence_ttl_ms};
    if (lease_token) {
      keys.push_back(lease_);
      args.push_back(*lease_token);
    }
    RawReply r = Eval(scripts::kFill, keys, args);
    return Parse(r.get());
  }

  Outcome Invalidate(uint64_t version, const std::string& new_epoch, std::string tombstone_ttl_ms = "30000",
                     std::string fence_ttl_ms = "60000") {
    RawReply r = Eval(scripts::kInvalidate, {key_, fence_},
                      {Envelope(EntryKind::kTombstone, version), tombstone_ttl_ms, new_epoch, fence_ttl_ms});
    return Parse(r.get());
  }

  static Outcome Parse(const redisReply* r) {
    EXPECT_TRUE(r != nullptr && r->type == REDIS_REPLY_ARRAY) << DescribeReply(r);
    Outcome o;
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements < 1) return o;
    if (r->element[0]->type != REDIS_REPLY_INTEGER) return o;
    // Applied: {1}; a fill also says the version stored: {1, <8 bytes>}.
    if (r->element[0]->integer == 1 && r->elements == 1) return Stored();
    if (r->element[0]->integer == 1 && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING &&
        r->element[1]->len == 8) {
      return Stored();
    }
    if (r->element[0]->integer != 0 || r->elements != 3) return o;
    const redisReply* reason = r->element[1];
    const redisReply* version = r->element[2];
    if (reason->type != REDIS_REPLY_INTEGER || version->type != REDIS_REPLY_STRING) return o;
    if (version->len != 8 && version->len != 0) return o;
    o.flag = 0;
    o.reason = static_cast<int>(reason->integer);
    for (size_t i = 0; i < version->len; ++i) o.version = (o.version << 8) | static_cast<unsigned char>(version->str[i]);
    return o;
  }

  std::optional<std::string> GetRaw(const std::string& key) {
    RawReply r = cluster_.Command({"GET", key});
    EXPECT_TRUE(r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_NIL)) << DescribeReply(r.get());
    if (!r || r->type != REDIS_REPLY_STRING) return std::nullopt;
    return std::string(r->str, r->len);
  }
  void SetRaw(const std::string& key, const std::string& bytes) {
    RawReply r = cluster_.Command({"SET", key, bytes, "PX", "60000"});
    ASSERT_TRUE(r && r->type == REDIS_REPLY_STATUS) << DescribeReply(r.get());
  }
  void Del(const std::string& key) {
    RawReply r = cluster_.Command({"DEL", key});
    ASSERT_TRUE(r && r->type == REDIS_REPLY_INTEGER) << DescribeReply(r.get());
  }
  long long Pttl(const std::string& key) {
    RawReply r = cluster_.Command({"PTTL", key});
    EXPECT_TRUE(r && r->type == REDIS_REPLY_INTEGER) << DescribeReply(r.get());
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : -100;
  }

  // The stored envelope of key_, decoded (CRC checked unless told not to).
  std::optional<EnvelopeView> Decoded(bool verify_checksum = true) {
    std::optional<std::string> bytes = GetRaw(key_);
    if (!bytes) return std::nullopt;
    raw_ = std::move(*bytes);
    Result<EnvelopeView> e = DecodeEnvelope(raw_, verify_checksum);
    EXPECT_TRUE(e.ok()) << "the stored bytes do not decode";
    if (!e.ok()) return std::nullopt;
    return *e;
  }

  // Stores `bytes` (which begin like an envelope of version 2^64-1) and
  // checks that they do not refuse a fill of version 1.
  void ExpectDoesNotFence(const std::string& bytes) {
    SetRaw(key_, bytes);
    const std::string fresh = Envelope(EntryKind::kValue, 1, "fresh");
    EXPECT_EQ(FreshFill(fresh), Stored());
    EXPECT_EQ(GetRaw(key_), fresh);
  }

  RawCluster cluster_{::tiercache::testing::RedisClusterPorts()};
  std::string tag_, key_, lease_, fence_;
  std::string raw_;
};

// ---- kFill: TTL and versions ----

TEST_F(ScriptsTest, FillStoresWithThePhysicalTtl) {
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 5, "v5"), Snapshot(), "5000", "60000"), Stored());
  ASSERT_TRUE(Decoded().has_value());
  EXPECT_EQ(Decoded()->payload, "v5");
  long long ttl = Pttl(key_);
  EXPECT_GT(ttl, 55000);
  EXPECT_LE(ttl, 60000);
  EXPECT_EQ(Pttl(fence_), -2) << "a fill does not create a fence";
}

TEST_F(ScriptsTest, OlderFillIsRefusedWithTheStoredVersion) {
  ASSERT_EQ(FreshFill(Envelope(EntryKind::kValue, 5, "v5")), Stored());
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, 4, "v4")), Refused(1, 5));
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kNegative, 4)), Refused(1, 5));
  EXPECT_EQ(Decoded()->payload, "v5");
}

TEST_F(ScriptsTest, SameVersionFillRefreshes) {
  ASSERT_EQ(FreshFill(Envelope(EntryKind::kValue, 5, "v5")), Stored());
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 5, "v5 again"), Snapshot(), "5000", "90000"), Stored());
  EXPECT_EQ(Decoded()->payload, "v5 again");
  EXPECT_GT(Pttl(key_), 85000) << "the refresh sets the new TTL";
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, 6, "v6")), Stored());
  EXPECT_EQ(Decoded()->version, 6u);
}

TEST_F(ScriptsTest, VersionsBeyondTwoTo53CompareExactly) {
  // As doubles, 2^53 + 1 == 2^53: a naive comparison would call them equal.
  ASSERT_EQ(FreshFill(Envelope(EntryKind::kValue, kTwoTo53 + 1, "newer")), Stored());
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, kTwoTo53, "older")), Refused(1, kTwoTo53 + 1));
  EXPECT_EQ(Decoded()->payload, "newer");
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, kTwoTo53 + 2, "newest")), Stored());
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, kMaxVersion - 1, "near max")), Stored());
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, kTwoTo53 + 2, "late")), Refused(1, kMaxVersion - 1));
}

// ---- The fence ----

// The headline guarantee: a load whose snapshot predates an invalidation can
// never fill after it, even once the tombstone has expired.
TEST_F(ScriptsTest, SnapshotBeforeInvalidationIsRefusedAfterTheTombstoneExpires) {
  ASSERT_EQ(FreshFill(Envelope(EntryKind::kValue, 1, "v1")), Stored());
  const Snap before = Snapshot();
  ASSERT_EQ(Invalidate(2, "epoch-after", /*tombstone_ttl_ms=*/"50"), Stored());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_EQ(GetRaw(key_), std::nullopt) << "the tombstone should have expired";

  // Even a version the tombstone would have let through is refused.
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 1, "v1 stale"), before), Refused(2));
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 2, "v2 from a stale load"), before), Refused(2));
  EXPECT_EQ(GetRaw(key_), std::nullopt);

  const Snap after = Snapshot();
  EXPECT_EQ(EpochOf(after.epoch), "epoch-after");
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 2, "v2"), after), Stored());
  EXPECT_EQ(Decoded()->payload, "v2");
}

TEST_F(ScriptsTest, SnapshotBeforeInvalidationIsRefusedAfterTheTombstoneIsDeleted) {
  ASSERT_EQ(FreshFill(Envelope(EntryKind::kValue, 1, "v1")), Stored());
  const Snap before = Snapshot();
  ASSERT_EQ(Invalidate(2, "epoch-after"), Stored());
  Del(key_);
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 3, "v3 from a stale load"), before), Refused(2));
  EXPECT_EQ(GetRaw(key_), std::nullopt);
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, 3, "v3")), Stored());
}

TEST_F(ScriptsTest, LeaseSnapshotBeforeInvalidationIsRefused) {
  RawReply r = Eval(scripts::kLeaseAcquire, {key_, lease_, fence_}, {"loader", "5000"});
  ASSERT_TRUE(r && r->type == REDIS_REPLY_ARRAY && r->elements == 4) << DescribeReply(r.get());
  ASSERT_EQ(r->element[0]->integer, 1);
  Snap before;
  if (r->element[2]->type == REDIS_REPLY_STRING) before.epoch.assign(r->element[2]->str, r->element[2]->len);
  before.ms = r->element[3]->integer;

  ASSERT_EQ(Invalidate(0, "epoch-after", "50"), Stored());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 1, "stale"), before, "5000", "60000", "loader"), Refused(2));
  EXPECT_EQ(GetRaw(key_), std::nullopt);
  EXPECT_EQ(GetRaw(lease_), std::nullopt) << "the refused fill releases its lease";
}

TEST_F(ScriptsTest, SnapshotOlderThanMaxAgeIsRefused) {
  Snap old = Snapshot();
  old.ms -= 10000;
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 1, "v1"), old, /*max_age_ms=*/"5000"), Refused(3));
  EXPECT_EQ(GetRaw(key_), std::nullopt);
  // The same epoch, younger than max age, stores.
  old.ms += 10000 - 1000;
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 1, "v1"), old, "5000"), Stored());
}

TEST_F(ScriptsTest, EmptyEpochStoresWhenNoFenceExists) {
  const Snap s = Snapshot();
  ASSERT_EQ(s.epoch, "");
  EXPECT_NEAR(static_cast<double>(s.ms), static_cast<double>(LocalWallMs()), 5000.0);
  EXPECT_EQ(Fill(Envelope(EntryKind::kNegative, 1), s), Stored());
  EXPECT_EQ(Decoded()->kind, EntryKind::kNegative);
}

TEST_F(ScriptsTest, EmptyEpochIsRefusedWhenAFenceExists) {
  const Snap none = Snapshot();
  ASSERT_EQ(none.epoch, "");
  SetRaw(fence_, "someone-elses-epoch");
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 1, "v1"), none), Refused(2));
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 1, "v1"), Snap{"a-wrong-epoch", none.ms}), Refused(2));
  EXPECT_EQ(GetRaw(key_), std::nullopt);
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, 1, "v1")), Stored());
}

// An epoch the snapshot saw is gone (the fence expired): it differs from ''.
TEST_F(ScriptsTest, EpochOfAnExpiredFenceIsRefused) {
  RawReply set = cluster_.Command({"SET", fence_, "short-lived", "PX", "50"});
  ASSERT_TRUE(set && set->type == REDIS_REPLY_STATUS) << DescribeReply(set.get());
  const Snap s = Snapshot();
  ASSERT_EQ(s.epoch, "short-lived");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_EQ(GetRaw(fence_), std::nullopt);
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 1, "v1"), s), Refused(2));
  EXPECT_EQ(GetRaw(key_), std::nullopt);
}

TEST_F(ScriptsTest, SnapshotReturnsServerTimeAndEachEpoch) {
  const std::string other_fence = "posts:" + tag_ + ":8:fence";
  SetRaw(fence_, "epoch-7");
  RawReply r = Eval(scripts::kSnapshot, {fence_, other_fence}, {});
  ASSERT_TRUE(r && r->type == REDIS_REPLY_ARRAY && r->elements == 3) << DescribeReply(r.get());
  ASSERT_EQ(r->element[0]->type, REDIS_REPLY_INTEGER);
  EXPECT_NEAR(static_cast<double>(r->element[0]->integer), static_cast<double>(LocalWallMs()), 5000.0);
  ASSERT_EQ(r->element[1]->type, REDIS_REPLY_STRING);
  EXPECT_EQ(std::string(r->element[1]->str, r->element[1]->len), "epoch-7");
  EXPECT_EQ(r->element[2]->type, REDIS_REPLY_NIL);
}

// ---- Write-through ----

TEST_F(ScriptsTest, WriteThroughIgnoresTheSnapshotAndInstallsTheNewEpoch) {
  ASSERT_EQ(Invalidate(0, "epoch-1"), Stored());
  const Snap pre_write = Snapshot();
  ASSERT_EQ(EpochOf(pre_write.epoch), "epoch-1");

  EXPECT_EQ(WriteThrough(Envelope(EntryKind::kValue, 3, "written"), "epoch-2", /*fence_ttl_ms=*/"30000"), Stored());
  EXPECT_EQ(Decoded()->payload, "written");
  EXPECT_EQ(EpochOf(GetRaw(fence_)), "epoch-2");
  long long fence_ttl = Pttl(fence_);
  EXPECT_GT(fence_ttl, 25000);
  EXPECT_LE(fence_ttl, 30000);
  EXPECT_GT(Pttl(key_), 55000);

  // A load that snapshotted before the write cannot overwrite it, even with a
  // newer version.
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 4, "stale load"), pre_write), Refused(2));
  EXPECT_EQ(Decoded()->payload, "written");
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, 4, "fresh load")), Stored());
}

TEST_F(ScriptsTest, WriteThroughOfAnOlderVersionIsRefusedAndKeepsTheEpoch) {
  ASSERT_EQ(WriteThrough(Envelope(EntryKind::kValue, 5, "v5"), "epoch-1"), Stored());
  EXPECT_EQ(WriteThrough(Envelope(EntryKind::kValue, 4, "v4"), "epoch-2"), Refused(1, 5));
  EXPECT_EQ(Decoded()->payload, "v5");
  EXPECT_EQ(EpochOf(GetRaw(fence_)), "epoch-1");
}

// ---- kInvalidate ----

TEST_F(ScriptsTest, VersionedInvalidationOverAnOlderValueApplies) {
  ASSERT_EQ(FreshFill(Envelope(EntryKind::kValue, 5, "v5")), Stored());
  EXPECT_EQ(Invalidate(6, "epoch-6", /*tombstone_ttl_ms=*/"20000", /*fence_ttl_ms=*/"40000"), Stored());
  ASSERT_TRUE(Decoded().has_value());
  EXPECT_EQ(Decoded()->kind, EntryKind::kTombstone);
  EXPECT_EQ(Decoded()->version, 6u);
  EXPECT_GT(Pttl(key_), 15000);
  EXPECT_LE(Pttl(key_), 20000);
  EXPECT_EQ(EpochOf(GetRaw(fence_)), "epoch-6");
  EXPECT_GT(Pttl(fence_), 35000);
  EXPECT_LE(Pttl(fence_), 40000);
  // Fills of versions below the tombstone's are refused by version; of its
  // version, they pass.
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, 5, "v5")), Refused(1, 6));
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, 6, "v6")), Stored());
}

TEST_F(ScriptsTest, VersionedInvalidationOverANewerOrSameVersionEntryIsANoOp) {
  SetRaw(fence_, "epoch-0");
  ASSERT_EQ(FreshFill(Envelope(EntryKind::kValue, 5, "v5")), Stored());
  const std::string value = *GetRaw(key_);
  EXPECT_EQ(Invalidate(5, "epoch-a"), Refused(1, 5));
  EXPECT_EQ(Invalidate(3, "epoch-b"), Refused(1, 5));
  EXPECT_EQ(GetRaw(key_), value);
  EXPECT_EQ(EpochOf(GetRaw(fence_)), "epoch-0") << "a no-op keeps the epoch";
  EXPECT_EQ(FloorOf(GetRaw(fence_)), 5u) << "but raises the floor";

  // A negative entry, with no fence key: the no-op leaves a floor (and no epoch).
  Del(fence_);
  Del(key_);
  ASSERT_EQ(FreshFill(Envelope(EntryKind::kNegative, 5)), Stored());
  const std::string negative = *GetRaw(key_);
  const Snap before = Snapshot();
  EXPECT_EQ(Invalidate(5, "epoch-c"), Refused(1, 5));
  EXPECT_EQ(Invalidate(4, "epoch-d"), Refused(1, 5));
  EXPECT_EQ(GetRaw(key_), negative);
  EXPECT_EQ(EpochOf(GetRaw(fence_)), "");
  EXPECT_EQ(FloorOf(GetRaw(fence_)), 5u);
  // The floor outlives the entry it was raised over: with the entry gone
  // (evicted), a load of an older version that began before is still refused,
  // the current version is not.
  Del(key_);
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 4, "v4"), before), Refused(1, 5));
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 5, "v5"), before), Stored());
}

TEST_F(ScriptsTest, RedeliveredVersionedInvalidationIsANoOp) {
  ASSERT_EQ(Invalidate(6, "epoch-first"), Stored());
  const std::string tombstone = *GetRaw(key_);
  const Snap after_first = Snapshot();
  EXPECT_EQ(Invalidate(6, "epoch-redelivered"), Refused(1, 6));
  EXPECT_EQ(Invalidate(2, "epoch-late"), Refused(1, 6));
  EXPECT_EQ(GetRaw(key_), tombstone);
  EXPECT_EQ(EpochOf(GetRaw(fence_)), "epoch-first");
  // So a load that started between the delivery and the redelivery may fill.
  EXPECT_EQ(Fill(Envelope(EntryKind::kValue, 6, "v6"), after_first), Stored());
}

// "Not found" from a source without versions, then the row appears at v3.
TEST_F(ScriptsTest, VersionedInvalidationOverAnUnversionedNegativeApplies) {
  ASSERT_EQ(FreshFill(Envelope(EntryKind::kNegative, 0)), Stored());
  const Snap before = Snapshot();
  EXPECT_EQ(Invalidate(3, "epoch-3"), Stored());
  EXPECT_EQ(Decoded()->kind, EntryKind::kTombstone);
  EXPECT_EQ(Decoded()->version, 3u);
  EXPECT_EQ(EpochOf(GetRaw(fence_)), "epoch-3");
  EXPECT_EQ(Fill(Envelope(EntryKind::kNegative, 0), before), Refused(2));
  // An unversioned not-found read after the tombstone takes its version.
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kNegative, 0)), Stored());
  std::optional<EnvelopeView> e = Decoded();  // the CRC included
  ASSERT_TRUE(e.has_value()) << "the re-versioned negative entry does not decode";
  EXPECT_EQ(e->kind, EntryKind::kNegative);
  EXPECT_EQ(e->version, 3u);
  // An unversioned value is not: it may be older than the tombstone.
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, 0, "no version")), Refused(1, 3));
}

TEST_F(ScriptsTest, UnversionedInvalidationAppliesOverUnversionedEntries) {
  ASSERT_EQ(FreshFill(Envelope(EntryKind::kValue, 0, "v")), Stored());
  EXPECT_EQ(Invalidate(0, "epoch-a"), Stored());
  EXPECT_EQ(Decoded()->kind, EntryKind::kTombstone);
  EXPECT_EQ(Decoded()->version, 0u);
  EXPECT_EQ(EpochOf(GetRaw(fence_)), "epoch-a");

  // Over its own (version 0) tombstone: applies again, with a new epoch.
  EXPECT_EQ(Invalidate(0, "epoch-b"), Stored());
  EXPECT_EQ(Decoded()->kind, EntryKind::kTombstone);
  EXPECT_EQ(Decoded()->version, 0u);
  EXPECT_EQ(EpochOf(GetRaw(fence_)), "epoch-b");

  // And over nothing at all.
  Del(key_);
  EXPECT_EQ(Invalidate(0, "epoch-c"), Stored());
  EXPECT_EQ(Decoded()->version, 0u);
  EXPECT_EQ(EpochOf(GetRaw(fence_)), "epoch-c");
}

TEST_F(ScriptsTest, UnversionedInvalidationOverAVersionedEntryTombstonesAtItsVersion) {
  for (uint64_t w : {uint64_t{7}, uint64_t{0xFFFFFFFFull}, uint64_t{0x1FFFFFFFFull}, kTwoTo53 + 1}) {
    SCOPED_TRACE("w = " + std::to_string(w));
    Del(key_);
    ASSERT_EQ(FreshFill(Envelope(EntryKind::kValue, w, "w")), Stored());
    const Snap before = Snapshot();
    const std::string epoch = "epoch-" + std::to_string(w);
    EXPECT_EQ(Invalidate(0, epoch), Stored());
    // Kind and version here; the checksum in the next test.
    std::optional<EnvelopeView> e = Decoded(/*verify_checksum=*/false);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->kind, EntryKind::kTombstone);
    EXPECT_EQ(e->version, w);
    EXPECT_EQ(EpochOf(GetRaw(fence_)), epoch);
    // Idempotent: delivered again, it stays at w.
    EXPECT_EQ(Invalidate(0, epoch + "-again"), Stored());
    EXPECT_EQ(Decoded(/*verify_checksum=*/false)->version, w);
    // A load that began before it is refused by the epoch; one that began
    // after may store the source's (unchanged) version w.
    EXPECT_EQ(Fill(Envelope(EntryKind::kValue, w, "read before"), before), Refused(2));
    EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, w, "read after")), Stored());
  }
  // Over a versioned tombstone too.
  Del(key_);
  ASSERT_EQ(Invalidate(9, "epoch-v9"), Stored());
  EXPECT_EQ(Invalidate(0, "epoch-v0"), Stored());
  EXPECT_EQ(Decoded(/*verify_checksum=*/false)->version, 9u);
}

// The tombstone the script derives (at version w) is an envelope like any
// other: the cache's decoder must accept it, CRC included, or it counts it as
// corrupt and RemoveCorrupt deletes it.
TEST_F(ScriptsTest, UnversionedInvalidationOverAVersionedEntryWritesAValidEnvelope) {
  ASSERT_EQ(FreshFill(Envelope(EntryKind::kValue, 7, "w")), Stored());
  ASSERT_EQ(Invalidate(0, "epoch-1"), Stored());
  std::optional<std::string> bytes = GetRaw(key_);
  ASSERT_TRUE(bytes.has_value());
  Result<EnvelopeView> e = DecodeEnvelope(*bytes, /*verify_checksum=*/true);
  ASSERT_TRUE(e.ok()) << "the re-versioned tombstone does not decode: " << e.status().ToString();
  EXPECT_EQ(e->kind, EntryKind::kTombstone);
  EXPECT_EQ(e->version, 7u);
}

// ---- Structural checks of stored bytes ----
// A corrupt entry that begins with the magic and a huge version must not fence.

std::string HugeValue() { return Envelope(EntryKind::kValue, kMaxVersion); }  // 44 bytes, no payload

TEST_F(ScriptsTest, StoredEntryWithAWrongLengthDoesNotFence) {
  std::string bytes = HugeValue();
  bytes[39] = 1;  // says 1 payload byte; there are none
  ExpectDoesNotFence(bytes);
  std::string with_payload = Envelope(EntryKind::kValue, kMaxVersion, "payload");
  with_payload += "trailing";
  ExpectDoesNotFence(with_payload);
}

TEST_F(ScriptsTest, StoredEntryWithNonZeroReservedBytesDoesNotFence) {
  for (int i : {5, 6, 7}) {
    SCOPED_TRACE("reserved byte " + std::to_string(i));
    std::string bytes = HugeValue();
    bytes[i] = 1;
    ExpectDoesNotFence(bytes);
  }
}

TEST_F(ScriptsTest, StoredEntryOfAnUnknownKindDoesNotFence) {
  std::string bytes = HugeValue();
  bytes[3] = 7;
  ExpectDoesNotFence(bytes);
}

TEST_F(ScriptsTest, StoredEntryThatIsTooShortDoesNotFence) {
  std::string bytes = HugeValue();
  bytes.resize(43);
  ExpectDoesNotFence(bytes);
  bytes.resize(16);  // magic, kind, reserved and the version, nothing more
  ExpectDoesNotFence(bytes);
}

TEST_F(ScriptsTest, StoredEntryOfAnUnknownFormatDoesNotFence) {
  std::string bytes = HugeValue();
  bytes[2] = 2;
  ExpectDoesNotFence(bytes);
}

TEST_F(ScriptsTest, ForeignStoredBytesDoNotFence) { ExpectDoesNotFence("{\"legacy\":\"json\"}"); }

TEST_F(ScriptsTest, WellFormedEntryWithABadCrcFencesUntilRemoved) {
  std::string corrupt = HugeValue();
  corrupt.back() = static_cast<char>(corrupt.back() ^ 0x5a);
  ASSERT_FALSE(DecodeEnvelope(corrupt).ok());
  ASSERT_TRUE(DecodeEnvelope(corrupt, /*verify_checksum=*/false).ok());
  SetRaw(key_, corrupt);

  // The script does not check the CRC: the entry fences like a good one.
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, 1, "fresh")), Refused(1, kMaxVersion));
  EXPECT_EQ(GetRaw(key_), corrupt);

  // kRemoveCorrupt deletes only exactly the bytes the caller saw.
  std::string other = corrupt;
  other[20] = static_cast<char>(other[20] ^ 1);
  EXPECT_EQ(Eval(scripts::kRemoveCorrupt, {key_}, {other})->integer, 0);
  EXPECT_EQ(Eval(scripts::kRemoveCorrupt, {key_}, {corrupt.substr(0, 43)})->integer, 0);
  EXPECT_EQ(GetRaw(key_), corrupt);
  RawReply r = Eval(scripts::kRemoveCorrupt, {key_}, {corrupt});
  ASSERT_TRUE(r && r->type == REDIS_REPLY_INTEGER) << DescribeReply(r.get());
  EXPECT_EQ(r->integer, 1);
  EXPECT_EQ(GetRaw(key_), std::nullopt);
  EXPECT_EQ(Eval(scripts::kRemoveCorrupt, {key_}, {corrupt})->integer, 0) << "nothing left to remove";

  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, 1, "fresh")), Stored());
}

// ---- Arguments ----

TEST_F(ScriptsTest, FillOfSomethingThatIsNotAnEnvelopeIsAnError) {
  const Snap s = Snapshot();
  for (const std::string& bad : {std::string("garbage"), HugeValue().substr(0, 43), std::string()}) {
    RawReply r = Eval(scripts::kFill, {key_, fence_}, {bad, "1000", "f", s.epoch, std::to_string(s.ms), "5000"});
    ASSERT_TRUE(r != nullptr);
    EXPECT_EQ(r->type, REDIS_REPLY_ERROR) << DescribeReply(r.get());
  }
  EXPECT_EQ(GetRaw(key_), std::nullopt);
}

TEST_F(ScriptsTest, FillOfATombstoneIsAnError) {
  const Snap s = Snapshot();
  RawReply r = Eval(scripts::kFill, {key_, fence_},
                    {Envelope(EntryKind::kTombstone, 1), "1000", "f", s.epoch, std::to_string(s.ms), "5000"});
  ASSERT_TRUE(r != nullptr);
  EXPECT_EQ(r->type, REDIS_REPLY_ERROR) << DescribeReply(r.get());
  r = Eval(scripts::kFill, {key_, fence_}, {Envelope(EntryKind::kTombstone, 1), "1000", "w", "epoch", "0", "5000"});
  ASSERT_TRUE(r != nullptr);
  EXPECT_EQ(r->type, REDIS_REPLY_ERROR) << DescribeReply(r.get());
  EXPECT_EQ(GetRaw(key_), std::nullopt);
  EXPECT_EQ(GetRaw(fence_), std::nullopt);
}

TEST_F(ScriptsTest, InvalidateWithAValueOrNegativeIsAnError) {
  for (EntryKind kind : {EntryKind::kValue, EntryKind::kNegative}) {
    RawReply r = Eval(scripts::kInvalidate, {key_, fence_}, {Envelope(kind, 1), "1000", "epoch", "5000"});
    ASSERT_TRUE(r != nullptr);
    EXPECT_EQ(r->type, REDIS_REPLY_ERROR) << DescribeReply(r.get());
  }
  RawReply r = Eval(scripts::kInvalidate, {key_, fence_}, {"garbage", "1000", "epoch", "5000"});
  ASSERT_TRUE(r != nullptr);
  EXPECT_EQ(r->type, REDIS_REPLY_ERROR) << DescribeReply(r.get());
  EXPECT_EQ(GetRaw(key_), std::nullopt);
  EXPECT_EQ(GetRaw(fence_), std::nullopt);
}

// ---- Leases ----

TEST_F(ScriptsTest, LeaseAcquireTakesAFreeLeaseAndReadsValueAndFence) {
  RawReply r = Eval(scripts::kLeaseAcquire, {key_, lease_, fence_}, {"token-a", "5000"});
  ASSERT_TRUE(r && r->type == REDIS_REPLY_ARRAY && r->elements == 4) << DescribeReply(r.get());
  EXPECT_EQ(r->element[0]->integer, 1);
  EXPECT_EQ(r->element[1]->type, REDIS_REPLY_NIL);
  EXPECT_EQ(r->element[2]->type, REDIS_REPLY_NIL);
  ASSERT_EQ(r->element[3]->type, REDIS_REPLY_INTEGER);
  EXPECT_NEAR(static_cast<double>(r->element[3]->integer), static_cast<double>(LocalWallMs()), 5000.0);
  EXPECT_EQ(GetRaw(lease_), "token-a");
  EXPECT_GT(Pttl(lease_), 4000);
  EXPECT_LE(Pttl(lease_), 5000);

  const std::string value = Envelope(EntryKind::kValue, 2, "v2");
  SetRaw(key_, value);
  SetRaw(fence_, "epoch-9");
  r = Eval(scripts::kLeaseAcquire, {key_, lease_, fence_}, {"token-b", "5000"});
  ASSERT_TRUE(r && r->type == REDIS_REPLY_ARRAY && r->elements == 4) << DescribeReply(r.get());
  EXPECT_EQ(r->element[0]->integer, 0) << "a second caller must not win a held lease";
  ASSERT_EQ(r->element[1]->type, REDIS_REPLY_STRING);
  EXPECT_EQ(std::string(r->element[1]->str, r->element[1]->len), value);
  ASSERT_EQ(r->element[2]->type, REDIS_REPLY_STRING);
  EXPECT_EQ(std::string(r->element[2]->str, r->element[2]->len), "epoch-9");
  EXPECT_NEAR(static_cast<double>(r->element[3]->integer), static_cast<double>(LocalWallMs()), 5000.0);
  EXPECT_EQ(GetRaw(lease_), "token-a");
}

TEST_F(ScriptsTest, LeaseIsReleasedAndExtendedOnlyByItsToken) {
  RawReply r = Eval(scripts::kLeaseAcquire, {key_, lease_, fence_}, {"token-a", "5000"});
  ASSERT_TRUE(r && r->type == REDIS_REPLY_ARRAY && r->elements == 4) << DescribeReply(r.get());
  ASSERT_EQ(r->element[0]->integer, 1);

  EXPECT_EQ(Eval(scripts::kLeaseExtend, {lease_}, {"token-b", "20000"})->integer, 0);
  EXPECT_LE(Pttl(lease_), 5000);
  EXPECT_EQ(Eval(scripts::kLeaseExtend, {lease_}, {"token-a", "20000"})->integer, 1);
  EXPECT_GT(Pttl(lease_), 15000);
  EXPECT_EQ(Eval(scripts::kLeaseRelease, {lease_}, {"token-b"})->integer, 0);
  EXPECT_EQ(GetRaw(lease_), "token-a");
  EXPECT_EQ(Eval(scripts::kLeaseRelease, {lease_}, {"token-a"})->integer, 1);
  EXPECT_EQ(GetRaw(lease_), std::nullopt);
  EXPECT_EQ(Eval(scripts::kLeaseRelease, {lease_}, {"token-a"})->integer, 0);
  EXPECT_EQ(Eval(scripts::kLeaseExtend, {lease_}, {"token-a", "20000"})->integer, 0);
  EXPECT_EQ(GetRaw(lease_), std::nullopt) << "extending a released lease must not recreate it";
}

TEST_F(ScriptsTest, FillReleasesOnlyItsOwnLeaseOnEveryOutcome) {
  struct Case {
    const char* name;
    Outcome expected;
  };
  for (const Case& c : {Case{"stored", Stored()}, Case{"older version", Refused(1, 100)},
                        Case{"invalidated", Refused(2)}, Case{"too old", Refused(3)},
                        Case{"write-through", Stored()}}) {
    SCOPED_TRACE(c.name);
    Del(key_);
    Del(fence_);
    const std::string name = c.name;
    // The fill of version 1, and the state that gives it its outcome.
    auto fill = [&](const std::string& token) {
      if (name == "write-through") return WriteThrough(Envelope(EntryKind::kValue, 1, "x"), "epoch-w", "30000", token);
      Snap s = Snapshot();
      if (name == "invalidated") s.epoch = "stale-epoch";
      if (name == "too old") s.ms -= 10000;
      return Fill(Envelope(EntryKind::kValue, 1, "x"), s, "5000", "60000", token);
    };
    if (name == "older version") SetRaw(key_, Envelope(EntryKind::kValue, 100, "newer"));

    SetRaw(lease_, "mine");
    EXPECT_EQ(fill("not-mine"), c.expected);
    EXPECT_EQ(GetRaw(lease_), "mine") << "another caller's lease was released";
    EXPECT_EQ(fill("mine"), c.expected);
    EXPECT_EQ(GetRaw(lease_), std::nullopt) << "the fill kept its own lease";
  }
}

TEST_F(ScriptsTest, FillWithoutALeaseKeyLeavesTheLeaseAlone) {
  SetRaw(lease_, "mine");
  EXPECT_EQ(FreshFill(Envelope(EntryKind::kValue, 1, "x")), Stored());
  EXPECT_EQ(GetRaw(lease_), "mine");
}

}  // namespace
}  // namespace tiercache
