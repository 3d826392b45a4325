// FrequencySketch's count-min estimate under conservative update: what one
// Increment() may change, checked on a sketch whose keys all share one block.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "l1/frequency_sketch.h"

namespace tiercache {
namespace {

using l1::FrequencySketch;

// An Increment() raises its key's estimate by exactly one (up to kMaxCount)
// and says whether it is now saturated; another key's estimate rises only if
// it was tied with the incremented key's (only the counters at the key's
// minimum grow), and then by one. So no estimate ever under-counts a key's
// increments since the last halving, and plain count-min's inflation of
// neighbours (every counter of the key grows) is caught.
TEST(FrequencySketchTest, AnIncrementRaisesItsKeyByOneAndOthersOnlyWhenTied) {
  FrequencySketch sketch(8);  // one block: the 40 keys share its 64 counters
  std::mt19937_64 rng(11);
  std::vector<std::uint64_t> keys(40);
  for (std::uint64_t& k : keys) k = rng();
  std::vector<int> before(keys.size());
  int others_raised = 0;
  int checked = 0;
  for (int step = 0; step < 20'000; ++step) {
    const std::size_t pick = rng() % keys.size();
    for (std::size_t i = 0; i < keys.size(); ++i) before[i] = sketch.Frequency(keys[i]);
    const std::uint64_t halvings = sketch.halvings();
    const bool saturated = sketch.Increment(keys[pick]);
    if (sketch.halvings() != halvings) continue;  // aged: every estimate halved
    ++checked;
    const int own = sketch.Frequency(keys[pick]);
    ASSERT_EQ(own, std::min(before[pick] + 1, FrequencySketch::kMaxCount)) << "step " << step;
    ASSERT_EQ(saturated, own == FrequencySketch::kMaxCount) << "step " << step;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (i == pick) continue;
      const int now = sketch.Frequency(keys[i]);
      if (now == before[i]) continue;
      ASSERT_EQ(now, before[i] + 1) << "step " << step << ", key " << i;
      ASSERT_EQ(before[i], before[pick]) << "step " << step << ", key " << i
                                         << ": raised although not tied with the incremented key";
      ++others_raised;
    }
  }
  EXPECT_GT(checked, 15'000);
  EXPECT_GT(others_raised, 0);  // the keys do share counters, so the check had cases
}

}  // namespace
}  // namespace tiercache
