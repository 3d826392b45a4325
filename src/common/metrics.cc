#include "tiercache/metrics.h"

#include <bit>

namespace tiercache {
namespace {

class NoopMetrics final : public Metrics {
 public:
  void Add(Counter, Tier, uint64_t) override {}
  void ObserveLoad(std::chrono::nanoseconds) override {}
  void SetBreakerOpen(bool) override {}
};

}  // namespace

Metrics* Metrics::Noop() {
  static NoopMetrics* noop = new NoopMetrics();  // never destroyed: usable during exit
  return noop;
}

std::string_view CounterName(Counter c) {
  switch (c) {
    case Counter::kHit: return "hit";
    case Counter::kMiss: return "miss";
    case Counter::kStaleServe: return "stale_serve";
    case Counter::kNegativeHit: return "negative_hit";
    case Counter::kLoad: return "load";
    case Counter::kLoadError: return "load_error";
    case Counter::kLeaseWon: return "lease_won";
    case Counter::kLeaseWait: return "lease_wait";
    case Counter::kLeaseWaitTimeout: return "lease_wait_timeout";
    case Counter::kEarlyRefresh: return "early_refresh";
    case Counter::kRefusedFill: return "refused_fill";
    case Counter::kDecodeError: return "decode_error";
    case Counter::kL2Error: return "l2_error";
    case Counter::kBreakerOpened: return "breaker_opened";
    case Counter::kCount_: break;
  }
  return "unknown";
}

std::string_view TierName(Tier t) {
  switch (t) {
    case Tier::kL1: return "l1";
    case Tier::kL2: return "l2";
    case Tier::kLoader: return "loader";
  }
  return "unknown";
}

void CounterMetrics::ObserveLoad(std::chrono::nanoseconds latency) {
  const uint64_t us = latency.count() <= 0 ? 0 : static_cast<uint64_t>(latency.count()) / 1000;
  int bucket = us == 0 ? 0 : std::bit_width(us);
  if (bucket >= kLatencyBuckets) bucket = kLatencyBuckets - 1;
  buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(us, std::memory_order_relaxed);
}

CounterMetrics::Snapshot CounterMetrics::snapshot() const {
  Snapshot s;
  for (int c = 0; c < kCounterCount; ++c) {
    for (int t = 0; t < kTierCount; ++t) s.counters[c][t] = counters_[c][t].load(std::memory_order_relaxed);
  }
  for (int b = 0; b < kLatencyBuckets; ++b) s.load_latency_us_buckets[b] = buckets_[b].load(std::memory_order_relaxed);
  s.load_latency_sum_us = sum_us_.load(std::memory_order_relaxed);
  s.breaker_open = breaker_open_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace tiercache
