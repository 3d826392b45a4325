#include "tiercache/prometheus.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <cmath>
#include <deque>
#include <exception>
#include <iterator>
#include <limits>
#include <sstream>
#include <string_view>

namespace tiercache::prometheus {
namespace {

namespace pm = ::prometheus;
using Snapshot = CounterMetrics::Snapshot;

// Labels tiercache sets itself; a constant label may not take their names.
constexpr std::string_view kOwnLabels[] = {"tier", "result", "outcome", "stage", "cause", "topic", "partition", "le"};

// Well-formed UTF-8 (Prometheus' label values must be).
bool IsUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    }
    i += n;
  }
  return true;
}

Status CheckLabels(const Labels& labels) {
  for (size_t at = 0; at < labels.size(); ++at) {
    const auto& [name, value] = labels[at];
    for (size_t before = 0; before < at; ++before) {
      if (labels[before].first == name) return Status::InvalidArgument("prometheus: label '" + name + "' given twice");
    }
    if (!IsUtf8(value)) return Status::InvalidArgument("prometheus: the value of label '" + name + "' is not UTF-8");
    bool ok = !name.empty() && !(name.size() >= 2 && name[0] == '_' && name[1] == '_');
    for (size_t i = 0; ok && i < name.size(); ++i) {
      const char c = name[i];
      ok = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9');
    }
    if (!ok) return Status::InvalidArgument("prometheus: bad label name '" + name + "'");
    for (std::string_view own : kOwnLabels) {
      if (name == own) return Status::InvalidArgument("prometheus: label '" + name + "' is set by tiercache");
    }
  }
  return Status::Ok();
}

// Builds the families of one snapshot.
class Renderer {
 public:
  explicit Renderer(const Labels& labels) {
    for (const auto& [name, value] : labels) base_.push_back({name, value});
  }

  std::vector<pm::MetricFamily> Render(const Snapshot& s) {
    const auto per_tier = [&](Counter c, Tier t) { return s.counters[static_cast<int>(c)][static_cast<int>(t)]; };
    const auto all_tiers = [&](Counter c) {
      uint64_t n = 0;
      for (uint64_t v : s.counters[static_cast<int>(c)]) n += v;
      return n;
    };

    auto& lookups = Family("tiercache_lookups_total",
                           "Lookups per tier and result: hit (a fresh value), negative_hit (a cached \"not "
                           "found\"), miss (anything else; stale copies served are counted here too).",
                           pm::MetricType::Counter);
    const std::pair<Counter, const char*> results[] = {
        {Counter::kHit, "hit"}, {Counter::kMiss, "miss"}, {Counter::kNegativeHit, "negative_hit"}};
    for (Tier t : {Tier::kL1, Tier::kL2}) {
      for (const auto& [c, result] : results) {
        AddCounter(lookups, {{"tier", std::string(TierName(t))}, {"result", result}}, per_tier(c, t));
      }
    }
    auto& stale = Family("tiercache_stale_serves_total",
                         "Stale values served on purpose (fail-safe, stale-while-revalidate), by the tier they "
                         "came from; each was also counted as a miss.",
                         pm::MetricType::Counter);
    for (Tier t : {Tier::kL1, Tier::kL2}) {
      AddCounter(stale, {{"tier", std::string(TierName(t))}}, per_tier(Counter::kStaleServe, t));
    }
    auto& refused = Family("tiercache_refused_fills_total",
                           "Fills refused by the version fence (a newer version or an invalidation was seen).",
                           pm::MetricType::Counter);
    auto& decode = Family("tiercache_decode_errors_total",
                          "Cached payloads that did not decode (corrupt or foreign bytes), served as misses.",
                          pm::MetricType::Counter);
    for (Tier t : {Tier::kL1, Tier::kL2}) {
      AddCounter(refused, {{"tier", std::string(TierName(t))}}, per_tier(Counter::kRefusedFill, t));
      AddCounter(decode, {{"tier", std::string(TierName(t))}}, per_tier(Counter::kDecodeError, t));
    }
    const std::tuple<const char*, Counter, const char*> plain[] = {
        {"tiercache_loads_total", Counter::kLoad, "Calls of a loader (the source of truth)."},
        {"tiercache_load_errors_total", Counter::kLoadError, "Loader calls that failed or timed out."},
        {"tiercache_leases_won_total", Counter::kLeaseWon,
         "Loads this process ran under the distributed lease it took."},
        {"tiercache_lease_waits_total", Counter::kLeaseWait,
         "Callers that waited for another pod's load (its lease) instead of loading."},
        {"tiercache_lease_wait_timeouts_total", Counter::kLeaseWaitTimeout,
         "Lease waits that ran out (the caller then loaded without the lease, or failed)."},
        {"tiercache_early_refreshes_total", Counter::kEarlyRefresh,
         "Background refreshes started before expiry (probabilistic early refresh)."},
        {"tiercache_l2_errors_total", Counter::kL2Error, "L2 (Redis) calls that failed or timed out."},
        {"tiercache_l2_breaker_opened_total", Counter::kBreakerOpened, "Times the L2 circuit breaker opened."},
        {"tiercache_l2_behind_local_total", Counter::kL2BehindLocal,
         "L2 entries not served because this pod had seen a newer invalidation of the key or its group."},
    };
    for (const auto& [name, c, help] : plain) {
      AddCounter(Family(name, help, pm::MetricType::Counter), {}, all_tiers(c));
    }
    AddHistogram(Family("tiercache_load_duration_seconds", "Duration of loader calls.", pm::MetricType::Histogram),
                 {}, s.load_latency_us_buckets, s.load_latency_sum_us);
    AddGauge(Family("tiercache_l2_breaker_open", "1 while the L2 circuit breaker is open.", pm::MetricType::Gauge),
             {}, s.breaker_open ? 1 : 0);

    auto& events = Family("tiercache_invalidation_events_total",
                          "Invalidation events handled, by outcome: applied, ignored (old or redelivered), "
                          "dead_lettered (malformed).",
                          pm::MetricType::Counter);
    for (int o = 0; o < kEventOutcomeCount; ++o) {
      AddCounter(events, {{"outcome", std::string(EventOutcomeName(static_cast<EventOutcome>(o)))}}, s.events[o]);
    }
    auto& lag = Family("tiercache_invalidation_lag_seconds",
                       "From an event's occurrence to its effect, by stage: l2 (the service's consumer group "
                       "wrote the tombstones), l1 (this pod's follower dropped its copies).",
                       pm::MetricType::Histogram);
    for (int st = 0; st < kInvalidationStageCount; ++st) {
      AddHistogram(lag, {{"stage", std::string(InvalidationStageName(static_cast<InvalidationStage>(st)))}},
                   s.lag_us_buckets[st], s.lag_sum_us[st]);
    }
    auto& fences = Family("tiercache_l1_fences_total",
                          "Times this pod's L1 was fenced (not served), by cause.", pm::MetricType::Counter);
    for (int c = 0; c < kL1FenceCauseCount; ++c) {
      AddCounter(fences, {{"cause", std::string(L1FenceCauseName(static_cast<L1FenceCause>(c)))}}, s.l1_fences[c]);
    }
    AddGauge(Family("tiercache_l1_fenced", "1 while this pod's L1 is fenced.", pm::MetricType::Gauge), {},
             s.l1_fenced ? 1 : 0);
    auto& consumer = Family("tiercache_consumer_lag_messages",
                            "Invalidation events of a partition not yet handled by this process's consumer.",
                            pm::MetricType::Gauge);
    for (const auto& [tp, messages] : s.consumer_lag) {
      AddGauge(consumer, {{"topic", tp.first}, {"partition", std::to_string(tp.second)}},
               static_cast<double>(messages));
    }
    AddGauge(Family("tiercache_outbox_unsent_rows", "Outbox rows not yet published.", pm::MetricType::Gauge), {},
             static_cast<double>(s.outbox_unsent));
    AddGauge(Family("tiercache_outbox_oldest_unsent_age_seconds",
                    "Age of the oldest outbox row not yet published (0 when none).", pm::MetricType::Gauge),
             {}, static_cast<double>(s.outbox_oldest_age.count()) / 1e3);
    AddHistogram(Family("tiercache_outbox_publish_lag_seconds",
                        "From an outbox row's insert to the broker's acknowledgement of its event.",
                        pm::MetricType::Histogram),
                 {}, s.outbox_publish_lag_us_buckets, s.outbox_publish_lag_sum_us);
    auto& relay = Family("tiercache_outbox_relay_errors_total",
                         "Outbox relay failures, by cause: kafka (publishing) or database (reading or marking rows).",
                         pm::MetricType::Counter);
    AddCounter(relay, {{"cause", "kafka"}}, s.relay_errors_kafka);
    AddCounter(relay, {{"cause", "database"}}, s.relay_errors_database);
    return {std::make_move_iterator(families_.begin()), std::make_move_iterator(families_.end())};
  }

 private:
  using Own = std::vector<std::pair<std::string, std::string>>;

  pm::MetricFamily& Family(const char* name, const char* help, pm::MetricType type) {
    pm::MetricFamily& f = families_.emplace_back();
    f.name = name;
    f.help = help;
    f.type = type;
    return f;
  }
  pm::ClientMetric& Metric(pm::MetricFamily& f, const Own& own) {
    pm::ClientMetric& m = f.metric.emplace_back();
    m.label = base_;
    for (const auto& [name, value] : own) m.label.push_back({name, value});
    return m;
  }
  void AddCounter(pm::MetricFamily& f, const Own& own, uint64_t value) {
    Metric(f, own).counter.value = static_cast<double>(value);
  }
  void AddGauge(pm::MetricFamily& f, const Own& own, double value) { Metric(f, own).gauge.value = value; }
  // CounterMetrics' bucket i counts durations of [2^(i-1), 2^i) µs, so the
  // cumulative count of buckets 0..i is the count at or below 2^i µs
  // (strictly below, in fact). Every second power of two is kept: 1 µs,
  // 4 µs, ... 1,074 s, then +Inf.
  void AddHistogram(pm::MetricFamily& f, const Own& own, const CounterMetrics::Buckets& buckets, uint64_t sum_us) {
    pm::ClientMetric& m = Metric(f, own);
    uint64_t cumulative = 0;
    for (int i = 0; i < CounterMetrics::kLatencyBuckets; ++i) {
      cumulative += buckets[i];
      if (i % 2 == 0 && i < CounterMetrics::kLatencyBuckets - 1) {
        m.histogram.bucket.push_back({cumulative, std::ldexp(1.0, i) / 1e6});
      }
    }
    m.histogram.bucket.push_back({cumulative, std::numeric_limits<double>::infinity()});
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = static_cast<double>(sum_us) / 1e6;
  }

  std::vector<pm::ClientMetric::Label> base_;
  // A deque: Family() hands out references that must survive the next
  // Family() (a family may be filled after another one is created).
  std::deque<pm::MetricFamily> families_;
};

class SnapshotCollectable final : public pm::Collectable {
 public:
  SnapshotCollectable(const CounterMetrics* metrics, Labels labels) : metrics_(metrics), labels_(std::move(labels)) {}
  // Runs on the exposer's (civetweb's) threads, under C code: nothing may
  // escape. A failed collection is an empty scrape.
  std::vector<pm::MetricFamily> Collect() const override {
    try {
      return Renderer(labels_).Render(metrics_->snapshot());
    } catch (...) {
      return {};
    }
  }

 private:
  const CounterMetrics* metrics_;
  const Labels labels_;
};

}  // namespace

Result<std::string> RenderText(const CounterMetrics::Snapshot& snapshot, const Labels& labels) {
  TIERCACHE_RETURN_IF_ERROR(CheckLabels(labels));
  std::ostringstream out;
  pm::TextSerializer().Serialize(out, Renderer(labels).Render(snapshot));
  return out.str();
}

Result<std::shared_ptr<pm::Collectable>> MakeCollectable(const CounterMetrics* metrics, const Labels& labels) {
  if (metrics == nullptr) return Status::InvalidArgument("prometheus: null metrics");
  TIERCACHE_RETURN_IF_ERROR(CheckLabels(labels));
  return std::shared_ptr<pm::Collectable>(std::make_shared<SnapshotCollectable>(metrics, labels));
}

struct Exporter::Impl {
  std::shared_ptr<pm::Collectable> collectable;
  std::unique_ptr<pm::Exposer> exposer;
  uint16_t port = 0;
};

Result<std::unique_ptr<Exporter>> Exporter::Start(const CounterMetrics* metrics, ExporterOptions options) {
  if (metrics == nullptr) return Status::InvalidArgument("prometheus exporter: null metrics");
  if (options.path.empty() || options.path[0] != '/') {
    return Status::InvalidArgument("prometheus exporter: path must start with '/': '" + options.path + "'");
  }
  if (options.threads < 1 || options.threads > 16) {
    return Status::InvalidArgument("prometheus exporter: threads must be in [1, 16]");
  }
  const size_t colon = options.listen_address.rfind(':');
  if (colon == std::string::npos || colon + 1 == options.listen_address.size() ||
      options.listen_address.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
    return Status::InvalidArgument("prometheus exporter: listen_address must be host:port: '" +
                                   options.listen_address + "'");
  }
  Result<std::shared_ptr<pm::Collectable>> collectable = MakeCollectable(metrics, options.const_labels);
  if (!collectable.ok()) return collectable.status();
  auto impl = std::make_unique<Impl>();
  impl->collectable = *collectable;
  try {
    impl->exposer = std::make_unique<pm::Exposer>(options.listen_address, static_cast<size_t>(options.threads));
    impl->exposer->RegisterCollectable(impl->collectable, options.path);
    const std::vector<int> ports = impl->exposer->GetListeningPorts();
    if (ports.empty()) return Status::Unavailable("prometheus exporter: not listening on " + options.listen_address);
    impl->port = static_cast<uint16_t>(ports.front());
  } catch (const std::exception& e) {
    return Status::Unavailable("prometheus exporter: cannot listen on " + options.listen_address + ": " + e.what());
  } catch (...) {
    return Status::Unavailable("prometheus exporter: cannot listen on " + options.listen_address);
  }
  return std::unique_ptr<Exporter>(new Exporter(std::move(impl)));
}

Exporter::Exporter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Exporter::~Exporter() = default;
uint16_t Exporter::port() const { return impl_->port; }

}  // namespace tiercache::prometheus
