// Metrics: the one interface through which every tiercache component reports
// what it does (hits, misses, stale serves, loads, leases, early refreshes,
// refused fills, decode errors, breaker state).
//
// A component is given a Metrics* at construction (never null: the default
// is a process-wide no-op). CounterMetrics keeps every figure in atomics and
// hands out snapshots; the Prometheus exporter renders one. Implement Metrics
// yourself to feed another system.
//
// Thread-safety: implementations must accept calls from any thread at once;
// calls sit on the hot path and must not block.
#ifndef TIERCACHE_METRICS_H_
#define TIERCACHE_METRICS_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string_view>

namespace tiercache {

enum class Tier : uint8_t { kL1 = 0, kL2 = 1, kLoader = 2 };
inline constexpr int kTierCount = 3;

enum class Counter : uint8_t {
  kHit = 0,            // per tier: served fresh from this tier
  kMiss,               // per tier
  kStaleServe,         // per tier: a stale value served on purpose (fail-safe / SWR)
  kNegativeHit,        // per tier: a cached "not found"
  kLoad,               // loader calls
  kLoadError,          // loader calls that failed or timed out
  kLeaseWon,           // this process took the distributed lease and loaded
  kLeaseWait,          // a caller waited for another holder's load
  kLeaseWaitTimeout,   // ... and its wait ran out
  kEarlyRefresh,       // background refreshes started by XFetch
  kRefusedFill,        // per tier: a fill refused by the version fence
  kDecodeError,        // L2 payloads that did not decode (corrupt / foreign)
  kL2Error,            // L2 calls that failed (timeouts, unavailable)
  kBreakerOpened,      // times the L2 circuit breaker opened
  kCount_,             // not a counter
};
inline constexpr int kCounterCount = static_cast<int>(Counter::kCount_);

// Stable snake_case names, used by exporters ("hit", "lease_won", ...).
std::string_view CounterName(Counter c);
std::string_view TierName(Tier t);

class Metrics {
 public:
  virtual ~Metrics() = default;
  // Adds `n` to counter `c` of `tier` (tier is ignored by counters that are not per tier).
  virtual void Add(Counter c, Tier tier, uint64_t n = 1) = 0;
  // A loader call took `latency`.
  virtual void ObserveLoad(std::chrono::nanoseconds latency) = 0;
  // The L2 breaker is now open (true) or closed/half-open (false).
  virtual void SetBreakerOpen(bool open) = 0;

  // A Metrics that drops everything. Never null; lives for the whole process.
  static Metrics* Noop();
};

// Keeps everything in relaxed atomics. Load latencies go into power-of-two
// microsecond buckets: bucket i counts loads of [2^(i-1), 2^i) µs (bucket 0: < 1 µs).
class CounterMetrics final : public Metrics {
 public:
  static constexpr int kLatencyBuckets = 32;
  struct Snapshot {
    std::array<std::array<uint64_t, kTierCount>, kCounterCount> counters{};
    std::array<uint64_t, kLatencyBuckets> load_latency_us_buckets{};
    uint64_t load_latency_sum_us = 0;
    bool breaker_open = false;
    uint64_t get(Counter c, Tier t = Tier::kL1) const {
      return counters[static_cast<int>(c)][static_cast<int>(t)];
    }
  };

  void Add(Counter c, Tier tier, uint64_t n = 1) override {
    counters_[static_cast<int>(c)][static_cast<int>(tier)].fetch_add(n, std::memory_order_relaxed);
  }
  void ObserveLoad(std::chrono::nanoseconds latency) override;
  void SetBreakerOpen(bool open) override { breaker_open_.store(open, std::memory_order_relaxed); }
  Snapshot snapshot() const;

 private:
  std::array<std::array<std::atomic<uint64_t>, kTierCount>, kCounterCount> counters_{};
  std::array<std::atomic<uint64_t>, kLatencyBuckets> buckets_{};
  std::atomic<uint64_t> sum_us_{0};
  std::atomic<bool> breaker_open_{false};
};

}  // namespace tiercache

#endif  // TIERCACHE_METRICS_H_
