// Key slots: CRC16-XMODEM vectors from the Redis Cluster spec and
// CLUSTER KEYSLOT, the hash-tag rule, and the tagged-key helper.
#include "tiercache/redis/slot.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tiercache::redis {
namespace {

TEST(SlotTest, Crc16MatchesTheSpecVector) { EXPECT_EQ(Crc16("123456789"), 0x31C3); }

// Crc16 takes two bytes per step; the bitwise definition, one bit at a time,
// must agree for every length (odd ones end with a single byte).
// KeySlot hashes the whole key in one pass until it meets a '{': it must
// answer what the rule (CRC of HashTagOf) answers wherever the brace falls.
TEST(SlotTest, KeySlotFollowsTheHashTagRuleWhereverTheBraceIs) {
  const std::string base = "abcdefghijklmnopq";
  for (size_t at = 0; at <= base.size(); ++at) {
    for (const char* insert : {"{", "{x}", "{}", "}{y}", "{{z}}"}) {
      std::string key = base.substr(0, at) + insert + base.substr(at);
      EXPECT_EQ(KeySlot(key), Crc16(HashTagOf(key)) & (kSlotCount - 1)) << key;
    }
    std::string plain = base.substr(0, at);
    EXPECT_EQ(KeySlot(plain), Crc16(plain) & (kSlotCount - 1)) << plain;
  }
}

TEST(SlotTest, Crc16MatchesTheBitwiseDefinitionAtEveryLength) {
  auto bitwise = [](std::string_view data) {
    uint16_t crc = 0;
    for (unsigned char c : data) {
      crc = static_cast<uint16_t>(crc ^ (c << 8));
      for (int bit = 0; bit < 8; ++bit) {
        crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
      }
    }
    return crc;
  };
  std::string data;
  for (int len = 0; len < 300; ++len) {
    EXPECT_EQ(Crc16(data), bitwise(data)) << len;
    data.push_back(static_cast<char>((len * 131 + 7) & 0xff));
  }
}

TEST(SlotTest, KeySlotMatchesClusterKeyslot) {
  EXPECT_EQ(KeySlot("foo"), 12182);
  EXPECT_EQ(KeySlot("{user1000}.following"), 3443);
  EXPECT_EQ(KeySlot("foo{}{bar}"), 8363);
  EXPECT_EQ(KeySlot("foo{{bar}}zap"), 4015);
  EXPECT_EQ(KeySlot("a{b}c"), 3300);
  EXPECT_EQ(KeySlot(""), 0);
}

TEST(SlotTest, HashTagIsBetweenFirstOpenAndNextClose) {
  EXPECT_EQ(HashTagOf("{user1000}.following"), "user1000");
  EXPECT_EQ(HashTagOf("foo{}{bar}"), "foo{}{bar}");  // empty tag: whole key
  EXPECT_EQ(HashTagOf("foo{{bar}}zap"), "{bar");
  EXPECT_EQ(HashTagOf("foo{bar"), "foo{bar");         // no closing brace
  EXPECT_EQ(HashTagOf("plain"), "plain");
}

TEST(SlotTest, KeysSharingATagShareASlot) {
  EXPECT_EQ(KeySlot("posts:{community:42}:7"), KeySlot("feed:{community:42}:page:1"));
  EXPECT_EQ(KeySlot("{user1000}.followers"), KeySlot("{user1000}.following"));
}

TEST(SlotTest, TaggedKeyBuildsTheDocumentedShape) {
  EXPECT_EQ(TaggedKey("posts", "community:42", "7"), "posts:{community:42}:7");
  EXPECT_EQ(TaggedKey("counters", "community:42", ""), "counters:{community:42}");
  EXPECT_EQ(KeySlot(TaggedKey("posts", "community:42", "7")), KeySlot("community:42"));
}

TEST(SlotTest, BinaryKeysAreHashedByteForByte) {
  std::string key("a\0b", 3);
  EXPECT_LT(KeySlot(key), kSlotCount);
  EXPECT_NE(KeySlot(key), KeySlot("a"));
}

// The memo answers exactly what KeySlot answers, whatever the order: runs of
// one tag, tags that differ only in bytes (same length), untagged keys, an
// empty "{}" (not a tag) and an unclosed '{'.
TEST(SlotTest, KeySlotMemoAgreesWithKeySlotOnEveryKey) {
  const std::vector<std::string> keys = {
      "a:{user:1}:x", "b:{user:1}:y", "{user:2}",   "c:{user:1}:z", "{user:3}:q", "{user:3}:r",
      "untagged:1",   "untagged:1",   "untagged:2", "x{}y",         "x{}z",       "open{tag",
      "open{tag",     "{user:1}",     "",           "{",            "}{",         std::string("b\0{t}", 5)};
  KeySlotMemo memo;
  for (int round = 0; round < 2; ++round) {
    for (const std::string& k : keys) EXPECT_EQ(memo(k), KeySlot(k)) << "key '" << k << "'";
  }
  KeySlotMemo fresh;
  for (auto it = keys.rbegin(); it != keys.rend(); ++it) EXPECT_EQ(fresh(*it), KeySlot(*it)) << "key '" << *it << "'";
}

}  // namespace
}  // namespace tiercache::redis
