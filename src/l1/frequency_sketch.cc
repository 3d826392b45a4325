#include "l1/frequency_sketch.h"

#include <algorithm>
#include <bit>

namespace tiercache::l1 {

FrequencySketch::FrequencySketch(std::size_t capacity) {
  const std::size_t words = std::bit_ceil(std::max<std::size_t>(capacity, 8));
  blocks_.assign(words / 8, Block{});
  block_mask_ = blocks_.size() - 1;
  sample_size_ = 10 * std::max<std::size_t>(capacity, 1);
}

void FrequencySketch::Increment(std::uint64_t hash) {
  const std::uint64_t h = Mix(hash + kSeed);
  Block& block = blocks_[BlockOf(h)];
  bool added = false;
  for (int row = 0; row < kRows; ++row) {
    std::uint64_t& word = block.words[WordOf(h, row)];
    const int shift = ShiftOf(h, row);
    if (((word >> shift) & 0xF) < kMaxCount) {
      word += std::uint64_t{1} << shift;
      added = true;
    }
  }
  // Saturated keys do not advance aging, so a few very hot keys cannot make
  // the sketch forget everything else too often.
  if (added && ++additions_ >= sample_size_) Halve();
}

int FrequencySketch::Frequency(std::uint64_t hash) const {
  const std::uint64_t h = Mix(hash + kSeed);
  const Block& block = blocks_[BlockOf(h)];
  int smallest = kMaxCount;
  for (int row = 0; row < kRows; ++row) {
    const int count = static_cast<int>((block.words[WordOf(h, row)] >> ShiftOf(h, row)) & 0xF);
    smallest = std::min(smallest, count);
  }
  return smallest;
}

void FrequencySketch::Halve() {
  for (Block& b : blocks_) {
    for (std::uint64_t& w : b.words) w = (w >> 1) & 0x7777777777777777ULL;
  }
  additions_ /= 2;
}

}  // namespace tiercache::l1
