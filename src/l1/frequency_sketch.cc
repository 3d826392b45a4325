#include "l1/frequency_sketch.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace tiercache::l1 {

namespace {

// Victims' mean estimate below which the period doubles, above which it
// halves: a third and two thirds of the counter range.
constexpr std::uint64_t kGrowBelow = FrequencySketch::kMaxCount / 3;
constexpr std::uint64_t kShrinkAbove = 2 * FrequencySketch::kMaxCount / 3;
// Fewer contests in a period than this: no evidence, the period stays.
constexpr std::uint64_t kMinContests = 32;
// A sample's hit rate this many standard errors (and this share of the
// average) below the moving average is a shift.
constexpr double kShiftErrors = 4.0;
constexpr double kShiftShare = 0.05;
constexpr double kAverageWeight = 0.25;
// A doubling is taken back when the next period's hit rate is this many
// standard errors (of the difference) below the previous period's.
constexpr double kRevertErrors = 1.0;
// Halvings after a taken-back doubling before the period may grow past it.
constexpr int kCeilingAgings = 16;

// Standard error of a hit rate `p` over `n` requests (p kept off 0 and 1,
// where the binomial error would vanish).
double Variance(double p, double n) {
  return std::max(p * (1 - p), 0.01) / n;
}

}  // namespace

FrequencySketch::FrequencySketch(std::size_t capacity) {
  capacity = std::max<std::size_t>(capacity, 1);
  const std::size_t words = std::bit_ceil(std::max<std::size_t>(capacity, 8));
  blocks_.assign(words / 8, Block{});
  block_mask_ = blocks_.size() - 1;
  base_sample_size_ = kBasePeriod * capacity;
  max_sample_size_ = kMaxPeriodFactor * base_sample_size_;
  sample_size_ = base_sample_size_;
  ceiling_ = max_sample_size_;
  sample_length_ = kBasePeriod * capacity;
}

// Both below are unrolled and branch-free over the rows: the counts of a
// large key set are random, so a branch per row would be mispredicted often.
bool FrequencySketch::Increment(std::uint64_t hash) {
  const std::uint64_t h = Mix(hash + kSeed);
  std::uint64_t* const words = blocks_[BlockOf(h)].words;
  const Cells cells = Locate(h);
  unsigned counts[kRows];
  unsigned smallest = kMaxCount;
#pragma GCC unroll 4
  for (int row = 0; row < kRows; ++row) {
    counts[row] = static_cast<unsigned>(words[cells.word[row]] >> cells.shift[row]) & 0xF;
    smallest = std::min(smallest, counts[row]);
  }
  // Saturated keys do not advance aging, so a few very hot keys cannot make
  // the sketch forget everything else too often; unless nearly everything is
  // saturated (see increments_).
  if (smallest == kMaxCount) {
    const std::uint64_t before = halvings_;
    IncrementSaturated();
    return halvings_ == before;
  }
  ++increments_;
#pragma GCC unroll 4
  for (int row = 0; row < kRows; ++row) {
    words[cells.word[row]] += static_cast<std::uint64_t>(counts[row] == smallest) << cells.shift[row];
  }
  if (++additions_ >= sample_size_) {
    AgeAndAdapt();
    return false;
  }
  return smallest + 1 == kMaxCount;
}

int FrequencySketch::Frequency(std::uint64_t hash) const {
  const std::uint64_t h = Mix(hash + kSeed);
  const std::uint64_t* const words = blocks_[BlockOf(h)].words;
  const Cells cells = Locate(h);
  unsigned smallest = kMaxCount;
#pragma GCC unroll 4
  for (int row = 0; row < kRows; ++row) {
    smallest = std::min(smallest, static_cast<unsigned>(words[cells.word[row]] >> cells.shift[row]) & 0xF);
  }
  return static_cast<int>(smallest);
}

// After a halving the period's count restarts at half the period; when the
// period just got shorter, at half the new one. Without this the count left
// from a longer period is already past the new end, and the next increments
// would age again at once, halving after halving (a wiped sketch).
void FrequencySketch::ClampAdditions() {
  additions_ = std::min(additions_, sample_size_ / 2);
}

void FrequencySketch::Halve() {
  for (Block& b : blocks_) {
    for (std::uint64_t& w : b.words) w = (w >> 1) & 0x7777777777777777ULL;
  }
  additions_ /= 2;
  increments_ = 0;
  ++halvings_;
}

void FrequencySketch::AgeAndAdapt() {
  Halve();
  const double n = static_cast<double>(period_requests_);
  const double rate = n > 0 ? static_cast<double>(period_hits_) / n : 0.0;
  bool reverted = false;
  if (grew_ && n > 0 && previous_period_rate_ >= 0) {
    const double error = std::sqrt(Variance(rate, n) + Variance(rate, previous_period_requests_));
    if (rate < previous_period_rate_ - kRevertErrors * error) {
      sample_size_ = std::max(sample_size_ / 2, base_sample_size_);
      ceiling_ = sample_size_;
      agings_under_ceiling_ = 0;
      reverted = true;
    }
  }
  grew_ = false;
  ClampAdditions();  // a shorter period (taken back) starts as a halved one would
  if (ceiling_ < max_sample_size_ && ++agings_under_ceiling_ >= kCeilingAgings) {
    ceiling_ = max_sample_size_;
  }
  previous_period_rate_ = n > 0 ? rate : -1;
  previous_period_requests_ = n;
  period_requests_ = period_hits_ = 0;
  if (!reverted && contests_ >= kMinContests) {
    if (victim_sum_ < kGrowBelow * contests_ && 2 * sample_size_ <= ceiling_) {
      sample_size_ *= 2;
      grew_ = true;
    } else if (victim_sum_ > kShrinkAbove * contests_ && sample_size_ / 2 >= base_sample_size_) {
      sample_size_ /= 2;
      ClampAdditions();
    }
  }
  contests_ = victim_sum_ = 0;
}

void FrequencySketch::EndSample() {
  const double n = static_cast<double>(sample_requests_);
  const double rate = static_cast<double>(sample_hits_) / n;
  sample_requests_ = sample_hits_ = 0;
  if (average_rate_ < 0) {
    average_rate_ = rate;
    return;
  }
  const double drop = std::max(kShiftErrors * std::sqrt(Variance(average_rate_, n)),
                               kShiftShare * average_rate_);
  if (rate < average_rate_ - drop) {
    Halve();
    ResetPeriod();
  }
  average_rate_ += kAverageWeight * (rate - average_rate_);
}

// After a shift: the classic period, no pending comparison, no ceiling.
void FrequencySketch::ResetPeriod() {
  sample_size_ = base_sample_size_;
  ClampAdditions();
  ceiling_ = max_sample_size_;
  grew_ = false;
  contests_ = victim_sum_ = 0;
  period_requests_ = period_hits_ = 0;
  previous_period_rate_ = -1;
}

}  // namespace tiercache::l1
