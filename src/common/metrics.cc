#include "tiercache/metrics.h"

#include <bit>

#include "common/cpu_slot.h"

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
    case Counter::kL2BehindLocal: return "l2_behind_local";
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

std::string_view EventOutcomeName(EventOutcome o) {
  switch (o) {
    case EventOutcome::kApplied: return "applied";
    case EventOutcome::kIgnored: return "ignored";
    case EventOutcome::kDeadLettered: return "dead_lettered";
    case EventOutcome::kCount_: break;
  }
  return "unknown";
}

std::string_view InvalidationStageName(InvalidationStage s) {
  switch (s) {
    case InvalidationStage::kL2: return "l2";
    case InvalidationStage::kL1: return "l1";
    case InvalidationStage::kCount_: break;
  }
  return "unknown";
}

std::string_view L1FenceCauseName(L1FenceCause c) {
  switch (c) {
    case L1FenceCause::kStarting: return "starting";
    case L1FenceCause::kBrokersUnreachable: return "brokers_unreachable";
    case L1FenceCause::kLagging: return "lagging";
    case L1FenceCause::kEventsLost: return "events_lost";
    case L1FenceCause::kPartitionsAdded: return "partitions_added";
    case L1FenceCause::kCount_: break;
  }
  return "unknown";
}

int CounterMetrics::BucketOf(std::chrono::nanoseconds d) {
  const uint64_t us = d.count() <= 0 ? 0 : static_cast<uint64_t>(d.count()) / 1000;
  const int bucket = us == 0 ? 0 : std::bit_width(us);
  return bucket >= kLatencyBuckets ? kLatencyBuckets - 1 : bucket;
}

namespace {

uint64_t Micros(std::chrono::nanoseconds d) { return d.count() <= 0 ? 0 : static_cast<uint64_t>(d.count()) / 1000; }

}  // namespace

void CounterMetrics::ObserveLoad(std::chrono::nanoseconds latency) {
  buckets_[BucketOf(latency)].fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(Micros(latency), std::memory_order_relaxed);
}

void CounterMetrics::ObserveInvalidationLag(InvalidationStage stage, std::chrono::nanoseconds lag) {
  lag_buckets_[static_cast<int>(stage)][BucketOf(lag)].fetch_add(1, std::memory_order_relaxed);
  lag_sum_us_[static_cast<int>(stage)].fetch_add(Micros(lag), std::memory_order_relaxed);
}

void CounterMetrics::SetConsumerLag(std::string_view topic, int32_t partition, int64_t messages) {
  std::lock_guard<std::mutex> lock(lag_mu_);
  consumer_lag_[{std::string(topic), partition}] = messages;
}

void CounterMetrics::RemoveConsumerLag(std::string_view topic, int32_t partition) {
  std::lock_guard<std::mutex> lock(lag_mu_);
  consumer_lag_.erase({std::string(topic), partition});
}

void CounterMetrics::ObserveOutboxPublishLag(std::chrono::nanoseconds lag) {
  publish_lag_buckets_[BucketOf(lag)].fetch_add(1, std::memory_order_relaxed);
  publish_lag_sum_us_.fetch_add(Micros(lag), std::memory_order_relaxed);
}

void CounterMetrics::Add(Counter c, Tier tier, uint64_t n) {
  stripes_[CpuSlot() & (kCounterStripes - 1)].counters[static_cast<int>(c)][static_cast<int>(tier)].fetch_add(
      n, std::memory_order_relaxed);
}

CounterMetrics::Snapshot CounterMetrics::snapshot() const {
  Snapshot s;
  for (const CounterStripe& stripe : stripes_) {
    for (int c = 0; c < kCounterCount; ++c) {
      for (int t = 0; t < kTierCount; ++t) s.counters[c][t] += stripe.counters[c][t].load(std::memory_order_relaxed);
    }
  }
  for (int b = 0; b < kLatencyBuckets; ++b) s.load_latency_us_buckets[b] = buckets_[b].load(std::memory_order_relaxed);
  s.load_latency_sum_us = sum_us_.load(std::memory_order_relaxed);
  s.breaker_open = breaker_open_.load(std::memory_order_relaxed);
  for (int o = 0; o < kEventOutcomeCount; ++o) s.events[o] = events_[o].load(std::memory_order_relaxed);
  for (int st = 0; st < kInvalidationStageCount; ++st) {
    for (int b = 0; b < kLatencyBuckets; ++b) s.lag_us_buckets[st][b] = lag_buckets_[st][b].load(std::memory_order_relaxed);
  }
  for (int st = 0; st < kInvalidationStageCount; ++st) s.lag_sum_us[st] = lag_sum_us_[st].load(std::memory_order_relaxed);
  for (int c = 0; c < kL1FenceCauseCount; ++c) s.l1_fences[c] = fences_[c].load(std::memory_order_relaxed);
  s.l1_fenced = l1_fenced_.load(std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(lag_mu_);
    s.consumer_lag = consumer_lag_;
  }
  s.outbox_unsent = outbox_unsent_.load(std::memory_order_relaxed);
  s.outbox_oldest_age = std::chrono::milliseconds(outbox_oldest_age_ms_.load(std::memory_order_relaxed));
  for (int b = 0; b < kLatencyBuckets; ++b) {
    s.outbox_publish_lag_us_buckets[b] = publish_lag_buckets_[b].load(std::memory_order_relaxed);
  }
  s.outbox_publish_lag_sum_us = publish_lag_sum_us_.load(std::memory_order_relaxed);
  s.relay_errors_kafka = relay_errors_kafka_.load(std::memory_order_relaxed);
  s.relay_errors_database = relay_errors_database_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace tiercache
