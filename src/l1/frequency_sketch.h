// FrequencySketch: a count-min sketch of 4-bit counters with aging, the
// "how often was this key asked for recently" estimate of W-TinyLFU.
//
// Counters are packed 16 to a 64-bit word, 8 words to a 64-byte block. A key
// maps to one block, and to one counter in each of 4 rows inside it (row i
// uses words 2i and 2i+1), so an update touches a single cache line. The
// estimate is the smallest of the 4 counters, which can only over-estimate. Counters saturate at
// 15. After `sample_size` increments (10 x capacity) every counter is halved,
// so old popularity fades and the sketch follows a changing workload.
// Memory: next_pow2(capacity) words, i.e. 8 bytes per cached entry.
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

  // REQUIRES: capacity > 0 (the number of entries whose frequency matters).
  explicit FrequencySketch(std::size_t capacity = 1);

  // Counts one occurrence of `hash`; ages the sketch every sample_size().
  void Increment(std::uint64_t hash);
  // Starts loading the block of `hash`, for a batch of Increment()s.
  void Prefetch(std::uint64_t hash) const {
    __builtin_prefetch(&blocks_[BlockOf(Mix(hash + kSeed))], 1);
  }
  // Estimated occurrences of `hash` since aging, in [0, kMaxCount].
  int Frequency(std::uint64_t hash) const;

  std::size_t sample_size() const { return sample_size_; }
  // Increments counted towards the next halving.
  std::size_t additions() const { return additions_; }

 private:
  // Block of the mixed hash `h`, and the word and nibble shift of its counter
  // in row `row`.
  std::size_t BlockOf(std::uint64_t h) const { return static_cast<std::size_t>(h) & block_mask_; }
  // Decorrelates the sketch's bits from the table's and the shard's use of
  // the same hash.
  static constexpr std::uint64_t kSeed = 0xC2B2AE3D27D4EB4FULL;

  static int WordOf(std::uint64_t h, int row) { return 2 * row + static_cast<int>((h >> (32 + row)) & 1); }
  static int ShiftOf(std::uint64_t h, int row) { return static_cast<int>((h >> (40 + 4 * row)) & 15) * 4; }
  void Halve();

  struct alignas(64) Block {
    std::uint64_t words[8];
  };

  std::vector<Block> blocks_;
  std::size_t block_mask_ = 0;
  std::size_t sample_size_ = 0;
  std::size_t additions_ = 0;
};

}  // namespace tiercache::l1

#endif  // TIERCACHE_L1_FREQUENCY_SKETCH_H_
