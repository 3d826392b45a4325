// NodeTable: open addressing with backward-shift deletion. Hashes are chosen
// by hand so that entries collide, wrap around the end of the slot array and
// are removed from the middle of a run: every key must stay findable.
#include "l1/node_table.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace tiercache::l1 {
namespace {

NodePtr MakeNode(const std::string& key, std::uint64_t hash) {
  NodePtr n = NewNode(key);
  n->hash = hash;
  return n;
}

TEST(NodeTableTest, CollidingAndWrappingRunsSurviveRemovalsInTheMiddle) {
  NodeTable table;
  std::vector<NodePtr> nodes;
  // 8 entries in 16 slots: homes 14, 14, 15, 15, 0 wrap around; 3, 3, 4.
  const std::uint64_t homes[] = {14, 14, 15, 15, 0, 3, 3, 4};
  for (std::size_t i = 0; i < std::size(homes); ++i) {
    nodes.push_back(MakeNode("k" + std::to_string(i), homes[i] + (i << 32)));  // distinct full hashes
    table.Insert(nodes.back().get());
  }
  ASSERT_EQ(table.capacity(), 16u);
  // Remove from the middle of each run, then check every remaining entry.
  for (std::size_t victim : {1, 5, 2, 0}) {
    table.Remove(nodes[victim].get());
    nodes[victim].reset();
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      const std::string key = "k" + std::to_string(i);
      const std::uint64_t hash = homes[i] + (i << 32);
      if (nodes[i] == nullptr) {
        EXPECT_EQ(table.Find(hash, key), nullptr) << key << " after removing k" << victim;
      } else {
        EXPECT_EQ(table.Find(hash, key), nodes[i].get()) << key << " after removing k" << victim;
      }
    }
  }
  EXPECT_EQ(table.size(), 4u);
}

// Seven homes, the last three slots of the array and the first four
// whatever its size (low bits 2^48 - 3 ... 3), so runs wrap around its end,
// also while it grows.
std::uint64_t HashOf(const std::string& key) {
  const std::uint64_t h = std::hash<std::string>{}(key);
  constexpr std::uint64_t kLow = (std::uint64_t{1} << 48) - 1;
  return (h & ~kLow) | ((h % 7 + kLow - 2) & kLow);
}

// The same property at random against a std::map, across growth, with few
// distinct homes so that runs are long.
TEST(NodeTableTest, RandomInsertsAndRemovesMatchAMap) {
  NodeTable table;
  std::map<std::string, NodePtr> model;
  std::mt19937_64 rng(11);
  for (int step = 0; step < 20'000; ++step) {
    const std::string key = "key:" + std::to_string(rng() % 600);
    // Few distinct homes (the low bits), so runs are long; the high bits keep
    // full hashes of different keys mostly different.
    const std::uint64_t h = HashOf(key);
    auto it = model.find(key);
    if (it == model.end()) {
      NodePtr n = MakeNode(key, h);
      table.Insert(n.get());
      model.emplace(key, std::move(n));
    } else if (rng() % 2 == 0) {
      table.Remove(it->second.get());
      model.erase(it);
    }
    if (step % 97 == 0) {
      ASSERT_EQ(table.size(), model.size());
      for (int k = 0; k < 600; ++k) {
        const std::string probe = "key:" + std::to_string(k);
        const std::uint64_t ph = HashOf(probe);
        auto m = model.find(probe);
        ASSERT_EQ(table.Find(ph, probe), m == model.end() ? nullptr : m->second.get()) << probe << " at step " << step;
      }
    }
  }
  EXPECT_GE(table.capacity(), 2 * table.size());
}

// Keys whose hashes share the home and the top bits, keys whose hashes
// differ in the top bits only, and two keys with the same full hash: a probe
// finds each by its hash and key, and nothing with another hash or key.
TEST(NodeTableTest, EqualHomesAndEqualHashesStillTellKeysApart) {
  NodeTable table;
  std::vector<NodePtr> nodes;
  const std::uint64_t top = std::uint64_t{0x2A} << 58;
  // Same home (5), same tag, hashes differing in the middle bits; then same
  // home, other tags; then the same full hash for two keys.
  const std::uint64_t hashes[] = {top | 5 | (1ULL << 20), top | 5 | (2ULL << 20), top | 5 | (3ULL << 20),
                                  (1ULL << 58) | 5, (0x3FULL << 58) | 5, top | 5, top | 5};
  for (std::size_t i = 0; i < std::size(hashes); ++i) {
    nodes.push_back(MakeNode("key" + std::to_string(i), hashes[i]));
    table.Insert(nodes.back().get());
  }
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    EXPECT_EQ(table.Find(hashes[i], "key" + std::to_string(i)), nodes[i].get()) << i;
    EXPECT_EQ(table.Find(hashes[i] ^ (1ULL << 60), "key" + std::to_string(i)), nullptr) << i;  // other hash
    EXPECT_EQ(table.Find(hashes[i], "other"), nullptr) << i;
  }
  for (std::size_t victim : {0, 5, 3}) {
    table.Remove(nodes[victim].get());
    nodes[victim].reset();
  }
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    EXPECT_EQ(table.Find(hashes[i], "key" + std::to_string(i)), nodes[i].get()) << i;
  }
}

// The node's layout, which the table's probe relies on: the key sits at the
// same offset from every node whatever its stripe count and key size (so its
// address depends on no field of the node's first line, and a probe loads
// both lines at once); the tag, user data, key, stripe references and tail
// follow each other without overlap, and all of them lie inside the bytes
// NewNode allocates (checked by the offsets, as this test is not built under
// ASan). Stripes are null until MakeStriped, and each reader index gets its
// own reference once they are made.
TEST(NodeLayoutTest, TheKeyIsAtAFixedOffsetAndNoPartOverlapsAnother) {
  for (std::size_t stripes : {1, 2, 4, 8, 16}) {
    for (std::size_t size : {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 100, 1000}) {
      std::string key(size, '\0');
      for (std::size_t i = 0; i < size; ++i) key[i] = static_cast<char>('a' + (i * 7 + stripes) % 26);
      NodePtr n = NewNode(key, stripes);
      const char* base = reinterpret_cast<const char*>(n.get());
      ASSERT_EQ(n->key().data(), base + sizeof(Node) + Node::kKeyOffset) << stripes << " stripes, key of " << size;
      EXPECT_GE(Node::kKeyOffset, Node::kTagBytes);
      EXPECT_GE(Node::StripesOffset(size), Node::kKeyOffset + size);
      EXPECT_EQ(Node::StripesOffset(size) % alignof(L1Value), 0u);
      EXPECT_GE(Node::TailOffset(stripes, size), Node::StripesOffset(size) + (stripes - 1) * sizeof(L1Value));
      EXPECT_EQ(Node::TailOffset(stripes, size) % alignof(NodeTail), 0u);
      EXPECT_LE(sizeof(Node) + Node::TailOffset(stripes, size) + sizeof(NodeTail),
                Node::AllocationBytes(stripes, size));
      EXPECT_EQ(reinterpret_cast<const char*>(&n->tail()), base + sizeof(Node) + Node::TailOffset(stripes, size));
      EXPECT_EQ(n->tag(), 0u);
      EXPECT_EQ(n->user_data(), 0u);
      EXPECT_EQ(n->charge(), 0u);
      EXPECT_FALSE(n->striped.load());
      n->set_tag(~std::uint64_t{0});
      n->set_user_data(~std::uint64_t{0} - 1);
      n->set_charge(~std::size_t{0});
      auto value = std::make_shared<const std::string>("v");
      n->value = value;
      for (std::size_t i = 0; i + 1 < stripes; ++i) EXPECT_EQ(n->stripe(i), nullptr);
      for (std::size_t r = 0; r < 2 * stripes; ++r) EXPECT_EQ(&n->ValueFor(r), &n->value) << "not striped yet";
      if (stripes > 1) {
        n->MakeStriped();
        EXPECT_TRUE(n->striped.load());
        for (std::size_t r = 0; r < 2 * stripes; ++r) {
          const L1Value& v = n->ValueFor(r);
          EXPECT_EQ(v.get(), value.get());
          EXPECT_EQ(&v == &n->value, r % stripes == 0) << r;  // reader r's own reference
        }
      }
      EXPECT_EQ(n->key(), key) << stripes << " stripes, key of " << size;
      EXPECT_EQ(n->tag(), ~std::uint64_t{0});
      EXPECT_EQ(n->user_data(), ~std::uint64_t{0} - 1);
      EXPECT_EQ(n->charge(), ~std::size_t{0});
      EXPECT_EQ(value.use_count(), static_cast<long>(stripes) + 1);  // each stripe, the node, `value`
      n.reset();
      EXPECT_EQ(value.use_count(), 1);  // the node released every stripe
    }
  }
}

}  // namespace
}  // namespace tiercache::l1
