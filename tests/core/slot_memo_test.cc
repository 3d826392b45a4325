// TagPrefixSlotMemo answers what redis::KeySlot answers, key after key.
#include "core/slot_memo.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tiercache/redis/slot.h"

namespace tiercache {
namespace {

void ExpectSameAsKeySlot(const std::vector<std::string>& keys) {
  TagPrefixSlotMemo memo;
  for (size_t i = 0; i < keys.size(); ++i) {
    ASSERT_EQ(memo(keys[i]), redis::KeySlot(keys[i])) << "key " << i << " '" << keys[i] << "'";
  }
}

TEST(TagPrefixSlotMemoTest, RunsOfOneTagAndTheirNeighbours) {
  ExpectSameAsKeySlot({
      "posts:{community:42}:1", "posts:{community:42}:2", "posts:{community:42}",
      "posts:{community:43}:1",   // same length, another tag
      "posts:{community:42}:3",   // back to the first
      "posts:{community:4}:2}",   // a prefix of the tag, '}' later
      "posts:{community:42",      // the prefix without its '}': untagged
      "posts:{community:42}:{x}", // a second '{' after the tag
      "posts:{}:1", "posts:{}:2", // an empty tag: the whole key is hashed
      "posts:{}:1{a}",            // an empty tag first: the whole key
      "plain:1", "plain:2", "plain:1",  // untagged keys
      "{a}", "{a}b", "{a", "}{a}", "{{a}}", "{{a}}x",
      "", "{", "}",
  });
}

// Random keys over a small alphabet rich in braces, often extending the
// previous key, so that prefixes through a '}' repeat with every shape.
TEST(TagPrefixSlotMemoTest, RandomKeysRichInBraces) {
  std::mt19937 rng(1);
  const std::string alphabet = "{}{}ab:";
  std::vector<std::string> keys;
  std::string last;
  for (int i = 0; i < 200000; ++i) {
    std::string k;
    if (!last.empty() && rng() % 2 == 0) k = last.substr(0, rng() % (last.size() + 1));
    const size_t more = rng() % 8;
    for (size_t c = 0; c < more; ++c) k.push_back(alphabet[rng() % alphabet.size()]);
    keys.push_back(k);
    last = k;
  }
  ExpectSameAsKeySlot(keys);
}

}  // namespace
}  // namespace tiercache
