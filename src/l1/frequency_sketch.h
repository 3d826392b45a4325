// FrequencySketch: a count-min sketch of 4-bit counters with adaptive aging,
// the "how often was this key asked for recently" estimate of W-TinyLFU.
//
// Counters are packed 16 to a 64-bit word, 8 words to a 64-byte block. A key
// maps to one block, and to one counter in each of 4 rows inside it (row i
// uses words 2i and 2i+1), so an update touches a single cache line. The
// estimate is the smallest of the 4 counters, which can only over-estimate.
// Updates are conservative: only the counters equal to that smallest one
// grow, so a key's increments inflate fewer of its neighbours' estimates.
// Counters saturate at 15. After `sample_size()` increments every counter is
// halved, so old popularity fades and the sketch follows a changing workload.
//
// Adaptive aging. The classic period, 10 x capacity increments, assumes the
// entries the cache has to choose between (the victims of admission contests)
// are asked for about once per `capacity` requests, so that they reach counts
// near 10 between halvings. When much of the traffic misses (a long tail),
// those entries are far rarer, their counts stay at 1 or 2, and count-min and
// sampling noise decide the contests. So the period is ranged on the counter
// scale: at each halving, if the contests' victims averaged below a third of
// kMaxCount the period doubles, above two thirds it halves (within 1 x and
// 64 x the classic period). A longer memory only costs when popularity
// changes, which two checks catch, both from the hit rate that the cache
// reports through RecordRequest():
//  - a shift: every sample of 10 x capacity requests, the sample's hit rate
//    is compared with the moving average of the previous samples; a drop of
//    more than max(4 standard errors, 5 % of the average) halves the counters
//    at once and puts the period back to the classic one (while the rate stays
//    low, each sample halves again, so stale counts fade within a few samples);
//  - a drift: a doubling is tentative; if the hit rate over the next period is
//    below the one over the period before by more than one standard error of
//    their difference, the period is halved back and may not grow past that
//    for the next 16 halvings.
// Saturated increments do not count towards a period, but a period ends after
// 4 x sample_size() increments of any kind, so a saturated sketch still ages.
// Memory: next_pow2(capacity) words, i.e. 8 to 16 bytes per cached entry
// (a shard makes its sketch when it is first half full; Shard::SketchDue),
// plus
// about 150 bytes of aging state. Every call is O(1); the checks run once per
// sample and once per halving (a square root each).
// Not thread-safe: one sketch per shard, guarded by the shard's mutex.
#ifndef TIERCACHE_L1_FREQUENCY_SKETCH_H_
#define TIERCACHE_L1_FREQUENCY_SKETCH_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "l1/mix.h"

namespace tiercache::l1 {

class FrequencySketch {
 public:
  static constexpr int kMaxCount = 15;
  static constexpr int kRows = 4;
  // The classic period, and the longest adaptive one, in units of capacity.
  static constexpr std::size_t kBasePeriod = 10;
  static constexpr std::size_t kMaxPeriodFactor = 64;

  // REQUIRES: capacity > 0 (the number of entries whose frequency matters).
  explicit FrequencySketch(std::size_t capacity = 1);

  // Counts one occurrence of `hash`; ages the sketch every sample_size().
  // Returns true when the estimate of `hash` is now kMaxCount: it stays
  // there, and further Increment()s of it change no counter, until the next
  // halving, i.e. while halvings() does not change.
  bool Increment(std::uint64_t hash);
  // Increment() of a hash known to be saturated (see above): the same effect
  // on aging without reading its counters.
  void IncrementSaturated() {
    if (++increments_ >= kSaturatedPeriods * sample_size_) AgeAndAdapt();
  }
  // Halvings so far; starts at 1, so 0 can mean "never saturated".
  std::uint64_t halvings() const { return halvings_; }
  // Starts loading the block of `hash`, for a batch of Increment()s.
  void Prefetch(std::uint64_t hash) const {
    __builtin_prefetch(&blocks_[BlockOf(Mix(hash + kSeed))], 1);
  }
  // Estimated occurrences of `hash` since aging, in [0, kMaxCount].
  int Frequency(std::uint64_t hash) const;

  // Feedback for the aging period. A request the cache served from an entry
  // (hit) or had to fill (miss).
  void RecordRequest(bool hit) {  // once per drained hit: inline
    ++period_requests_;
    ++sample_requests_;
    period_hits_ += hit ? 1 : 0;
    sample_hits_ += hit ? 1 : 0;
    if (sample_requests_ >= sample_length_) EndSample();
  }
  // The estimate of an admission contest's victim, as Frequency() gave it.
  void RecordContest(int victim_frequency) {
    ++contests_;
    victim_sum_ += static_cast<std::uint64_t>(victim_frequency);
  }

  // Increments between halvings now; base_sample_size() is the classic one.
  std::size_t sample_size() const { return sample_size_; }
  std::size_t base_sample_size() const { return base_sample_size_; }
  // Increments counted towards the next halving.
  std::size_t additions() const { return additions_; }

 private:
  // Block of the mixed hash `h`, and the word and nibble shift of its counter
  // in row `row`.
  std::size_t BlockOf(std::uint64_t h) const { return static_cast<std::size_t>(h) & block_mask_; }
  // Decorrelates the sketch's bits from the table's and the shard's use of
  // the same hash.
  static constexpr std::uint64_t kSeed = 0xC2B2AE3D27D4EB4FULL;

  // The counter of row `row` for the mixed hash `h`: word 2 * row + bit
  // (32 + row) of `h` in the block, nibble number bits (40 + 4 * row) to
  // (43 + 4 * row) of `h` in that word.
  struct Cells {
    unsigned word[kRows];
    unsigned shift[kRows];
  };
  static Cells Locate(std::uint64_t h) {
    const auto sel = static_cast<std::uint32_t>(h >> 32);
    Cells c;
#pragma GCC unroll 4
    for (int row = 0; row < kRows; ++row) {
      c.word[row] = 2 * row + ((sel >> row) & 1);
      c.shift[row] = (sel >> (6 + 4 * row)) & 60;  // ((sel >> (8 + 4 row)) & 15) * 4
    }
    return c;
  }
  void Halve();
  // The end of a period: halves, then adapts the period.
  void AgeAndAdapt();
  // The end of a sample of requests: the shift check.
  void EndSample();
  void ResetPeriod();
  void ClampAdditions();

  struct alignas(64) Block {
    std::uint64_t words[8];
  };

  std::vector<Block> blocks_;
  std::size_t block_mask_ = 0;
  std::size_t sample_size_ = 0;
  std::size_t additions_ = 0;
  // Every increment since the last halving, saturated ones too: a sketch so
  // saturated that additions stop still ages (and then shortens its period).
  std::size_t increments_ = 0;
  std::uint64_t halvings_ = 1;

  // A period also ends after this many sample_size()s of increments of any
  // kind (see increments_).
  static constexpr std::size_t kSaturatedPeriods = 4;

  // Aging state (see the comment at the top).
  std::size_t base_sample_size_ = 0;
  std::size_t max_sample_size_ = 0;
  std::size_t ceiling_ = 0;            // the period may not grow past this
  int agings_under_ceiling_ = 0;       // halvings since a reverted doubling
  bool grew_ = false;                  // this period follows a doubling
  std::uint64_t contests_ = 0;         // since the last halving
  std::uint64_t victim_sum_ = 0;
  std::uint64_t period_requests_ = 0;  // since the last halving
  std::uint64_t period_hits_ = 0;
  double previous_period_rate_ = -1;   // < 0: none to compare with
  double previous_period_requests_ = 0;
  std::uint64_t sample_length_ = 0;    // requests per shift check
  std::uint64_t sample_requests_ = 0;
  std::uint64_t sample_hits_ = 0;
  double average_rate_ = -1;           // moving average of samples; < 0: none
};

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_FREQUENCY_SKETCH_H_
