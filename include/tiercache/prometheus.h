// Prometheus exposition of tiercache's metrics: the optional component
// tiercache_prometheus (link it, and prometheus-cpp comes with it; the core
// library does not depend on either).
//
// Every figure a CounterMetrics keeps is rendered under a conventional name:
// counters end in _total, durations are _seconds histograms, and labels say
// the tier, result, outcome, stage or cause, never a cache key (docs/metrics.md
// lists every series). Two ways to serve them:
//   * Exporter::Start: an HTTP endpoint of its own (prometheus-cpp's pull
//     exposer), for a service without one;
//   * MakeCollectable: a prometheus::Collectable to register on the
//     prometheus::Exposer a service already runs.
// RenderText gives the text exposition format directly (tests, a CLI).
//
// Thread-safety: everything here may be used from any thread. A scrape reads
// a snapshot of the metrics (CounterMetrics::snapshot()): atomics, plus the
// consumer-lag map under its mutex, which its writer (the consumer, every
// few seconds) holds only for one map update.
#ifndef TIERCACHE_PROMETHEUS_H_
#define TIERCACHE_PROMETHEUS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tiercache/metrics.h"
#include "tiercache/status.h"

namespace prometheus {
class Collectable;
}  // namespace prometheus

namespace tiercache::prometheus {

// Labels put on every series, e.g. {{"service", "feeds"}, {"pod", "feeds-7"}}.
// Names must match [a-zA-Z_][a-zA-Z0-9_]*, not start with "__", appear once,
// and not be one of the labels tiercache sets (tier, result, outcome, stage,
// cause, topic, partition, le); values must be UTF-8.
using Labels = std::vector<std::pair<std::string, std::string>>;

struct ExporterOptions {
  // "host:port" to listen on; port 0 picks a free one (Exporter::port()).
  std::string listen_address = "127.0.0.1:9464";
  std::string path = "/metrics";
  Labels const_labels;
  // HTTP worker threads (each scrape takes one for about a millisecond). In [1, 16].
  int threads = 2;
};

// The text exposition format (version 0.0.4) of `snapshot` with `labels` on
// every series. Errors: kInvalidArgument for a bad label name.
Result<std::string> RenderText(const CounterMetrics::Snapshot& snapshot, const Labels& labels = {});

// A collectable that renders `metrics` on every collection (a failed one is
// an empty scrape; nothing is thrown). `metrics` is not owned and must
// outlive the collectable's registration: an Exposer keeps only a weak_ptr,
// so keep the returned pointer for as long as it should be scraped, and call
// the Exposer's RemoveCollectable (which waits for a scrape in progress)
// before `metrics` goes. Errors: kInvalidArgument for null metrics or a bad
// label.
Result<std::shared_ptr<::prometheus::Collectable>> MakeCollectable(const CounterMetrics* metrics,
                                                                   const Labels& labels = {});

// An HTTP endpoint serving `metrics` at options.path. `metrics` is not owned
// and must outlive the Exporter. The destructor stops the server: it blocks
// until the HTTP threads have ended.
class Exporter {
 public:
  // Errors: kInvalidArgument (null metrics, a bad label, path or thread
  // count, an address without a numeric port), kUnavailable (the address
  // cannot be bound: port taken, unknown host, no permission).
  static Result<std::unique_ptr<Exporter>> Start(const CounterMetrics* metrics, ExporterOptions options);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // The port listened on (the one picked when the options said 0).
  uint16_t port() const;

 private:
  struct Impl;
  explicit Exporter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tiercache::prometheus

#endif  // TIERCACHE_PROMETHEUS_H_
