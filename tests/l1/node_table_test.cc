// NodeTable: open addressing with backward-shift deletion. Hashes are chosen
// by hand so that entries collide, wrap around the end of the slot array and
// are removed from the middle of a run: every key must stay findable.
#include "l1/node_table.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace tiercache::l1 {
namespace {

// A hash whose home is `home` in a table of `slots` slots (the low 32 bits
// scaled to the slots), with `high` in its high 32 bits.
std::uint64_t AtHome(std::uint64_t home, std::uint64_t slots, std::uint64_t high) {
  return (high << 32) | (((home << 32) + slots - 1) / slots);
}

NodePtr MakeNode(const std::string& key) {
  NodeShape shape;
  shape.key_size = key.size();
  return NewNode(key, shape);
}

TEST(NodeTableTest, CollidingAndWrappingRunsSurviveRemovalsInTheMiddle) {
  NodeTable table;
  std::vector<NodePtr> nodes;
  // 8 entries in 16 slots: homes 14, 14, 15, 15, 0 wrap around; 3, 3, 4.
  const std::uint64_t homes[] = {14, 14, 15, 15, 0, 3, 3, 4};
  for (std::size_t i = 0; i < std::size(homes); ++i) {
    nodes.push_back(MakeNode("k" + std::to_string(i)));
    table.Insert(AtHome(homes[i], 16, i), nodes.back().get());  // distinct full hashes
  }
  ASSERT_EQ(table.capacity(), 16u);
  // Remove from the middle of each run, then check every remaining entry.
  for (std::size_t victim : {1, 5, 2, 0}) {
    table.Remove(AtHome(homes[victim], 16, victim), nodes[victim].get());
    nodes[victim].reset();
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      const std::string key = "k" + std::to_string(i);
      const std::uint64_t hash = AtHome(homes[i], 16, i);
      if (nodes[i] == nullptr) {
        EXPECT_EQ(table.Find(hash, key), nullptr) << key << " after removing k" << victim;
      } else {
        EXPECT_EQ(table.Find(hash, key), nodes[i].get()) << key << " after removing k" << victim;
      }
    }
  }
  EXPECT_EQ(table.size(), 4u);
}

// Seven values of the low 32 bits (2^32 - 3 ... 3): homes in the last slot
// and the first whatever the table's size, so runs wrap around its end, also
// while it grows.
std::uint64_t HashOf(const std::string& key) {
  const std::uint64_t h = std::hash<std::string>{}(key);
  constexpr std::uint64_t kLow = 0xFFFFFFFFULL;
  return (h & ~kLow) | ((h % 7 + kLow - 2) & kLow);
}

// The same property at random against a std::map, across growth, with few
// distinct homes so that runs are long.
void RandomInsertsAndRemovesMatchAMap(NodeTable& table) {
  std::map<std::string, NodePtr> model;
  std::mt19937_64 rng(11);
  for (int step = 0; step < 20'000; ++step) {
    const std::string key = "key:" + std::to_string(rng() % 600);
    // Few distinct homes (the low bits), so runs are long; the high bits keep
    // full hashes of different keys mostly different.
    const std::uint64_t h = HashOf(key);
    auto it = model.find(key);
    if (it == model.end()) {
      NodePtr n = MakeNode(key);
      table.Insert(h, n.get());
      model.emplace(key, std::move(n));
    } else if (rng() % 2 == 0) {
      table.Remove(h, it->second.get());
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
}

TEST(NodeTableTest, RandomInsertsAndRemovesMatchAMap) {
  NodeTable table;
  RandomInsertsAndRemovesMatchAMap(table);
  EXPECT_GE(table.capacity(), 2 * table.size());
}

// The same in a table bounded at 600 entries (the keys are 600): it stops
// growing at 802 slots (601 at load 3/4), not a power of two; runs wrap
// around its end at loads up to 3/4.
TEST(NodeTableTest, ABoundedTableStopsAtItsFinalSizeAndKeepsEveryKey) {
  NodeTable table(600);
  RandomInsertsAndRemovesMatchAMap(table);
  EXPECT_EQ(table.capacity(), 802u);
}

// A bounded table full to its bound (plus the one an insertion may add
// before its eviction) holds it at load 3/4 at most, in the final size.
TEST(NodeTableTest, AFullBoundedTableHoldsItsBoundAtLoadThreeQuarters) {
  for (std::size_t bound : {1, 11, 12, 100, 1000, 62'500}) {
    NodeTable table(bound);
    std::vector<NodePtr> nodes;
    std::mt19937_64 rng(bound);
    std::vector<std::uint64_t> hashes;
    for (std::size_t i = 0; i <= bound; ++i) {
      nodes.push_back(MakeNode("k" + std::to_string(i)));
      hashes.push_back(rng());
      table.Insert(hashes.back(), nodes.back().get());
    }
    EXPECT_LE(4 * table.size(), 3 * table.capacity()) << bound;
    EXPECT_LE(table.capacity(), std::max<std::size_t>(16, (bound + 1) * 4 / 3 + 1)) << bound;
    for (std::size_t i = 0; i <= bound; ++i) {
      ASSERT_EQ(table.Find(hashes[i], "k" + std::to_string(i)), nodes[i].get()) << bound << " " << i;
    }
  }
}

// Keys whose hashes share the home and the top bits, keys whose hashes
// differ in the top bits only, and two keys with the same full hash: a probe
// finds each by its hash and key, and nothing with another hash or key.
TEST(NodeTableTest, EqualHomesAndEqualHashesStillTellKeysApart) {
  NodeTable table;
  std::vector<NodePtr> nodes;
  const std::uint64_t top = std::uint64_t{0x2A} << 58;
  // Same home, same top bits, hashes differing in the middle bits; then the
  // same home, other top bits; then the same full hash for two keys.
  const std::uint64_t hashes[] = {top | 5 | (1ULL << 20), top | 5 | (2ULL << 20), top | 5 | (3ULL << 20),
                                  (1ULL << 58) | 5, (0x3FULL << 58) | 5, top | 5, top | 5};
  for (std::size_t i = 0; i < std::size(hashes); ++i) {
    nodes.push_back(MakeNode("key" + std::to_string(i)));
    table.Insert(hashes[i], nodes.back().get());
  }
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    EXPECT_EQ(table.Find(hashes[i], "key" + std::to_string(i)), nodes[i].get()) << i;
    EXPECT_EQ(table.Find(hashes[i] ^ (1ULL << 60), "key" + std::to_string(i)), nullptr) << i;  // other hash
    EXPECT_EQ(table.Find(hashes[i], "other"), nullptr) << i;
  }
  for (std::size_t victim : {0, 5, 3}) {
    table.Remove(hashes[victim], nodes[victim].get());
    nodes[victim].reset();
  }
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    EXPECT_EQ(table.Find(hashes[i], "key" + std::to_string(i)), nodes[i].get()) << i;
  }
}

// Replace puts a node in another's slot: the same key is then found there,
// and removing it leaves every other key findable.
TEST(NodeTableTest, ReplaceKeepsTheSlotAndTheRun) {
  NodeTable table;
  std::vector<NodePtr> nodes;
  const std::uint64_t homes[] = {3, 3, 3, 4};  // one run: slots 3, 4, 5, 6
  for (std::size_t i = 0; i < std::size(homes); ++i) {
    nodes.push_back(MakeNode("k" + std::to_string(i)));
    table.Insert(AtHome(homes[i], 16, i), nodes.back().get());
  }
  NodePtr copy = MakeNode("k1");
  table.Replace(AtHome(homes[1], 16, 1), nodes[1].get(), copy.get());
  EXPECT_EQ(table.Find(AtHome(homes[1], 16, 1), "k1"), copy.get());
  EXPECT_EQ(table.size(), 4u);
  table.Remove(AtHome(homes[1], 16, 1), copy.get());
  for (std::size_t i : {0, 2, 3}) {
    EXPECT_EQ(table.Find(AtHome(homes[i], 16, i), "k" + std::to_string(i)), nodes[i].get()) << i;
  }
  EXPECT_EQ(table.Find(AtHome(homes[1], 16, 1), "k1"), nullptr);
}

// The node's layout: 48 bytes of fields, the key right after them, then the
// tag and user data only when the fill had them, then the stripe
// references; no part overlaps another and all lie inside the bytes NewNode
// allocates (checked by the offsets, as this test is not built under ASan),
// at least 64. A key of up to 16 bytes makes a 64-byte node. Each reader index of a striped copy
// gets its own reference; the copy keeps every field of the original.
TEST(NodeLayoutTest, PartsFollowEachOtherWithoutOverlapAndOnlyWhenPresent) {
  EXPECT_EQ(Node::AllocationBytes(NodeShape{16, false, false, 1}), 64u);
  for (std::size_t stripes : {1, 2, 4, 8, 16}) {
    for (std::size_t size : {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 100, 1000}) {
      for (int extras = 0; extras < 4; ++extras) {
        const bool has_tag = (extras & 1) != 0, has_user_data = (extras & 2) != 0;
        SCOPED_TRACE(testing::Message() << stripes << " stripes, key of " << size << ", tag " << has_tag
                                        << ", user data " << has_user_data);
        std::string key(size, '\0');
        for (std::size_t i = 0; i < size; ++i) key[i] = static_cast<char>('a' + (i * 7 + stripes) % 26);
        NodeFields f;
        f.version = 7;
        f.expiry = Clock::TimePoint(std::chrono::seconds(5));
        f.load_duration = std::chrono::milliseconds(3);
        f.tag = has_tag ? ~std::uint64_t{0} : 0;
        f.user_data = has_user_data ? ~std::uint64_t{0} - 1 : 0;
        f.charge = Node::kMaxEntryCharge;
        auto value = std::make_shared<const std::string>("v");
        L1Value moved = value;
        NodePtr n = NewFilledNode(key, std::move(moved), f, nullptr);
        const char* base = reinterpret_cast<const char*>(n.get());
        const NodeShape shape = n->shape();
        EXPECT_EQ(shape.key_size, size);
        EXPECT_EQ(shape.has_tag, has_tag);
        EXPECT_EQ(shape.has_user_data, has_user_data);
        EXPECT_EQ(shape.stripes, 1u);
        ASSERT_EQ(n->key().data(), base + sizeof(Node));
        EXPECT_EQ(Node::ExtrasOffset(size) % 8, 0u);
        EXPECT_GE(Node::ExtrasOffset(size), sizeof(Node) + size);
        EXPECT_EQ(Node::StripesOffset(shape), Node::ExtrasOffset(size) + 8 * (has_tag + has_user_data));
        EXPECT_EQ(Node::AllocationBytes(shape), std::max<std::size_t>(64, Node::StripesOffset(shape)));
        EXPECT_EQ(Node::AllocationBytes(shape) % NodeArena::kGrain, 0u);
        EXPECT_EQ(n->tag(), f.tag);
        EXPECT_EQ(n->user_data(), f.user_data);
        EXPECT_EQ(n->charge(), Node::kMaxEntryCharge);
        EXPECT_EQ(n->policy_index(), 0u);
        for (std::size_t r = 0; r < 2 * stripes; ++r) EXPECT_EQ(&n->ValueFor(r), &n->value) << "not striped";
        if (stripes > 1) {
          n->set_policy_index(9);
          NodePtr copy = NewStripedCopy(*n, stripes, nullptr);
          const NodeShape striped = copy->shape();
          EXPECT_EQ(striped.stripes, stripes);
          EXPECT_EQ(Node::AllocationBytes(striped),
                    std::max<std::size_t>(64, Node::StripesOffset(striped) + (stripes - 1) * sizeof(L1Value)));
          EXPECT_EQ(reinterpret_cast<const char*>(&copy->stripe(0)), reinterpret_cast<const char*>(copy.get()) +
                                                                         Node::StripesOffset(striped));
          EXPECT_EQ(copy->key(), key);
          EXPECT_EQ(copy->tag(), f.tag);
          EXPECT_EQ(copy->user_data(), f.user_data);
          EXPECT_EQ(copy->version, 7u);
          EXPECT_EQ(copy->expiry, f.expiry);
          EXPECT_EQ(copy->load_duration(), f.load_duration);
          EXPECT_EQ(copy->charge(), Node::kMaxEntryCharge);
          EXPECT_EQ(copy->policy_index(), 9u);
          for (std::size_t r = 0; r < 2 * stripes; ++r) {
            const L1Value& v = copy->ValueFor(r);
            EXPECT_EQ(v.get(), value.get());
            EXPECT_EQ(&v == &copy->value, r % stripes == 0) << r;  // reader r's own reference
          }
          // Each stripe, both nodes' values, `value`.
          EXPECT_EQ(value.use_count(), static_cast<long>(stripes) + 2);
          copy.reset();
        }
        EXPECT_EQ(n->key(), key);
        EXPECT_EQ(value.use_count(), 2);
        n.reset();
        EXPECT_EQ(value.use_count(), 1);  // the copy released every stripe
      }
    }
  }
}

// Loads up to 2^31 - 1 ns keep the nanosecond; longer ones the microsecond,
// up to 2^31 - 1 us; negative ones read as zero.
TEST(NodeLayoutTest, LoadDurationsRoundTrip) {
  using std::chrono::microseconds;
  using std::chrono::nanoseconds;
  for (const auto d : {nanoseconds(0), nanoseconds(1), nanoseconds(123'456'789), nanoseconds((1LL << 31) - 1)}) {
    EXPECT_EQ(DecodeLoadDuration(EncodeLoadDuration(d)), d) << d.count();
  }
  EXPECT_EQ(DecodeLoadDuration(EncodeLoadDuration(nanoseconds(1LL << 31))), microseconds((1LL << 31) / 1000));
  EXPECT_EQ(DecodeLoadDuration(EncodeLoadDuration(std::chrono::seconds(90))), std::chrono::seconds(90));
  EXPECT_EQ(DecodeLoadDuration(EncodeLoadDuration(std::chrono::hours(10))), microseconds((1LL << 31) - 1));
  EXPECT_EQ(DecodeLoadDuration(EncodeLoadDuration(nanoseconds(-5))), nanoseconds(0));
}

}  // namespace
}  // namespace tiercache::l1
