// Metrics: the one interface through which every tiercache component reports
// what it does (hits, misses, stale serves, loads, leases, early refreshes,
// refused fills, decode errors, breaker state).
//
// A component is given a Metrics* at construction (never null: the default
// is a process-wide no-op). CounterMetrics keeps every figure and hands out
// snapshots; the Prometheus exporter (tiercache/prometheus.h, an optional
// component) renders them. Implement Metrics yourself to feed another system.
//
// Thread-safety: implementations must accept calls from any thread at once;
// calls sit on the hot path and must not block.
#ifndef TIERCACHE_METRICS_H_
#define TIERCACHE_METRICS_H_

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

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
  // L2 entries not served because this pod had seen newer (Tier::kL2): a
  // versioned invalidation of the key, or a move of its group, that L2 had
  // not applied or had lost (docs/consistency.md §3c). Each is also a kMiss.
  kL2BehindLocal,
  kCount_,             // not a counter
};
inline constexpr int kCounterCount = static_cast<int>(Counter::kCount_);

// Stable snake_case names, used by exporters ("hit", "lease_won", ...).
std::string_view CounterName(Counter c);
std::string_view TierName(Tier t);

// What became of an invalidation event (kafka::InvalidationConsumer).
enum class EventOutcome : uint8_t {
  kApplied = 0,       // at least one key's tombstone written
  kIgnored,           // every key already at this version or newer (old or redelivered)
  kDeadLettered,      // malformed or unmappable: sent to the dead-letter topic
  kCount_,
};
inline constexpr int kEventOutcomeCount = static_cast<int>(EventOutcome::kCount_);
// Where an invalidation took effect, for its lag since the event occurred.
enum class InvalidationStage : uint8_t {
  kL2 = 0,  // applied to L2 by the service's consumer group
  kL1 = 1,  // dropped from this pod's L1 by its follower
  kCount_,
};
inline constexpr int kInvalidationStageCount = static_cast<int>(InvalidationStage::kCount_);
// Why this pod's L1 was fenced (kafka::L1Follower).
enum class L1FenceCause : uint8_t {
  kStarting = 0,        // before the follower caught up
  kBrokersUnreachable,  // no broker answered
  kLagging,             // the follower fell behind by more than max_lag
  kEventsLost,          // offsets out of range: events deleted before they were read (L1 dropped)
  kPartitionsAdded,     // partitions added in place, not yet read
  kCount_,
};
inline constexpr int kL1FenceCauseCount = static_cast<int>(L1FenceCause::kCount_);
std::string_view EventOutcomeName(EventOutcome o);
std::string_view InvalidationStageName(InvalidationStage s);
std::string_view L1FenceCauseName(L1FenceCause c);

class Metrics {
 public:
  virtual ~Metrics() = default;
  // Adds `n` to counter `c` of `tier` (tier is ignored by counters that are not per tier).
  virtual void Add(Counter c, Tier tier, uint64_t n = 1) = 0;
  // A loader call took `latency`.
  virtual void ObserveLoad(std::chrono::nanoseconds latency) = 0;
  // The L2 breaker is now open (true) or closed/half-open (false).
  virtual void SetBreakerOpen(bool open) = 0;

  // Invalidation over Kafka (no-ops unless overridden).
  // `n` events ended as `outcome`.
  virtual void AddEvents(EventOutcome outcome, uint64_t n = 1) { (void)outcome, (void)n; }
  // An event took effect at `stage` `lag` after it occurred (its occurred_at).
  virtual void ObserveInvalidationLag(InvalidationStage stage, std::chrono::nanoseconds lag) { (void)stage, (void)lag; }
  // This pod's L1 was fenced for `cause`; `fenced` says whether it is now.
  virtual void AddL1Fence(L1FenceCause cause) { (void)cause; }
  virtual void SetL1Fenced(bool fenced) { (void)fenced; }
  // Messages of `partition` of `topic` not yet handled by the consumer group
  // member of this process (the high watermark minus its position).
  virtual void SetConsumerLag(std::string_view topic, int32_t partition, int64_t messages) {
    (void)topic, (void)partition, (void)messages;
  }

  // The transactional outbox (no-ops unless overridden).
  // Rows not sent yet, and the age of the oldest of them (0 when none).
  virtual void SetOutboxDepth(int64_t unsent, std::chrono::milliseconds oldest_age) {
    (void)unsent, (void)oldest_age;
  }
  // An event was acknowledged by the broker `lag` after its row was written.
  virtual void ObserveOutboxPublishLag(std::chrono::nanoseconds lag) { (void)lag; }
  // The relay failed to publish (`kafka` true) or to read or mark rows.
  virtual void AddRelayError(bool kafka) { (void)kafka; }

  // Added in 0.1 after the others (last, so the table of the methods above
  // keeps its layout). The partition is no longer this process's (revoked,
  // or the consumer stopped): its lag is another member's to report. A
  // Metrics that keeps SetConsumerLag's figures must drop this partition's.
  virtual void RemoveConsumerLag(std::string_view topic, int32_t partition) { (void)topic, (void)partition; }

  // A Metrics that drops everything. Never null; lives for the whole process.
  static Metrics* Noop();
};

// Keeps every figure: counters, gauges and histograms in relaxed atomics, the
// consumer lag (per topic and partition, set every few seconds, not on a hot
// path) in a map under a mutex. Latencies go into power-of-two microsecond
// buckets: bucket i counts durations of [2^(i-1), 2^i) µs (bucket 0: < 1 µs).
class CounterMetrics final : public Metrics {
 public:
  static constexpr int kLatencyBuckets = 32;
  using Buckets = std::array<uint64_t, kLatencyBuckets>;
  struct Snapshot {
    std::array<std::array<uint64_t, kTierCount>, kCounterCount> counters{};
    Buckets load_latency_us_buckets{};
    uint64_t load_latency_sum_us = 0;
    bool breaker_open = false;
    std::array<uint64_t, kEventOutcomeCount> events{};
    // Invalidation lag per stage, in the load latency's buckets.
    std::array<Buckets, kInvalidationStageCount> lag_us_buckets{};
    std::array<uint64_t, kInvalidationStageCount> lag_sum_us{};
    std::array<uint64_t, kL1FenceCauseCount> l1_fences{};
    bool l1_fenced = false;
    // (topic, partition) -> messages not yet handled, as last set.
    std::map<std::pair<std::string, int32_t>, int64_t> consumer_lag;
    int64_t outbox_unsent = 0;
    std::chrono::milliseconds outbox_oldest_age{0};
    Buckets outbox_publish_lag_us_buckets{};
    uint64_t outbox_publish_lag_sum_us = 0;
    uint64_t relay_errors_kafka = 0;
    uint64_t relay_errors_database = 0;
    uint64_t events_of(EventOutcome o) const { return events[static_cast<int>(o)]; }
    uint64_t lags_of(InvalidationStage s) const {
      uint64_t n = 0;
      for (uint64_t b : lag_us_buckets[static_cast<int>(s)]) n += b;
      return n;
    }
    uint64_t get(Counter c, Tier t = Tier::kL1) const {
      return counters[static_cast<int>(c)][static_cast<int>(t)];
    }
  };

  // Adds to the stripe of the CPU the caller runs on (see kCounterStripes).
  void Add(Counter c, Tier tier, uint64_t n = 1) override;
  void ObserveLoad(std::chrono::nanoseconds latency) override;
  void SetBreakerOpen(bool open) override { breaker_open_.store(open, std::memory_order_relaxed); }
  void AddEvents(EventOutcome outcome, uint64_t n = 1) override {
    events_[static_cast<int>(outcome)].fetch_add(n, std::memory_order_relaxed);
  }
  void ObserveInvalidationLag(InvalidationStage stage, std::chrono::nanoseconds lag) override;
  void AddL1Fence(L1FenceCause cause) override {
    fences_[static_cast<int>(cause)].fetch_add(1, std::memory_order_relaxed);
  }
  void SetL1Fenced(bool fenced) override { l1_fenced_.store(fenced, std::memory_order_relaxed); }
  void SetConsumerLag(std::string_view topic, int32_t partition, int64_t messages) override;
  void RemoveConsumerLag(std::string_view topic, int32_t partition) override;
  void SetOutboxDepth(int64_t unsent, std::chrono::milliseconds oldest_age) override {
    outbox_unsent_.store(unsent, std::memory_order_relaxed);
    outbox_oldest_age_ms_.store(oldest_age.count(), std::memory_order_relaxed);
  }
  void ObserveOutboxPublishLag(std::chrono::nanoseconds lag) override;
  void AddRelayError(bool kafka) override {
    (kafka ? relay_errors_kafka_ : relay_errors_database_).fetch_add(1, std::memory_order_relaxed);
  }
  Snapshot snapshot() const;

  // The bucket of the power-of-two microsecond histograms for `d`.
  static int BucketOf(std::chrono::nanoseconds d);

  // The counters are striped by CPU: Add() bumps the copy of the CPU it runs
  // on (CPU number modulo kCounterStripes), snapshot() sums them. A hit is
  // counted on every call (an L1 hit included), so one shared copy would be
  // a line every core's hits write, bouncing between them, where the L1
  // itself keeps its per-read writes per CPU. Exact all the same (each add
  // is an atomic read-modify-write); 16 x 64-byte-aligned copies of
  // kCounterCount x kTierCount counters, about 8 KiB.
  static constexpr std::size_t kCounterStripes = 16;  // a power of two

 private:
  struct alignas(64) CounterStripe {
    std::array<std::array<std::atomic<uint64_t>, kTierCount>, kCounterCount> counters{};
  };
  std::array<CounterStripe, kCounterStripes> stripes_{};
  std::array<std::atomic<uint64_t>, kLatencyBuckets> buckets_{};
  std::atomic<uint64_t> sum_us_{0};
  std::atomic<bool> breaker_open_{false};
  std::array<std::atomic<uint64_t>, kEventOutcomeCount> events_{};
  std::array<std::array<std::atomic<uint64_t>, kLatencyBuckets>, kInvalidationStageCount> lag_buckets_{};
  std::array<std::atomic<uint64_t>, kInvalidationStageCount> lag_sum_us_{};
  std::array<std::atomic<uint64_t>, kL1FenceCauseCount> fences_{};
  std::atomic<bool> l1_fenced_{false};
  mutable std::mutex lag_mu_;
  std::map<std::pair<std::string, int32_t>, int64_t> consumer_lag_;  // GUARDED_BY(lag_mu_)
  std::atomic<int64_t> outbox_unsent_{0};
  std::atomic<int64_t> outbox_oldest_age_ms_{0};
  std::array<std::atomic<uint64_t>, kLatencyBuckets> publish_lag_buckets_{};
  std::atomic<uint64_t> publish_lag_sum_us_{0};
  std::atomic<uint64_t> relay_errors_kafka_{0};
  std::atomic<uint64_t> relay_errors_database_{0};
};

}  // namespace tiercache

#endif  // TIERCACHE_METRICS_H_
